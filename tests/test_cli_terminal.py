"""The command line in an 80-column terminal: help text, and the progress bar's frames.

Widths come from `COLUMNS` (argparse and rich both read it first) or, where the whole
command runs, from a pseudo-terminal of 80 columns (tests/terminal.py).
"""

from __future__ import annotations

import argparse

import pytest

from meigen_async.cli import build_parser, main
from meigen_async.cli._help import fill_help


def command_names() -> list[str]:
    commands = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    return sorted(commands.choices)


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


@pytest.mark.parametrize("argv", [[], *([name] for name in command_names())], ids=str)
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
