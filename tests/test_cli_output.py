"""What the command line writes when a server's strings are hostile: the bytes on stdout and
stderr, from `main` run in process against a FakeGallery on loopback.

Readable output shows every control, escape sequence and bidi override escaped, and a field's
newline adds no line; JSON output stays the exact JSON of the same strings.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from meigen_async.cli import main
from meigen_async.testing import Answer, FakeGallery, sample_images

# Clear the screen; set the window title (OSC 0); write the clipboard (OSC 52); an OSC 8
# link; CSI as the single C1 control U+009B; a right-to-left override; a carriage return.
HOSTILE = (
    "\x1b[2J"
    "\x1b]0;pwned\x07"
    "\x1b]52;c;ZXZpbA==\x07"
    "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\"
    "\x9b2J"
    "\u202etxt.exe"
    "\rmeigen-async: all good"
)
# How readable output shows it: each character a terminal acts on as its Python escape.
SHOWN = (
    r"\x1b[2J\x1b]0;pwned\x07\x1b]52;c;ZXZpbA==\x07\x1b]8;;http://evil.example/\x1b\click"
    r"\x1b]8;;\x1b\\x9b2J\u202etxt.exe\rmeigen-async: all good"
)
# The bytes a terminal would act on: C0 but the layout's newline, DEL and C1 as UTF-8, and
# the bidi embeddings, overrides and isolates.
ACTED_ON = {*map(chr, range(0x20)), *map(chr, range(0x7F, 0xA0)), *"\u202a\u202b\u202c\u202d"}
ACTED_ON |= {"\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e", "\u200f"}


def assert_terminal_safe(written: bytes, *, layout: str = "\n") -> str:
    """`written` decoded; fails when it holds anything but `layout` a terminal acts on."""
    text = written.decode("utf-8")
    assert set(text).isdisjoint(ACTED_ON - set(layout)), text
    return text


def hostile(data: dict[str, Any]) -> dict[str, Any]:
    return {
        **data,
        "text": f"neon first {HOSTILE}\nneon second {HOSTILE}",
        "model": f"model {HOSTILE}\nfake line",
        "author_display_name": f"name {HOSTILE}",
        "author_username": f"user{HOSTILE}",
        "media_urls": [f"https://images.meigen.ai/a{HOSTILE}.jpg"],
    }


@pytest.fixture
async def hostile_gallery() -> AsyncIterator[FakeGallery]:
    async with FakeGallery([hostile(sample_images()[0])]) as fake:
        yield fake


async def run(*argv: str) -> int:
    """``main(argv)`` in a worker thread, so that this loop keeps serving the gallery."""
    return await asyncio.to_thread(main, list(argv))


async def test_get_shows_hostile_fields_escaped_and_no_field_adds_a_line(
    hostile_gallery: FakeGallery, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    [image_id] = hostile_gallery.ids
    assert await run("get", "--base-url", hostile_gallery.url, image_id) == 0
    out = assert_terminal_safe(capsysbinary.readouterr().out)
    lines = out.splitlines()
    [model] = [line for line in lines if line.startswith("  model")]
    assert model == f"  model  model {SHOWN}\\nfake line"
    assert not any(line.startswith(("fake", "meigen-async")) for line in lines)
    # The prompt's own lines stay lines.
    assert [line.split(" \\x1b")[0] for line in lines if "neon" in line] == [
        "    neon first",
        "    neon second",
    ]


async def test_search_lines_show_hostile_fields_escaped_one_line_a_hit(
    hostile_gallery: FakeGallery, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert await run("search", "neon", "--base-url", hostile_gallery.url) == 0
    out = assert_terminal_safe(capsysbinary.readouterr().out)
    [_, line] = out.splitlines()  # the header, and the hit
    assert line.startswith(f"{hostile_gallery.ids[0]}  model \\x1…")


def command_line(command: str, gallery: FakeGallery, tmp_path: Path, *options: str) -> list[str]:
    """`command` asking for the gallery's one image (`bulk` from a file) or searching it."""
    [image_id] = gallery.ids
    ids = tmp_path / "ids.txt"
    ids.write_text(image_id + "\n")
    argv = {"get": ["get", image_id], "search": ["search", "neon"], "bulk": ["bulk", str(ids)]}
    return [*argv[command], *options, "--base-url", gallery.url]


@pytest.mark.parametrize("command", ["get", "search", "bulk"])
async def test_json_output_is_the_exact_json_of_hostile_strings_with_nothing_raw(
    command: str,
    hostile_gallery: FakeGallery,
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    as_json = [] if command == "bulk" else ["--json"]
    assert await run(*command_line(command, hostile_gallery, tmp_path, *as_json)) == 0
    written = capsysbinary.readouterr().out
    printed = json.loads(assert_terminal_safe(written))
    expected = hostile_gallery.images[hostile_gallery.ids[0]]
    for field in ("text", "model", "author_display_name", "author_username"):
        assert printed[field] == expected[field]


@pytest.mark.parametrize("command", ["get", "bulk", "search"])
async def test_a_server_error_message_is_one_error_line_shown_escaped(
    command: str,
    hostile_gallery: FakeGallery,
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    message = f"bad {HOSTILE}\nmeigen-async: error: a line of the server's"
    hostile_gallery.script(hostile_gallery.ids[0], Answer.error(400, message))
    hostile_gallery.script_search(Answer.error(400, message))
    assert await run(*command_line(command, hostile_gallery, tmp_path)) == 1
    err = assert_terminal_safe(capsysbinary.readouterr().err)
    lines = [line for line in err.splitlines() if "bad " in line]
    assert len(lines) == 1
    assert "bad \\x1b[2J\\x1b]0;pwned\\x07" in lines[0]
    assert "\\nmeigen-async: error: a line" in lines[0]
