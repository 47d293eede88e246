"""The report: the ratio and target tables (Markdown, on stdout), results.json and the plot."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import textwrap
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "PACKAGES",
    "environment",
    "format_tables",
    "load_results",
    "plot",
    "write_json",
]

PACKAGES = (
    "meigen-async",
    "aiohttp",
    "cachetools",
    "aiohttp-client-cache",
    "hishel",
    "httpx",
    "httpcore",
    "anysqlite",
    "matplotlib",
)
"""Whose versions go into results.json."""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, where the OS reports them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment() -> dict[str, Any]:
    """The machine and the versions of everything measured."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "usable_cpus": affinity,
            "memory_gib": round(m, 1) if (m := _memory_gib()) else None,
            "python_implementation": platform.python_implementation(),
            "python_executable": sys.executable,
        },
        "versions": versions,
    }


# -- Tables --------------------------------------------------------------------------------------


def _number(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:,.1f}"
    if magnitude >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def _ratio(value: float) -> str:
    if math.isinf(value):
        return "inf"
    if value >= 100:
        return f"{value:,.0f}x"
    if value >= 10:
        return f"{value:.1f}x"
    return f"{value:.3g}x"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def format_tables(results: dict[str, Any]) -> str:
    """The ratio table and the target table, as Markdown."""
    rows = []
    targets = []
    for key, scenario in results["scenarios"].items():
        title = scenario.get("title", key)
        if "error" in scenario:
            rows.append(
                [title, "failed: " + scenario["error"].splitlines()[-1], "", "", "", "", ""]
            )
            continue
        if "skipped" in scenario:
            rows.append([title, "skipped: " + scenario["skipped"], "", "", "", "", ""])
            continue
        for row in scenario.get("ratios", []):
            rows.append(
                [
                    title,
                    row["label"],
                    row["unit"],
                    _number(row["ours"]),
                    _number(row["peer"]),
                    _ratio(row["ratio"]),
                    "higher" if row["higher_is_better"] else "lower",
                ]
            )
        for goal in scenario.get("targets", []):
            value = goal["value"]
            targets.append(
                [
                    goal["description"],
                    value if isinstance(value, str) else _ratio(value),
                    goal["goal"],
                    "met" if goal["met"] else "NOT met",
                ]
            )
    header = ["Scenario", "Comparison", "Unit", "Ours", "Peer", "Ratio", "Better"]
    out = [_markdown(header, rows)]
    if targets:
        out.append(_markdown(["Target", "Measured", "Goal", "Result"], targets))
    return "\n\n".join(out)


# -- JSON ----------------------------------------------------------------------------------------


def load_results(path: Path) -> dict[str, Any] | None:
    """A previous results.json, or None."""
    try:
        with path.open(encoding="utf-8") as stored:
            data: dict[str, Any] = json.load(stored)
            return data
    except (OSError, ValueError):
        return None


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write ``results`` (floats rounded to 6 significant digits) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_rounded(results), indent=2) + "\n", encoding="utf-8")


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(item) for item in value]
    return value


# -- Plot ----------------------------------------------------------------------------------------

_OURS = "#1f77b4"
_PEER = "#9aa5b1"


def _colour(name: str) -> str:
    return _OURS if name.startswith("ours") else _PEER


def _bars(ax: Any, figures: dict[str, Any], metric: str, title: str, *, log: bool) -> None:
    names = [name for name in figures if metric in figures[name]]
    values = [figures[name][metric]["median"] for name in names]
    bars = ax.bar(range(len(names)), values, color=[_colour(n) for n in names])
    labels = [
        "\n".join(textwrap.fill(part, 16) for part in n.replace(" (", "\n(").split("\n"))
        for n in names
    ]
    ax.set_xticks(range(len(names)), labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    if log:
        ax.set_yscale("log")
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(
            _number(value),
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.margins(y=0.15)


def _empty(ax: Any, title: str, why: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=8, wrap=True)
    ax.set_axis_off()


def plot(results: dict[str, Any], path: Path) -> bool:
    """Draw the figures of every scenario into one PNG; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios: dict[str, dict[str, Any]] = results["scenarios"]
    fig, axes = plt.subplots(2, 3, figsize=(14, 8.5))
    (warm_ax, cold_ax, burst_req_ax), (burst_time_ax, scale_ax, prompt_ax) = axes

    def usable(key: str) -> dict[str, Any] | None:
        scenario = scenarios.get(key)
        if scenario is None or "error" in scenario or "skipped" in scenario:
            return None
        return scenario

    if warm := usable("warm"):
        _bars(warm_ax, warm["figures"], "calls_per_s", "Warm hits: calls/s (log)", log=True)
    else:
        _empty(warm_ax, "Warm hits", "not run")
    if cold := usable("cold"):
        _bars(cold_ax, cold["figures"], "ids_per_s", "Cold bulk: ids/s", log=False)
    else:
        _empty(cold_ax, "Cold bulk", "not run")
    if burst := usable("burst"):
        _bars(
            burst_req_ax,
            burst["figures"],
            "upstream_requests",
            "Burst: upstream requests (log)",
            log=True,
        )
        _bars(burst_time_ax, burst["figures"], "wall_s", "Burst: wall time, s", log=False)
    else:
        _empty(burst_req_ax, "Burst", "not run")
        _empty(burst_time_ax, "Burst", "not run")
    if scale := usable("scale"):
        steps = sorted(scale["steps"].values(), key=lambda s: s["count"])
        counts = [s["count"] for s in steps]
        scale_ax.plot(
            counts, [s["cpu_us_per_id"] for s in steps], "o-", color=_OURS, label="CPU us/id"
        )
        scale_ax.plot(
            counts, [s["us_per_id"] for s in steps], "o:", color=_OURS, label="wall us/id"
        )
        scale_ax.legend(loc="lower left", fontsize=7)
        scale_ax.set_xscale("log")
        scale_ax.set_xticks(counts, [f"{n:,}" for n in counts], fontsize=7)
        scale_ax.minorticks_off()
        scale_ax.set_xlabel("ids", fontsize=8)
        scale_ax.set_ylabel("us per id (client)", color=_OURS, fontsize=8)
        scale_ax.set_ylim(bottom=0)
        memory_ax = scale_ax.twinx()
        memory_ax.plot(counts, [s["rss_growth_kib"] / 1024 for s in steps], "s--", color="#d62728")
        memory_ax.set_ylabel("peak RSS growth, MiB", color="#d62728", fontsize=8)
        memory_ax.set_ylim(0, max(s["rss_growth_kib"] for s in steps) / 1024 * 1.4 or 1)
        scale_ax.set_title("Scale: iter_images, per id time and memory", fontsize=9)
    else:
        _empty(scale_ax, "Scale", "not run")
    prompt = scenarios.get("prompt_parsing")
    if prompt and "figures" in prompt:
        title = "Prompt parsing: us per text (log)"
        _bars(prompt_ax, prompt["figures"], "us_per_text", title, log=True)
    else:
        why = (prompt or {}).get("skipped") or (prompt or {}).get("error") or "not run"
        _empty(prompt_ax, "Prompt parsing", f"skipped: {why}")
    machine = results.get("machine", {})
    versions = results.get("versions", {})
    fig.suptitle(
        f"meigen_async benchmarks - {machine.get('cpu_count', '?')} CPUs, "
        f"Python {versions.get('python', '?')}, aiohttp {versions.get('aiohttp', '?')} "
        "(ours in blue; medians)",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
