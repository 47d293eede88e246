"""The code the docs give to copy runs as written: programs, pytest examples, sqlite3 queries.

A Python block holding `asyncio.run(` is a complete program: it must be offline (a
`FakeGallery`) and run as it is. A block holding `def test_` is a pytest module: it must pass
in a project of its own, where pytest-asyncio is in its default strict mode. Every other block
is a fragment, and must at least parse.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from meigen_async import GallerySession
from meigen_async.sqlite_cache import SQLiteCache
from meigen_async.testing import FakeGallery

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# The README's first block has a test of its own, which checks what it prints too.
PAGES = sorted(DOCS.glob("*.md"))
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str, pages: list[Path] = PAGES) -> list[tuple[str, str]]:
    """Each `language` block of `pages`, as (where it starts, its code)."""
    found = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for block in BLOCK.finditer(text):
            if block.group(1) == language:
                line = text.count("\n", 0, block.start()) + 1
                found.append((f"{page.relative_to(ROOT)}:{line}", block.group(2)))
    return found


PYTHON = blocks("python", [*PAGES, ROOT / "README.md"])
PROGRAMS = [(where, code) for where, code in PYTHON if "asyncio.run(" in code]
PYTEST_MODULES = [(where, code) for where, code in PYTHON if "def test_" in code]


def test_the_docs_hold_programs_and_pytest_examples_to_run() -> None:
    assert len(PROGRAMS) >= 5
    assert {where.split(":")[0] for where, _ in PYTEST_MODULES} >= {
        "docs/bots.md",
        "docs/testing.md",
    }


@pytest.mark.parametrize(("where", "code"), PYTHON, ids=[where for where, _ in PYTHON])
def test_every_python_block_parses(where: str, code: str) -> None:
    # Fragments may await at the top level, as in an async function's body.
    compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT | ast.PyCF_ONLY_AST)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("where", "code"),
    [(where, code) for where, code in PROGRAMS if not where.startswith("README")],
    ids=[where for where, _ in PROGRAMS if not where.startswith("README")],
)
def test_a_complete_program_runs_offline_as_it_is(where: str, code: str, tmp_path: Path) -> None:
    assert "FakeGallery" in code, f"{where} would talk to the real service"
    _run_python(code, tmp_path)


def _run_python(code: str, cwd: Path) -> str:
    """What `code`, run in a Python of its own in `cwd`, printed; it must exit with status 0."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


_MODULE = "test_example.py"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("where", "code"), PYTEST_MODULES, ids=[where for where, _ in PYTEST_MODULES]
)
def test_a_pytest_example_passes_in_a_project_of_its_own(
    where: str, code: str, tmp_path: Path
) -> None:
    (tmp_path / _MODULE).write_text(code, encoding="utf-8")
    # The bot examples, for the tests of their handlers (docs/bots.md).
    for example in (DOCS / "examples").glob("*.py"):
        shutil.copy(example, tmp_path)
    # An ini file of its own: not this project's asyncio_mode = "auto", nor its conftest.
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings =\n    ignore:'audioop' is deprecated:DeprecationWarning\n",
        encoding="utf-8",
    )
    # Only the plugin the page names (pytest-asyncio), not every one this project installs.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "asyncio", _MODULE],
        cwd=tmp_path,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b\d+ passed\b", result.stdout)
    assert not re.search(r"skipped|warning", result.stdout), result.stdout


@pytest.mark.slow
def test_the_datasets_pages_reading_snippet_reads_what_its_worked_example_wrote(
    tmp_path: Path,
) -> None:
    page = [code for _, code in blocks("python", [DOCS / "datasets.md"])]
    example = next(code for code in page if "session.export(" in code)
    reading = next(code for code in page if "webdataset.WebDataset(" in code)
    # One interpreter: the export, then the reading as written (Hugging Face offline: conftest).
    printed = _run_python(f"{example}\n{reading}\nprint(len(rows))", tmp_path)
    assert printed.splitlines()[-1] == "7"


# -- The queries of docs/cache-files.md -----------------------------------------------------------


def sqlite3_queries() -> list[str]:
    """The SQL of each `sqlite3` command in docs/cache-files.md."""
    queries = []
    for _, code in blocks("sh", [DOCS / "cache-files.md"]):
        # A query may go on over several lines, inside its quotes.
        words = shlex.split(code.replace("\\\n", " "), comments=True)
        for at, word in enumerate(words):
            if word == "sqlite3":
                assert words[at + 1] == "-readonly", code
                queries.append(words[at + 3])
    return queries


def test_the_cache_page_shows_two_sqlite3_queries() -> None:
    assert len(sqlite3_queries()) == 2


async def test_the_cache_pages_queries_read_a_cache_file_made_by_the_library(
    gallery: FakeGallery, tmp_path: Path
) -> None:
    path = tmp_path / "gallery.sqlite"
    wanted = gallery.ids[:3]
    async with SQLiteCache(path) as cache, GallerySession(gallery.url, cache=cache) as session:
        images = await session.get_images([*wanted, "1999999999999999999"], return_exceptions=True)
    counts, expiring = sqlite3_queries()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        assert sorted(connection.execute(counts)) == [("image", 3), ("missing", 1)]
        rows = connection.execute(expiring).fetchall()
    models = {f"{gallery.url}/api/images/{i.id}": i.model for i in images if hasattr(i, "model")}
    assert {key: model for key, model, _ in rows} == models
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", when) for _, _, when in rows)
