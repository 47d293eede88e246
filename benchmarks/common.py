"""What the scenarios share: sizes, alternating peers with ours, and summarising samples."""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Alternation",
    "Config",
    "Metrics",
    "Runner",
    "alternate",
    "log",
    "perf_counter",
    "process_time",
    "ratio_entry",
    "summarise",
    "target_entry",
]

Metrics = dict[str, float]
"""One run's figures, by metric name (``calls_per_s``, ``wall_s``, ...)."""

Runner = Callable[[], Awaitable[Metrics]]
"""One fresh run of one client."""


@dataclass(frozen=True)
class Config:
    """Sizes for one suite run; :meth:`quick` is the smoke-test variant."""

    quick: bool = False
    # Scenario 1: warm hits.
    warm_ids: int = 1000
    warm_budget_s: float = 1.0
    warm_min_calls: int = 100_000
    warm_rounds: int = 5
    # Scenario 2: cold bulk.
    cold_ids: int = 3000
    cold_concurrency: int = 16
    cold_rounds: int = 15
    # Scenario 3: burst.
    burst_calls: int = 5000
    burst_ids: int = 5
    burst_delay_ms: int = 20
    burst_rounds: int = 3
    # httpx's connection pool slows down quadratically with thousands of queued requests
    # (1,000 concurrent calls took over two minutes through hishel on 2 cores), so hishel's
    # pairs run this many calls.
    burst_hishel_calls: int = 250
    # Scenario 4: scale.
    scale_steps: tuple[int, ...] = (2_000, 20_000, 200_000)
    scale_cache_size: int = 1024
    scale_runs: tuple[int, ...] = (3, 4, 1)
    scale_tracemalloc: bool = False

    @classmethod
    def quick_config(cls) -> Config:
        """Small sizes: the whole suite in well under a minute."""
        return cls(
            quick=True,
            warm_budget_s=0.15,
            warm_min_calls=20_000,
            warm_rounds=1,
            cold_ids=500,
            cold_rounds=2,
            burst_calls=1000,
            burst_rounds=1,
            burst_hishel_calls=100,
            scale_steps=(500, 5_000),
            scale_runs=(1, 1),
        )


@dataclass
class Alternation:
    """The samples of an ABAB... run: an ours run right before each peer run, every round."""

    # Per peer: the ours runs paired with that peer's runs, and the peer's runs.
    ours: dict[str, list[Metrics]] = field(default_factory=dict)
    peers: dict[str, list[Metrics]] = field(default_factory=dict)
    # Per peer and metric: ours / peer for each adjacent (ours, peer) pair of runs.
    pair_ratios: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def all_ours(self) -> list[Metrics]:
        """Every ours run, whichever peer it was paired with."""
        return [sample for samples in self.ours.values() for sample in samples]


def log(message: str) -> None:
    """Progress, on stderr so that stdout stays the report."""
    print(message, file=sys.stderr, flush=True)


async def alternate(
    ours: Runner | Mapping[str, Runner],
    peers: Mapping[str, Runner],
    rounds: int,
    *,
    label: str = "",
) -> Alternation:
    """Run ours and each peer in pairs, ``rounds`` times, the peers' order rotating every round.

    The two runs of a pair follow each other, so they see the same background load, and
    the ratio of the pair is kept: its median is what the report shows. Who goes first in a
    pair alternates from round to round, so neither side always runs on a cache or a
    server the other has just warmed. ``ours`` may be given per peer, when a peer has to run
    a smaller workload than the others.
    """
    result = Alternation()
    names = list(peers)
    for name in names:
        result.ours[name], result.peers[name], result.pair_ratios[name] = [], [], {}
    for round_no in range(rounds):
        shift = round_no % max(len(names), 1)
        for name in names[shift:] + names[:shift]:
            run_ours = ours[name] if isinstance(ours, Mapping) else ours
            if round_no % 2 == 0:
                mine = await _collected(run_ours)
                theirs = await _collected(peers[name])
            else:
                theirs = await _collected(peers[name])
                mine = await _collected(run_ours)
            result.ours[name].append(mine)
            result.peers[name].append(theirs)
            for metric, value in mine.items():
                other = theirs.get(metric)
                if other:
                    result.pair_ratios[name].setdefault(metric, []).append(value / other)
            log(
                f"  {label} round {round_no + 1}/{rounds}: "
                f"ours {_brief(mine)} | {name} {_brief(theirs)}"
            )
    return result


async def _collected(run: Runner) -> Metrics:
    """``run`` after a full garbage collection, so that it pays for no earlier run's garbage."""
    gc.collect()
    return await run()


def _brief(metrics: Metrics) -> str:
    return ", ".join(f"{key}={value:,.4g}" for key, value in metrics.items())


def summarise(samples: Sequence[Metrics]) -> dict[str, dict[str, Any]]:
    """Per metric: every sample, the median, the min and the max."""
    out: dict[str, dict[str, Any]] = {}
    for metric in samples[0] if samples else ():
        values = [sample[metric] for sample in samples if metric in sample]
        out[metric] = {
            "samples": values,
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }
    return out


def ratio_entry(
    *,
    label: str,
    metric: str,
    unit: str,
    higher_is_better: bool,
    ours: float,
    peer: float,
    pair_ratios: Sequence[float] | None = None,
) -> dict[str, Any]:
    """One row of the ratio table: ours / peer, with the direction that is better.

    The ratio is the median of the per-pair ratios when there are pairs (robust to load
    drifting during the run), else the ratio of the two figures.
    """
    if pair_ratios:
        ratio = statistics.median(pair_ratios)
    elif peer:
        ratio = ours / peer
    else:
        ratio = float("inf")
    return {
        "label": label,
        "metric": metric,
        "unit": unit,
        "higher_is_better": higher_is_better,
        "ours": ours,
        "peer": peer,
        "ratio": ratio,
        "pair_ratios": list(pair_ratios or []),
    }


def target_entry(description: str, *, value: float | str, goal: str, met: bool) -> dict[str, Any]:
    """A target, the figure it was judged on and whether it was met."""
    return {"description": description, "value": value, "goal": goal, "met": met}


def process_time() -> float:
    """This process's CPU time, user and system, in seconds."""
    return time.process_time()


def perf_counter() -> float:
    """The clock every timing uses."""
    return time.perf_counter()
