"""The `meigen-async` command line.

Its commands: `get`, `bulk`, `search`, `download`, `export`, `cache`, `serve` and `demo`.

Every command that talks to a gallery takes `--base-url` (default: `$MEIGEN_BASE_URL`, else
the real service) and `--timeout`. Bad input is reported as one `meigen-async: error: ...`
line on stderr with exit status 2; failed fetches give exit status 1. Help is laid out for
the terminal's width (`_help`).

Whatever it writes goes through `_write`, so that no string (a lone surrogate from a server's
JSON, text a non-UTF-8 terminal cannot show) can stop a run halfway.
Every readable line shows what a terminal would act on (controls, escape sequences, bidi
overrides, a newline inside a field) escaped (`_text.terminal_safe`); JSON stays exact JSON.

rich (the `cli` extra) draws the progress bar and the demo's table. It is imported only
where it is needed, so every command but `demo` runs without it (`bulk`, `download` and
`export` then draw no bar, and say how to get one).
"""

from __future__ import annotations

from ._args import build_parser as build_parser
from ._bulk import bulk_summary, read_done_ids
from ._demo import DemoReport, demo_story, run_demo
from ._failures import FailureTally
from ._get import summarize
from ._input import read_ids
from ._main import main
from ._options import BASE_URL_ENV, base_url_problem, default_cache_path
from ._output import CommandError as CommandError
from ._progress import _progress as _progress
from ._search import hit_line as hit_line

__all__ = [
    "BASE_URL_ENV",
    "DemoReport",
    "FailureTally",
    "base_url_problem",
    "bulk_summary",
    "default_cache_path",
    "demo_story",
    "main",
    "read_done_ids",
    "read_ids",
    "run_demo",
    "summarize",
]
