"""The report: the ratio and target tables (Markdown, on stdout), results.json and the plot."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "PACKAGES",
    "environment",
    "format_tables",
    "load_results",
    "main",
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
_WORSE = "#d9822b"
# Sized for the docs page: the PNG is drawn 9 inches wide at 160 dpi (1,440 px) and shown about
# half that wide, so 12-point text reads like the page's own.
_WIDTH_IN = 9.0
_DPI = 160
_TEXT = 12
_SMALL = 11


def _colour(name: str) -> str:
    return _OURS if name.startswith("ours") else _PEER


# Every bar panel spans this many decades, so that the same difference in length is the same
# ratio in every panel: a 10% gap looks like 10%, a 1,000x gap like 1,000x.
_DECADES = 5


def _bars(ax: Any, figures: dict[str, Any], metric: str, title: str, unit: str) -> None:
    """Horizontal bars of one metric on a log axis of `_DECADES` decades, names above the bars."""
    names = [name for name in figures if metric in figures[name]]
    values = [figures[name][metric]["median"] for name in names]
    rows = range(len(names))
    ax.barh(rows, values, color=[_colour(n) for n in names], height=0.45, align="edge")
    low = 10 ** math.floor(math.log10(min(values) / 2))
    ax.set_xscale("log")
    ax.set_xlim(low, low * 10**_DECADES)
    ax.set_ylim(len(names) - 0.3, -0.45)
    ax.set_yticks([])
    for row, (name, value) in enumerate(zip(names, values, strict=True)):
        ax.text(low * 1.15, row - 0.03, name, va="bottom", fontsize=_SMALL)
        ax.text(value * 1.2, row + 0.225, _number(value), va="center", fontsize=_SMALL)
    ax.set_title(title, fontsize=_TEXT, loc="left")
    ax.set_xlabel(unit + ", log scale", fontsize=_SMALL)
    ax.tick_params(axis="x", labelsize=_SMALL)
    ax.grid(axis="x", which="major", alpha=0.3)


def _empty(ax: Any, title: str, why: str) -> None:
    ax.set_title(title, fontsize=_TEXT, loc="left")
    ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=_SMALL, wrap=True)
    ax.set_axis_off()


_SHORT = {
    ("warm", "calls_per_s"): "Warm hits",
    ("cold", "ids_per_s"): "Cold bulk",
    ("cold", "cpu_us_per_id"): "Cold bulk CPU",
    ("burst", "upstream_requests"): "Burst requests",
    ("burst", "wall_s"): "Burst time",
    ("sqlite", "calls_per_s"): "SQLite warm reads",
    ("sqlite", "seconds"): "SQLite 500 misses written",
}
"""Short names for the summary's rows, by scenario and metric."""


def _advantages(scenarios: dict[str, dict[str, Any]]) -> list[tuple[str, float]]:
    """Each comparison with another client as "times better for ours", whichever way is better.

    A ratio where lower is better (seconds, requests) is inverted, so every bar reads the same
    way: right of 1 ours is ahead, left of it behind. Comparisons of ours with itself (scale)
    or with a function that does less (prompt parsing) are left out.
    """
    rows = []
    for key, scenario in scenarios.items():
        if "error" in scenario or "skipped" in scenario:
            continue
        title = scenario.get("title", key)
        for ratio in scenario.get("ratios", []):
            label: str = ratio["label"]
            if "ours / " not in label or not ratio["ratio"] or key == "prompt_parsing":
                continue
            peer = label.split("ours / ", 1)[1]
            what = _SHORT.get((key, ratio["metric"]), title)
            value = ratio["ratio"] if ratio["higher_is_better"] else 1 / ratio["ratio"]
            rows.append((f"{what} vs {peer}", value))
    return rows


def _summary(ax: Any, rows: list[tuple[str, float]]) -> None:
    places = range(len(rows))
    values = [value for _, value in rows]
    colours = [_OURS if value >= 1 else _WORSE for value in values]
    # Bars grow from 1x, right when ours is ahead, left when behind.
    ax.barh(places, [v - 1 for v in values], left=1, color=colours, height=0.6)
    ax.set_yticks(places, [label for label, _ in rows], fontsize=_SMALL)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(min(0.3, min(values) / 2), max(values) * 40)
    ax.axvline(1, color="black", linewidth=1)
    for place, value in zip(places, values, strict=True):
        text = f"{_ratio(value)} better" if value >= 1.005 else f"{_ratio(value)}"
        if 0.995 <= value < 1.005:
            text += " (even)"
        if value < 1:
            text += " (behind)"
        ax.text(max(value, 1) * 1.15, place, text, va="center", fontsize=_SMALL)
    ax.tick_params(axis="x", labelsize=_SMALL)
    ax.grid(axis="x", which="major", alpha=0.3)


def _scale(ax: Any, scale: dict[str, Any]) -> None:
    steps = sorted(scale["steps"].values(), key=lambda s: s["count"])
    counts = [s["count"] for s in steps]
    ax.plot(counts, [s["cpu_us_per_id"] for s in steps], "o-", color=_OURS, label="CPU µs/id")
    ax.plot(counts, [s["us_per_id"] for s in steps], "o:", color=_OURS, label="wall µs/id")
    ax.set_xscale("log")
    ax.set_xticks(counts, [f"{n:,} ids" for n in counts], fontsize=_SMALL)
    ax.minorticks_off()
    ax.tick_params(axis="y", labelsize=_SMALL)
    ax.set_ylabel("µs per id (client)", color=_OURS, fontsize=_SMALL)
    ax.set_ylim(0, max(s["us_per_id"] for s in steps) * 1.3)
    memory_ax = ax.twinx()
    memory_ax.plot(
        counts,
        [s["rss_growth_kib"] / 1024 for s in steps],
        "s--",
        color="#d62728",
        label="peak RSS growth, MiB",
    )
    memory_ax.set_ylabel("peak RSS growth, MiB", color="#d62728", fontsize=_SMALL)
    memory_ax.tick_params(axis="y", labelsize=_SMALL)
    memory_ax.set_ylim(0, max(s["rss_growth_kib"] for s in steps) / 1024 * 1.6 or 1)
    lines = ax.get_lines() + memory_ax.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="lower right", fontsize=_SMALL)
    ax.set_title(
        "Scale: iter_images, time and memory per id (linear scales from 0)",
        fontsize=_TEXT,
        loc="left",
    )


