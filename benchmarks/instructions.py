"""Instructions per cold id, under callgrind: ``python -m benchmarks.instructions [--ids N]``.

Wall time on a shared 2-core VM moves by 15% from run to run; an instruction count does not.
For each client (ours, the raw aiohttp loop) a process is run under ``valgrind
--tool=callgrind`` twice, fetching ``N`` cold ids and fetching none, with the garbage
collector off; the difference divided by ``N`` is the client's instructions per id. The count
leaves out the system calls, which both clients make alike, so its ratio understates the
wall-time one. Needs valgrind (Debian's package).

``--warm`` counts a warm hit instead: ours and the cachetools floor of the warm scenario, each
warmed with 1,000 ids and then awaiting ``N`` cached gets, less the same process awaiting none.

``--otel`` runs each client with the OpenTelemetry SDK installed (the test extra's): a tracer
provider exporting to memory and a meter provider with a reader attached, read at the end.
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


_WARM_IDS = 1000


async def _warm(url: str, count: int, *, floor: bool) -> None:
    from cachetools import TTLCache

    from meigen_async import GallerySession

    ids = [image_id(n) for n in range(_WARM_IDS)]
    async with GallerySession(url, cache_size=4096) as session:
        await session.get_images(ids)
        kept: TTLCache[str, Any] = TTLCache(4096, 3600)
        for each in ids:
            kept[each] = await session.get_image(each)

        async def cached(key: str) -> Any:
            return kept[key]

        get = cached if floor else session.get_image
        for n in range(count):
            await get(ids[n % _WARM_IDS])


def _install_otel() -> Any:
    """The OpenTelemetry SDK as an application installs it; the metric reader it attached."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


def _client(which: str, url: str, count: int) -> None:
    reader = _install_otel() if os.environ.get("MEIGEN_BENCH_OTEL") else None
    try:
        _run_client(which, url, count)
    finally:
        if reader is not None:
            reader.get_metrics_data()  # a collection, as the exporter's would


def _run_client(which: str, url: str, count: int) -> None:
    gc.disable()
    if which in ("warm", "floor"):
        asyncio.run(_warm(url, count, floor=which == "floor"))
        return
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
    """Print instructions per cold id (or warm hit) for ours and its peer, and their ratio."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--ids", type=int, default=None, help="ids (calls with --warm)")
    parser.add_argument("--warm", action="store_true", help="count a warm hit instead")
    parser.add_argument("--otel", action="store_true", help="with the OpenTelemetry SDK")
    parser.add_argument("--client", nargs=3, metavar=("WHICH", "URL", "COUNT"))
    args = parser.parse_args(argv)
    if args.client:
        which, url, count = args.client
        _client(which, url, int(count))
        return
    if args.otel:
        os.environ["MEIGEN_BENCH_OTEL"] = "1"  # read by each client process
    count = args.ids or (100_000 if args.warm else 1500)
    ours, peer = ("warm", "floor") if args.warm else ("ours", "raw")
    unit = "a warm hit" if args.warm else "an id"
    per_id: dict[str, float] = {}
    with ServerProcess() as server:
        for which in (ours, peer):
            full = _instructions(which, server.url, count)
            empty = _instructions(which, server.url, 0)
            per_id[which] = (full - empty) / count
            print(f"{which}: {per_id[which]:,.0f} instructions {unit}", flush=True)
    print(f"{peer} / {ours}: {per_id[peer] / per_id[ours]:.3f}")


if __name__ == "__main__":
    main()
