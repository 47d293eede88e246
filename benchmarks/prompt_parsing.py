"""Prompt parsing over the real gallery corpus: ``parse_prompt`` against bare ``json.loads``.

Run it with ``python -m benchmarks.prompt_parsing``. It reads
``../shared/corpus/gallery-prompts.jsonl`` (next to the project, not in it) and says so and
stops when that file is absent. Both sides get the same texts; each timing is the best of
several repeats with ``time.perf_counter``. The baseline only tries ``json.loads`` on each text
(and catches the error); ``parse_prompt`` also finds embedded documents, repairs malformed ones,
and collects placeholders and parameters, so the ratio is the price of all that.
"""

from __future__ import annotations

import functools
import gc
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from meigen_async.prompt import PromptKind, parse_prompt

__all__ = ["CORPUS", "run"]

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "gallery-prompts.jsonl"
"""Where the corpus lives when the shared checkout is there."""

REPEATS = 7


def load(path: Path = CORPUS) -> list[str]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line)["text"] for line in lines if line.strip()]


def best_of(repeats: int, work: Callable[[], object], *, collect: bool = True) -> float:
    """The fastest of ``repeats`` timed runs of ``work``, in seconds, with GC paused."""
    timings = []
    for _ in range(repeats):
        if collect:
            gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            work()
            timings.append(time.perf_counter() - start)
        finally:
            gc.enable()
    return min(timings)


def bare_json_loads(texts: Sequence[str]) -> int:
    """What a caller gets without this module: ``json.loads`` tried on every text.

    Returns how many texts parsed to an object or array.
    """
    parsed = 0
    for text in texts:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        parsed += isinstance(value, (dict, list))
    return parsed


def parse_all(texts: Sequence[str]) -> int:
    return sum(parse_prompt(text).kind is PromptKind.JSON for text in texts)


def slowest(texts: Sequence[str]) -> tuple[float, int]:
    """The slowest single text to parse (best of the repeats) and its length in characters."""
    worst, length = 0.0, 0
    for text in texts:
        elapsed = best_of(3, functools.partial(parse_prompt, text), collect=False)
        if elapsed > worst:
            worst, length = elapsed, len(text)
    return worst, length


def run(path: Path = CORPUS, repeats: int = REPEATS) -> dict[str, Any]:
    """Time both sides over the corpus and count what ``parse_prompt`` found."""
    if not path.is_file():
        return {"skipped": f"corpus not found at {path}"}
    texts = load(path)
    prompts = [parse_prompt(text) for text in texts]
    kinds = Counter(prompt.kind.value for prompt in prompts)
    parse_s = best_of(repeats, lambda: parse_all(texts))
    loads_s = best_of(repeats, lambda: bare_json_loads(texts))
    worst_s, worst_chars = slowest(texts)
    return {
        "texts": len(texts),
        "characters": sum(map(len, texts)),
        "plain": kinds[PromptKind.PLAIN.value],
        "json": kinds[PromptKind.JSON.value],
        "json_valid_as_is": sum(p.kind is PromptKind.JSON and not p.repaired for p in prompts),
        "json_repaired": sum(p.repaired for p in prompts),
        "json_with_preamble": sum(bool(p.preamble) for p in prompts),
        "bare_json_loads_objects_or_arrays": bare_json_loads(texts),
        "with_placeholders": sum(bool(p.placeholders) for p in prompts),
        "with_params": sum(bool(p.params) for p in prompts),
        "repeats": repeats,
        "parse_prompt_s": parse_s,
        "bare_json_loads_s": loads_s,
        "ratio": parse_s / loads_s,
        "parse_prompt_us_per_text": parse_s / len(texts) * 1e6,
        "bare_json_loads_us_per_text": loads_s / len(texts) * 1e6,
        "slowest_text_ms": worst_s * 1e3,
        "slowest_text_chars": worst_chars,
    }


def main() -> int:
    figures = run()
    if "skipped" in figures:
        print(f"prompt parsing benchmark skipped: {figures['skipped']}", file=sys.stderr)
        return 0
    width = max(map(len, figures))
    for name, value in figures.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
        print(f"{name:<{width}}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