def plot(results: dict[str, Any], path: Path) -> bool:
    """Draw the figures of every scenario into one PNG; False when matplotlib is missing.

    The top panel puts every comparison with a peer on one log scale; below it, each scenario's
    medians as horizontal bars, all on log scales (a bar's length difference is the same
    ratio in every panel), and the scale scenario on linear axes from 0.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios: dict[str, dict[str, Any]] = results["scenarios"]

    def usable(key: str) -> dict[str, Any] | None:
        scenario = scenarios.get(key)
        if scenario is None or "error" in scenario or "skipped" in scenario:
            return None
        return scenario

    advantages = _advantages(scenarios)
    summary_height = 1.0 + 0.32 * len(advantages)
    heights = [2.6, 3.1, 2.6, 3.0]
    fig = plt.figure(figsize=(_WIDTH_IN, summary_height + sum(heights) + 1.0), layout="constrained")
    # Two subfigures, so that the summary's long row names do not push the panels below aside.
    top, bottom = fig.subfigures(2, 1, height_ratios=[summary_height, sum(heights)])
    summary_ax = top.subplots()
    grid = bottom.add_gridspec(4, 2, height_ratios=heights)
    warm_ax, cold_ax = bottom.add_subplot(grid[0, 0]), bottom.add_subplot(grid[0, 1])
    burst_req_ax, burst_time_ax = bottom.add_subplot(grid[1, 0]), bottom.add_subplot(grid[1, 1])
    sqlite_ax, prompt_ax = bottom.add_subplot(grid[2, 0]), bottom.add_subplot(grid[2, 1])
    scale_ax = bottom.add_subplot(grid[3, :])

    if advantages:
        _summary(summary_ax, advantages)
        top.suptitle(
            "Ours against each peer: how many times better (log scale; 1x = even)",
            fontsize=_TEXT + 1,
            fontweight="bold",
        )
    else:
        _empty(summary_ax, "Ours against each peer", "no comparison ran")
    if warm := usable("warm"):
        _bars(warm_ax, warm["figures"], "calls_per_s", "Warm hits (higher is better)", "calls/s")
    else:
        _empty(warm_ax, "Warm hits", "not run")
    if cold := usable("cold"):
        _bars(cold_ax, cold["figures"], "ids_per_s", "Cold bulk (higher is better)", "ids/s")
    else:
        _empty(cold_ax, "Cold bulk", "not run")
    if burst := usable("burst"):
        title = "Burst: requests sent (fewer is better)"
        _bars(burst_req_ax, burst["figures"], "upstream_requests", title, "requests")
        title = "Burst: wall time (lower is better)"
        _bars(burst_time_ax, burst["figures"], "wall_s", title, "seconds")
    else:
        _empty(burst_req_ax, "Burst", "not run")
        _empty(burst_time_ax, "Burst", "not run")
    if sqlite := usable("sqlite"):
        title = "SQLite cache (higher is better)"
        _bars(sqlite_ax, sqlite["figures"], "calls_per_s", title, "calls/s")
    else:
        _empty(sqlite_ax, "SQLite cache", "not run")
    prompt = scenarios.get("prompt_parsing")
    if prompt and "figures" in prompt:
        title = "Prompt parsing (lower is better)"
        _bars(prompt_ax, prompt["figures"], "us_per_text", title, "µs per text")
    else:
        why = (prompt or {}).get("skipped") or (prompt or {}).get("error") or "not run"
        _empty(prompt_ax, "Prompt parsing", f"skipped: {why}")
    if scale := usable("scale"):
        _scale(scale_ax, scale)
    else:
        _empty(scale_ax, "Scale", "not run")
    machine = results.get("machine", {})
    versions = results.get("versions", {})
    fig.suptitle(
        f"meigen_async benchmarks, {results.get('generated_at', '?')[:10]}: "
        f"{machine.get('cpu_count', '?')} CPUs, Python {versions.get('python', '?')}, "
        f"aiohttp {versions.get('aiohttp', '?')}\nours in blue, peers in grey; medians",
        fontsize=_TEXT + 2,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.report RESULTS_JSON [-o PNG]`: redraw the plot, benchmarks not rerun.

    The PNG goes next to the JSON as `results.png` unless `-o` says where; the tables are
    printed on stdout as `python -m benchmarks` prints them.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Redraw results.png (and print the tables) from an existing results.json.",
    )
    parser.add_argument("results", type=Path, help="a results.json written by python -m benchmarks")
    parser.add_argument("-o", "--output", type=Path, help="the PNG to write (default: beside it)")
    args = parser.parse_args(argv)
    results = load_results(args.results)
    if results is None:
        parser.error(f"cannot read {args.results} as JSON")
    output = args.output or args.results.with_name("results.png")
    if not plot(results, output):
        print("matplotlib is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 1
    print(format_tables(results))
    print(f"\nwrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
