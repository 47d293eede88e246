"""Scenario: dataset exports (`GallerySession.export`) against `download` of the same pictures.

The media server of the media scenario runs in its own process on 127.0.0.1, serving the same
PNG-headed file of ``size`` bytes at ``/media/{n}``. Both sides get the same ``files`` distinct
pictures, as `GalleryImage` objects (no gallery requests), with the session's defaults (8
media requests in flight to the host) into a fresh directory each round:

- "download": `iter_media(images, out)`, what `meigen-async download` and `bulk --media` do:
  every file checked, written to a temporary name, fsynced and renamed with its record.
- ours, once a format: `export(images, out, format=..., shard_size=100)`, which downloads
  through that same path into its staging directory, writes each picture into its shard as
  it comes (tar, Parquet, or hard links for imagefolder), commits each shard (fsync, renames,
  status table, stats), and removes what it staged.

The issue's target: an export's throughput at least 0.9x of download's for the same pictures.
Memory: the peak traced by tracemalloc while a webdataset export of N and then 4N small
pictures runs (shards of 250): flat means the peak does not grow with N.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from meigen_async import GalleryImage, GallerySession

from .common import Config, Metrics, alternate, log, perf_counter, ratio_entry, summarise
from .common import target_entry as target
from .media import _images, _origins, _settle, _start_server

__all__ = ["run"]

FORMATS = ("webdataset", "parquet", "imagefolder")


async def _download(url: str, images: list[GalleryImage], out: Path) -> int:
    total = 0
    async with GallerySession(url, media_hosts=_origins(images)) as session:
        async for result in session.iter_media(images, out):
            if result.error is not None:
                raise result.error
            total += sum(media.bytes for media in result.files)
    return total


# Shards of 100: an export of a few thousand posts has dozens of shards, and writing one
# overlaps the downloads of the next; one shard of every picture would be written at the end.
_SHARD = 100


async def _export(
    url: str, images: list[GalleryImage], out: Path, fmt: str, shard_size: int = _SHARD
) -> int:
    async with GallerySession(url, media_hosts=_origins(images)) as session:
        summary = await session.export(images, out, format=fmt, shard_size=shard_size)  # type: ignore[arg-type]
    if summary.counts["success"] != len(images):
        raise RuntimeError(f"the export wrote {summary.counts}")
    return summary.bytes


def _metrics(total: int, files: int, elapsed: float, cpu: float) -> Metrics:
    # CPU: the client process's own (every thread of it); the media server is another process.
    return {
        "mb_per_s": total / elapsed / 1e6,
        "files_per_s": files / elapsed,
        "cpu_ms_per_file": cpu / files * 1e3,
    }


async def run(url: str, config: Config) -> dict[str, Any]:
    files, size, rounds = (200, 256 * 1024, 3) if config.quick else (400, 256 * 1024, 7)
    memory_small = 500 if config.quick else 1000
    server, base = await _start_server()
    scratch = Path(tempfile.mkdtemp(prefix="meigen-export-bench-"))
    try:
        images = _images(base, files, size, "e")

        def timed_download(name: str) -> Any:
            async def go() -> Metrics:
                out = scratch / f"download-{name}"
                await _settle(out)
                start, cpu = perf_counter(), time.process_time()
                total = await _download(url, images, out)
                return _metrics(total, files, perf_counter() - start, time.process_time() - cpu)

            return go

        def timed_export(fmt: str) -> Any:
            async def go() -> Metrics:
                out = scratch / f"export-{fmt}"
                await _settle(out)
                start, cpu = perf_counter(), time.process_time()
                total = await _export(url, images, out, fmt)
                return _metrics(total, files, perf_counter() - start, time.process_time() - cpu)

            return go

        # Untimed, each side once: the first export of a process imports pyarrow and fills
        # Arrow's memory pool, the first download warms the session's code; neither is the
        # throughput of either, and it fell on whichever pair ran first.
        warm = _images(base, 20, size, "warm")
        await _download(url, warm, scratch / "warm-download")
        for fmt in FORMATS:
            await _export(url, warm, scratch / f"warm-{fmt}", fmt)
        log(f"export: {files} pictures of {size // 1024} KiB, {rounds} rounds, vs download")
        alt = await alternate(
            {fmt: timed_export(fmt) for fmt in FORMATS},
            {fmt: timed_download(fmt) for fmt in FORMATS},
            rounds,
            label="export",
        )

        peaks: dict[str, float] = {}
        warm_up = scratch / "warm-up"
        await _export(url, _images(base, 200, 4096, "w"), warm_up, "webdataset", 250)
        shutil.rmtree(warm_up, ignore_errors=True)
        for count in (memory_small, 4 * memory_small):
            best = float("inf")
            for attempt in range(2):
                out = scratch / f"memory{count}-{attempt}"
                small = _images(base, count, 4096, f"m{count}_{attempt}_")
                tracemalloc.start()
                await _export(url, small, out, "webdataset", 250)
                best = min(best, tracemalloc.get_traced_memory()[1] / 2**20)
                tracemalloc.stop()
                shutil.rmtree(out, ignore_errors=True)
            peaks[f"{count} pictures"] = best
            log(f"  export memory: {count} pictures, lowest traced peak {best:.2f} MiB")
    finally:
        server.terminate()
        await server.wait()
        shutil.rmtree(scratch, ignore_errors=True)

    figures: dict[str, Any] = {}
    for fmt in FORMATS:
        figures[f"export {fmt}"] = summarise(alt.ours[fmt])
        figures[f"download (paired with {fmt})"] = summarise(alt.peers[fmt])
    # Per format, MB/s (the target), then the client's CPU per picture: what an extra
    # pass over each picture costs shows there even where MB/s is limited by something else.
    kinds = [
        (
            "mb_per_s",
            "",
            "MB/s",
            True,
            ">= 0.9x",
            "export throughput vs download of the same pictures",
        ),
        (
            "cpu_ms_per_file",
            ", CPU per picture",
            "ms",
            False,
            "<= 1.1x",
            "client CPU per picture vs download's",
        ),
    ]
    rows = []
    targets = []
    for metric, suffix, unit, higher, goal, described in kinds:
        for fmt in FORMATS:
            row = ratio_entry(
                label=f"export {fmt} / download{suffix}",
                metric=metric,
                unit=unit,
                higher_is_better=higher,
                ours=figures[f"export {fmt}"][metric]["median"],
                peer=figures[f"download (paired with {fmt})"][metric]["median"],
                pair_ratios=alt.pair_ratios[fmt][metric],
            )
            rows.append(row)
            met = row["ratio"] >= 0.9 if higher else row["ratio"] <= 1.1
            targets.append(
                target(f"{row['label']}: {described}", value=row["ratio"], goal=goal, met=met)
            )
    small_peak, large_peak = peaks.values()
    growth = large_peak / small_peak if small_peak else float("inf")
    targets.append(
        target(
            f"lowest traced memory peak, {4 * memory_small} pictures / {memory_small} pictures",
            value=growth,
            goal="<= 1.5x (flat)",
            met=growth <= 1.5,
        )
    )
    return {
        "title": "Dataset exports",
        "measures": (
            "MB/s and client CPU per picture of exporting distinct pictures vs downloading "
            "them; memory vs pictures"
        ),
        "params": {"files": files, "size": size, "rounds": rounds},
        "figures": figures,
        "memory_peak_mib": peaks,
        "ratios": rows,
        "targets": targets,
    }
