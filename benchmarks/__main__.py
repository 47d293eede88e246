"""``python -m benchmarks``: every scenario against one loopback server, then the report.

The generated-gallery server runs in its own process on 127.0.0.1 for the whole run; each
scenario alternates our client with its peers (ABAB...), and the report is printed as Markdown
tables (ratios and targets), written to ``results.json`` and drawn in ``results.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import burst, cold, export, freshness, media, report, scale, sqlite, warm
from .common import Config, log, ratio_entry, summarise
from .server import ServerProcess

SCENARIOS: dict[str, Callable[[str, Config], Awaitable[dict[str, Any]]]] = {
    "warm": warm.run,
    "cold": cold.run,
    "burst": burst.run,
    "scale": scale.run,
    "freshness": freshness.run,
    "sqlite": sqlite.run,
    "media": media.run,
    "export": export.run,
}
ALL = (*SCENARIOS, "prompt_parsing")

ROOT = Path(__file__).resolve().parent.parent
FULL_OUTPUT = ROOT / "docs" / "benchmarks"
QUICK_OUTPUT = ROOT / "build" / "benchmarks-quick"


def prompt_parsing() -> dict[str, Any]:
    """Scenario 5: ``benchmarks.prompt_parsing.run()`` when that module is there."""
    title = "Prompt parsing"
    if importlib.util.find_spec("benchmarks.prompt_parsing") is None:
        return {"title": title, "skipped": "benchmarks/prompt_parsing.py is not there"}
    from . import prompt_parsing as module

    raw: dict[str, Any] = module.run()
    if "skipped" in raw:
        return {"title": title, "skipped": str(raw["skipped"]), "raw": raw}
    scenario: dict[str, Any] = {
        "title": title,
        "measures": "time to parse every text of the shared corpus (best of repeats)",
        "raw": raw,
    }
    ours_us = raw.get("parse_prompt_us_per_text")
    peer_us = raw.get("bare_json_loads_us_per_text")
    if isinstance(ours_us, float) and isinstance(peer_us, float):
        scenario["figures"] = {
            "ours: parse_prompt": summarise([{"us_per_text": ours_us}]),
            "bare json.loads": summarise([{"us_per_text": peer_us}]),
        }
        scenario["ratios"] = [
            ratio_entry(
                label="parse_prompt / bare json.loads",
                metric="us_per_text",
                unit="us/text",
                higher_is_better=False,
                ours=ours_us,
                peer=peer_us,
            )
        ]
    return scenario


async def run_scenarios(names: list[str], config: Config, url: str) -> dict[str, Any]:
    """Run ``names`` in order; a failing scenario is recorded, not fatal."""
    out: dict[str, Any] = {}
    for name in names:
        started = time.perf_counter()
        try:
            if name == "prompt_parsing":
                log("prompt parsing: benchmarks.prompt_parsing.run()")
                result = await asyncio.to_thread(prompt_parsing)
            else:
                result = await SCENARIOS[name](url, config)
        except Exception:
            log(f"{name} failed:\n{traceback.format_exc()}")
            result = {"title": name, "error": traceback.format_exc(limit=3)}
        result["duration_s"] = time.perf_counter() - started
        result["finished_at"] = _now()
        out[name] = result
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke test in well under a minute"
    )
    parser.add_argument(
        "--only", choices=ALL, action="append", metavar="SCENARIO", help=f"one of {', '.join(ALL)}"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"where results.json and results.png go (default {FULL_OUTPUT.relative_to(ROOT)}, "
        f"or {QUICK_OUTPUT.relative_to(ROOT)} with --quick)",
    )
    parser.add_argument(
        "--tracemalloc", action="store_true", help="scale: add a tracemalloc pass per step (slow)"
    )
    args = parser.parse_args(argv)
    config = Config.quick_config() if args.quick else Config()
    if args.tracemalloc:
        config = Config(**{**asdict(config), "scale_tracemalloc": True})
    names = list(dict.fromkeys(args.only)) if args.only else list(ALL)
    output: Path = args.output or (QUICK_OUTPUT if args.quick else FULL_OUTPUT)

    started = time.perf_counter()
    results: dict[str, Any] = {"generated_at": _now(), **report.environment()}
    results["load_average_before"] = report.load_average()
    with ServerProcess() as server:
        log(f"server: python -m benchmarks.server at {server.url} (pid {server.pid})")
        scenarios = asyncio.run(run_scenarios(names, config, server.url))
    results["load_average_after"] = report.load_average()
    results["run"] = {
        "quick": config.quick,
        "only": args.only,
        "duration_s": time.perf_counter() - started,
        "config": asdict(config),
    }

    json_path = output / "results.json"
    previous = report.load_results(json_path) if args.only else None
    if previous and previous.get("run", {}).get("quick") == config.quick:
        # --only refreshes its scenarios and keeps the others of the last run.
        merged = dict(previous.get("scenarios", {}))
        merged.update(scenarios)
        scenarios = {name: merged[name] for name in ALL if name in merged}
    results["scenarios"] = scenarios
    results["targets"] = [
        {"scenario": name, **goal}
        for name, scenario in scenarios.items()
        for goal in scenario.get("targets", [])
    ]
    results["all_targets_met"] = all(goal["met"] for goal in results["targets"])

    report.write_json(results, json_path)
    drawn = report.plot(results, output / "results.png")
    print(report.format_tables(results))
    print()
    print(f"wrote {json_path}" + (f" and {output / 'results.png'}" if drawn else " (no plot)"))
    print(f"suite took {results['run']['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
