"""The command line in an 80-column terminal: help text, and the progress bar's frames.

Widths come from `COLUMNS` (argparse and rich both read it first) or, where the whole
command runs, from a pseudo-terminal of 80 columns (tests/terminal.py).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from terminal import CTRL_C, cells, frames, plain, run_in_terminal

from meigen_async.cli import build_parser, main
from meigen_async.cli._help import fill_help
from meigen_async.cli._progress import Field, _fitted_progress, _progress, fit
from meigen_async.testing import FakeGallery


def command_lines(parser: argparse.ArgumentParser | None = None) -> list[list[str]]:
    """Every command and subcommand (`cache info`), as the words that name it."""
    parser = parser or build_parser()
    found: list[list[str]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                found += [[name], *([name, *rest] for rest in command_lines(command))]
    return found


def help_text(
    argv: list[str],
    columns: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


# -- Help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [[], *command_lines()], ids=" ".join)
def test_help_at_80_columns_fits_with_every_word_whole(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    narrow = help_text(argv, 80, monkeypatch, capsys)
    wide = help_text(argv, 300, monkeypatch, capsys)
    assert max(len(line) for line in narrow.splitlines()) <= 80, narrow
    # The same words in the same order: none cut, none lost; only continuations added.
    assert [word for word in narrow.split() if word != "\\"] == wide.split()


def test_help_prose_is_filled_to_a_wider_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wide = help_text(["bulk"], 120, monkeypatch, capsys)
    assert any(len(line) > 100 and line[0] != " " for line in wide.splitlines())


def test_fill_help_fills_prose_and_keeps_example_lines() -> None:
    text = "examples:\n  tool run a\n  tool run b\n\nsome words that go on\nand on past the width"
    assert fill_help(text, 20).splitlines() == [
        "examples:",
        "  tool run a",
        "  tool run b",
        "",
        "some words that go",
        "on and on past the",
        "width",
    ]


def test_a_command_longer_than_the_width_is_continued_and_quotes_are_kept_whole() -> None:
    lines = fill_help('  tool search "neon city at night" --ids --max 500', 30).splitlines()
    assert lines == [
        "  tool search \\",
        '      "neon city at night" \\',
        "      --ids --max 500",
    ]
    assert all(len(line) <= 30 for line in lines)


# -- The progress bar: its layout ----------------------------------------------------------------


def test_fit_drops_the_least_useful_fields_whole_and_keeps_smaller_ones_that_fit() -> None:
    fields = [Field("word", 8), Field("count", 13), Field("bar", 10), Field("rate", 11)]
    fields += [Field("elapsed", 15), Field("spinner", 1)]
    assert fit(fields, 80) == (frozenset(f.name for f in fields), 80 - 58 - 5)
    # 40 cells: the rate and the time elapsed no longer fit; the spinner still does.
    assert fit(fields, 40) == (frozenset({"word", "count", "bar", "spinner"}), 40 - 32 - 3)


def drawn_line(width: int, total: int | None, **fields: Any) -> str:
    """The line the progress bar draws for a task in this state, at `width` columns."""
    console = Console(width=width, file=io.StringIO(), force_terminal=True, color_system=None)
    progress = _fitted_progress(console, "fetching", "ids", redirect_stdout=False)
    task = progress.add_task("fetching", total=total, word="fetching", **fields)
    progress.update(task, completed=fields.pop("completed", 0))
    with console.capture() as capture:
        console.print(progress.make_tasks_table(progress.tasks))
    [line] = capture.get().splitlines()
    return line


def test_a_busy_line_fits_80_columns_dropping_fields_not_cutting_them() -> None:
    line = drawn_line(80, 90_000, completed=41_200, failed=4_120, media=123_400_000)
    assert cells(line) <= 80
    assert "…" not in line
    for shown in ("fetching", "41,200/90,000", "4,120 failed", "left "):
        assert shown in line
    assert "━" in line


def test_a_line_of_unknown_total_shows_a_count_and_no_time_left() -> None:
    line = drawn_line(80, None, completed=53)
    assert "53 ids" in line
    assert "left" not in line
    assert "elapsed" in line


def test_a_narrow_terminal_still_gets_one_line_with_what_matters_most() -> None:
    line = drawn_line(36, 90_000, completed=41_200, failed=4_120)
    assert cells(line) <= 36
    assert line.split() == ["fetching", "41,200/90,000", "4,120", "failed"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_last_frame_says_done_with_no_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    stream = Terminal()
    with _progress(stream, 2) as progress:
        progress.advance(True)
        progress.advance(False)
    last = frames(stream.getvalue().encode())[-1]
    assert last.split()[:1] == ["done"]
    assert "2/2" in last
    assert "1 failed" in last
    assert "left" not in last


def test_a_run_that_stops_says_so_in_its_last_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    stream = Terminal()

    def interrupted() -> None:
        with _progress(stream, 5) as progress:
            progress.advance(True)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert frames(stream.getvalue().encode())[-1].split()[0] == "interrupted"
    assert stream.getvalue().endswith("\n") or "\n\x1b[?25h" in stream.getvalue()


async def test_a_resumed_bulk_counts_to_the_ids_left_and_ends_on_done(
    gallery: FakeGallery,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids, out = tmp_path / "ids.txt", tmp_path / "out.jsonl"
    ids.write_text("\n".join(gallery.ids[:5]) + "\n", encoding="utf-8")
    argv = ["bulk", str(ids), "-o", str(out), "--base-url", gallery.url]
    assert await asyncio.to_thread(main, [*argv, "--no-cache"]) == 0
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:3]), encoding="utf-8")  # as if stopped after three
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert await asyncio.to_thread(main, [*argv, "--resume"]) == 0
    last = frames(capsys.readouterr().err.encode())[-1]
    assert last.split()[0] == "done"
    assert "2/2" in last


# -- The whole command line in an 80-column terminal ---------------------------------------------


def type_once(when: Callable[[bytes], bool]) -> Callable[[bytes], bytes | None]:
    """Type Ctrl-C the first time `when(written)` holds."""
    typed = False

    def type_when(written: bytes) -> bytes | None:
        nonlocal typed
        if typed or not when(written):
            return None
        typed = True
        return CTRL_C

    return type_when


def ids_file(tmp_path: Path, ids: list[str]) -> str:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.slow
async def test_bulk_in_an_80_column_terminal_draws_lines_that_fit_and_ends_on_done(
    images: list[dict[str, Any]], tmp_path: Path
) -> None:
    async with FakeGallery(images, delay=0.02) as gallery:
        argv = [ids_file(tmp_path, gallery.ids * 3), "-o", str(tmp_path / "out.jsonl")]
        argv += ["--concurrency", "4", "--no-cache", "--base-url", gallery.url]
        status, written = await run_in_terminal("bulk", *argv)
    assert status == 0, written
    drawn = frames(written)
    assert len(drawn) >= 2
    assert [frame for frame in drawn if cells(frame) > 80 or "…" in frame] == []
    assert drawn[-1].split()[0] == "done"
    assert "180/180" in drawn[-1]
    assert "left" not in drawn[-1]


@pytest.mark.slow
async def test_ctrl_c_in_bulk_says_so_once_on_a_line_of_its_own(
    images: list[dict[str, Any]], tmp_path: Path
) -> None:
    async with FakeGallery(images, delay=0.1) as gallery:
        argv = [ids_file(tmp_path, gallery.ids), "-o", str(tmp_path / "out.jsonl")]
        argv += ["--concurrency", "2", "--no-cache", "--base-url", gallery.url]
        counted = re.compile(rb"[^0-9][1-9][0-9]*/60")  # a frame with some ids done
        started = type_once(lambda written: counted.search(written) is not None)
        status, written = await run_in_terminal("bulk", *argv, type_when=started)
    assert status == 130, written
    text = plain(written)
    assert text.count("meigen-async: interrupted") == 1, text
    assert "error" not in text
    report = text.index("meigen-async: interrupted")
    assert text[report - 1] == "\n"  # after the bar's last line, not on it
    assert frames(written[written.rindex(b"meigen-async: interrupted") :]) == []  # nor over it
    assert frames(written)[-1].split()[0] == "interrupted"
    assert "meigen-async: resume with: " in text[report:]


@pytest.mark.slow
async def test_ctrl_c_in_get_prints_one_line_over_the_terminals_echo(
    images: list[dict[str, Any]],
) -> None:
    async with FakeGallery(images, delay=5) as gallery:
        asked = type_once(lambda written: gallery.in_flight > 0)
        argv = ["get", gallery.ids[0], "--no-cache", "--base-url", gallery.url]
        status, written = await run_in_terminal(*argv, type_when=asked)
    assert status == 130, written
    # The terminal echoes ^C; the message goes back to the start of that line and writes over it.
    assert written == b"^C\rmeigen-async: interrupted\r\n"


# Runs the command line with rich unimportable, as where the cli extra is not installed.
WITHOUT_RICH = [
    sys.executable,
    "-c",
    "import runpy, sys; sys.modules['rich'] = None; sys.argv = ['meigen-async', *sys.argv[3:]]; "
    "runpy.run_module('meigen_async', run_name='__main__', alter_sys=True)",
]


@pytest.mark.slow
async def test_bulk_in_a_terminal_without_rich_runs_and_says_how_to_get_a_bar(
    images: list[dict[str, Any]], tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    async with FakeGallery(images) as gallery:
        argv = ["bulk", ids_file(tmp_path, gallery.ids), "-o", str(out), "--base-url", gallery.url]
        status, written = await run_in_terminal(*argv, python=WITHOUT_RICH)
    assert status == 0, written
    assert b"no progress bar without rich (pip install rich" in written
    assert frames(written) == []
    assert len(out.read_text(encoding="utf-8").splitlines()) == 60
