"""Scenario 4, scale: ``iter_images`` over 10x more distinct ids at each step.

Every run happens in a fresh child process (``python -m benchmarks.scale --child ...``), so one
step's heap cannot flatter or burden the next, against the generated gallery running in its own
process (nothing per id is stored on either side, except our bounded cache). The ids come from
a generator, consumed lazily.

Each timed pass (no tracemalloc, which slows this loop about 2.5x) records:

- time per id: the client process's CPU time (``time.process_time``) over the loop -- what
  "time per id within 10%" is judged on, as it barely moves with the background load of a
  shared 2-core machine -- and the wall time, overall and per tenth of the run;
- memory: the process's peak RSS during the loop (``VmHWM``, reset just before the loop
  through ``/proc/self/clear_refs``) less its RSS just before the loop -- what "memory flat"
  is judged on -- and, as a cross-check on the Python heap, the peak of
  ``sys.getallocatedblocks()`` sampled every 256 ids, less its value before.

With ``--tracemalloc`` (``Config.scale_tracemalloc``) every step also gets a separate pass
with ``tracemalloc`` started just before the loop, reporting its peak; its time is not used.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

from meigen_async import GallerySession

from .common import Config, log, perf_counter, ratio_entry
from .common import target_entry as target
from .server import image_id

__all__ = ["child", "run"]

_OFFSET = 10_000_000
_SEGMENTS = 10
_SAMPLE_EVERY = 256
_RSS_SLACK_KIB = 1024.0


def _ids(count: int) -> Iterator[str]:
    return (image_id(_OFFSET + n) for n in range(count))


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> bool:
    # Writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS (Linux >= 4.0).
    # ru_maxrss cannot be used: Linux carries it across exec, from the forked parent.
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


async def child(url: str, count: int, cache_size: int, memory: bool) -> dict[str, Any]:
    """One pass over ``count`` ids in this process; ``memory`` turns tracemalloc on."""
    errors = 0
    seen = 0
    marks: list[float] = []
    every = max(count // _SEGMENTS, 1)
    async with GallerySession(url, cache_size=cache_size) as session:
        gc.collect()
        rss_before = _status_kib("VmRSS")
        peak_reset = _reset_peak_rss()
        blocks_before = blocks_peak = sys.getallocatedblocks()
        if memory:
            tracemalloc.start()
        cpu_start = time.process_time()
        start = perf_counter()
        async for result in session.iter_images(_ids(count)):
            seen += 1
            if not result.ok:
                errors += 1
            if seen % _SAMPLE_EVERY == 0:
                blocks_peak = max(blocks_peak, sys.getallocatedblocks())
            if seen % every == 0:
                marks.append(perf_counter())
        elapsed = perf_counter() - start
        cpu = time.process_time() - cpu_start
        peak = tracemalloc.get_traced_memory()[1] if memory else 0
        if memory:
            tracemalloc.stop()
        peak_rss = _status_kib("VmHWM")
        stats = session.stats
    segments = [b - a for a, b in zip([start, *marks], marks, strict=False)]
    return {
        "count": count,
        "seen": seen,
        "errors": errors,
        "requests": stats.requests,
        "elapsed_s": elapsed,
        "us_per_id": elapsed / max(seen, 1) * 1e6,
        "cpu_us_per_id": cpu / max(seen, 1) * 1e6,
        "segment_us_per_id": [s / every * 1e6 for s in segments],
        "rss_before_kib": rss_before,
        "peak_rss_kib": peak_rss,
        "peak_reset": peak_reset,
        "rss_growth_kib": peak_rss - rss_before,
        "blocks_growth": blocks_peak - blocks_before,
        "tracemalloc_peak_kib": peak / 1024 if memory else None,
    }


def _spawn(url: str, count: int, cache_size: int, memory: bool) -> dict[str, Any]:
    args = [sys.executable, "-m", "benchmarks.scale", "--child", url, str(count), str(cache_size)]
    if memory:
        args.append("--memory")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(args, capture_output=True, text=True, check=False, cwd=root)
    if done.returncode != 0:
        raise RuntimeError(f"scale child failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def run(url: str, config: Config) -> dict[str, Any]:
    steps = list(config.scale_steps)
    runs = dict(zip(steps, config.scale_runs, strict=True))
    cache_size = config.scale_cache_size
    log(
        f"scale: iter_images over {', '.join(f'{n:,}' for n in steps)} ids, "
        f"cache_size {cache_size}, runs {list(runs.values())}, a child process per run"
    )
    timed: dict[int, list[dict[str, Any]]] = {count: [] for count in steps}
    # Round-robin over the steps, so that each step's runs are spread over the whole scenario
    # and a stretch of background load does not land on one step alone.
    for round_no in range(max(runs.values())):
        for count in steps:
            if round_no >= runs[count]:
                continue
            one = await asyncio.to_thread(_spawn, url, count, cache_size, False)
            _check(one)
            timed[count].append(one)
            log(
                f"  scale {count:,} run {round_no + 1}/{runs[count]}: "
                f"{one['us_per_id']:.0f} us/id wall, {one['cpu_us_per_id']:.0f} us/id CPU, "
                f"peak RSS +{one['rss_growth_kib']:,} KiB, "
                f"+{one['blocks_growth']:,} allocated blocks"
            )
    per_step: dict[str, dict[str, Any]] = {}
    for count in steps:
        done = timed[count]
        step: dict[str, Any] = {
            "count": count,
            "runs": runs[count],
            "cpu_us_per_id": statistics.median(r["cpu_us_per_id"] for r in done),
            "cpu_us_per_id_runs": [r["cpu_us_per_id"] for r in done],
            "us_per_id": statistics.median(r["us_per_id"] for r in done),
            "us_per_id_runs": [r["us_per_id"] for r in done],
            "segment_us_per_id_runs": [r["segment_us_per_id"] for r in done],
            "rss_growth_kib": statistics.median(r["rss_growth_kib"] for r in done),
            "rss_growth_kib_runs": [r["rss_growth_kib"] for r in done],
            "blocks_growth": statistics.median(r["blocks_growth"] for r in done),
            "blocks_growth_runs": [r["blocks_growth"] for r in done],
            "requests": done[0]["requests"],
        }
        if config.scale_tracemalloc:
            traced = await asyncio.to_thread(_spawn, url, count, cache_size, True)
            _check(traced)
            step["tracemalloc_peak_kib"] = traced["tracemalloc_peak_kib"]
            log(f"  scale {count:,} tracemalloc peak {traced['tracemalloc_peak_kib']:,.0f} KiB")
        per_step[str(count)] = step

    ratios: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    if len(steps) >= 2:
        small, large = per_step[str(steps[-2])], per_step[str(steps[-1])]
        label = f"{steps[-1]:,} vs {steps[-2]:,} ids"

        def row(name: str, metric: str, unit: str) -> dict[str, Any]:
            return ratio_entry(
                label=f"scale: {name}, {label}",
                metric=metric,
                unit=unit,
                higher_is_better=False,
                ours=large[metric],
                peer=small[metric],
            )

        cpu_row = row("client CPU time per id", "cpu_us_per_id", "us/id")
        wall_row = row("wall time per id", "us_per_id", "us/id")
        mem_row = row("peak RSS growth", "rss_growth_kib", "KiB")
        ratios = [cpu_row, wall_row, mem_row]
        extra_kib = large["rss_growth_kib"] - small["rss_growth_kib"]
        bytes_per_extra_id = extra_kib * 1024 / (steps[-1] - steps[-2])
        # Flat: no more than 10% (or 1 MiB, RSS moves in pages and arenas) above the smaller
        # step's growth; 1 MiB over 180k extra ids is under 6 bytes per id.
        allowance = max(0.10 * small["rss_growth_kib"], _RSS_SLACK_KIB)
        targets = [
            target(
                f"scale memory flat {steps[-2]:,} -> {steps[-1]:,} ids (peak RSS growth)",
                value=f"{small['rss_growth_kib']:,.0f} -> {large['rss_growth_kib']:,.0f} KiB "
                f"({bytes_per_extra_id:+.1f} B per extra id)",
                goal=f"growth <= +{allowance:,.0f} KiB (max of 10% and 1 MiB)",
                met=extra_kib <= allowance,
            ),
            target(
                f"scale time per id within 10% {steps[-2]:,} -> {steps[-1]:,} ids (client CPU)",
                value=cpu_row["ratio"],
                goal="0.90x .. 1.10x",
                met=0.9 <= cpu_row["ratio"] <= 1.10,
            ),
        ]
    return {
        "title": "Scale",
        "measures": "iter_images over 10x more distinct ids per step: time per id, memory growth",
        "params": {
            "steps": steps,
            "runs_per_step": list(runs.values()),
            "cache_size": cache_size,
            "time": "median over the runs of the client process's CPU seconds / ids (judged) "
            "and of wall seconds / ids (reported)",
            "memory": "peak RSS during the loop (VmHWM, reset before it) less the RSS just "
            "before it (median of runs); sys.getallocatedblocks() peak growth as a cross-check",
            "tracemalloc_pass": config.scale_tracemalloc,
        },
        "steps": per_step,
        "ratios": ratios,
        "targets": targets,
    }


def _check(result: dict[str, Any]) -> None:
    if result["errors"] or result["seen"] != result["count"]:
        raise RuntimeError(f"scale run had {result['errors']} errors, saw {result['seen']}")


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.scale --child URL COUNT CACHE_SIZE [--memory]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    parser.add_argument("--child", nargs=3, metavar=("URL", "COUNT", "CACHE_SIZE"), required=True)
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args(argv)
    url, count, cache_size = args.child[0], int(args.child[1]), int(args.child[2])
    if not url.startswith("http://127.0.0.1:"):
        raise SystemExit("the scale child only talks to 127.0.0.1")
    print(json.dumps(asyncio.run(child(url, count, cache_size, args.memory))))


if __name__ == "__main__":
    main()
