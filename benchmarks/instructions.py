"""Instructions per cold id, under callgrind: ``python -m benchmarks.instructions [--ids N]``.

Wall time on a shared 2-core VM moves by 15% from run to run; an instruction count does not.
For each client (ours, the raw aiohttp loop) a process is run under ``valgrind
--tool=callgrind`` twice, fetching ``N`` cold ids and fetching none, with the garbage
collector off; the difference divided by ``N`` is the client's instructions per id. The count
leaves out the system calls, which both clients make alike, so its ratio understates the
wall-time one. Needs valgrind (Debian's package).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

from .peers import image_url, raw_session
from .server import ServerProcess, image_id

__all__ = ["main"]

_TOTAL = re.compile(r"summary:\s+(\d+)")


async def _ours(url: str, ids: list[str]) -> None:
    from meigen_async import GallerySession

    async with GallerySession(url, concurrency=16, cache_size=max(4096, len(ids))) as session:
        await session.get_images(ids)


async def _raw(url: str, ids: list[str]) -> None:
    async with raw_session(limit=16) as http:
        slots = asyncio.Semaphore(16)

        async def one(key: str) -> Any:
            async with slots, http.get(image_url(url, key)) as resp:
                resp.raise_for_status()
                return await resp.json()

        await asyncio.gather(*(one(key) for key in ids))


def _client(which: str, url: str, count: int) -> None:
    gc.disable()
    ids = [image_id(100_000 + n) for n in range(count)]
    asyncio.run((_ours if which == "ours" else _raw)(url, ids))


def _instructions(which: str, url: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "benchmarks.instructions",
                "--client",
                which,
                url,
                str(count),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        with open(out) as report:
            match = _TOTAL.search(report.read())
    if match is None:
        raise RuntimeError("callgrind wrote no summary")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> None:
    """Print instructions per cold id for ours and the raw loop, and their ratio."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--ids", type=int, default=1500)
    parser.add_argument("--client", nargs=3, metavar=("WHICH", "URL", "COUNT"))
    args = parser.parse_args(argv)
    if args.client:
        which, url, count = args.client
        _client(which, url, int(count))
        return
    per_id: dict[str, float] = {}
    with ServerProcess() as server:
        for which in ("ours", "raw"):
            full = _instructions(which, server.url, args.ids)
            empty = _instructions(which, server.url, 0)
            per_id[which] = (full - empty) / args.ids
            print(f"{which}: {per_id[which]:,.0f} instructions an id", flush=True)
    print(f"raw / ours: {per_id['raw'] / per_id['ours']:.3f}")


if __name__ == "__main__":
    main()
