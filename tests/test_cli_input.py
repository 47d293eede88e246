"""Reading ids (`cli/_input.py`): bytes, one id a line, the same answer from stdin and a file."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path

import pytest

from meigen_async.cli import CommandError
from meigen_async.cli._input import MAX_LINE, decode_lines, read_ids
from meigen_async.testing import FakeGallery


def ids_of(data: bytes) -> list[str]:
    return list(read_ids(decode_lines(io.BytesIO(data), "stdin")))


def test_a_bom_opening_the_input_is_dropped_and_a_crlf_ends_a_line() -> None:
    assert ids_of(b"\xef\xbb\xbfa1\r\n\r\nb2\r\n") == ["a1", "b2"]


def test_a_bom_further_down_is_part_of_its_line() -> None:
    assert ids_of(b"a1\n\xef\xbb\xbfb2\n") == ["a1", "\ufeffb2"]


def test_bytes_that_are_not_utf8_become_surrogate_escapes_not_an_error() -> None:
    assert ids_of(b"\xffbad\na1\n") == ["\udcffbad", "a1"]


def test_a_lone_carriage_return_does_not_end_a_line() -> None:
    assert ids_of(b"a\rb\n") == ["a\rb"]


def test_a_line_longer_than_the_limit_gives_its_start_and_skips_the_rest() -> None:
    long = b"x" * (3 * MAX_LINE + 5)
    assert ids_of(long + b"\na1\n" + long) == ["x" * MAX_LINE, "a1", "x" * MAX_LINE]


def test_utf16_input_is_refused_as_not_utf8() -> None:
    with pytest.raises(CommandError, match="cannot read stdin: not UTF-8 text"):
        ids_of("a1\n".encode("utf-16"))


async def bulk(
    gallery: FakeGallery, source: str, failed: Path, stdin: bytes | None = None
) -> tuple[int | None, set[str], bytes, bytes]:
    """Run `bulk SOURCE` in a process; its status, ids written, stderr and --failed."""
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "meigen_async", "bulk", source, "--base-url", gallery.url],
        *["--failed", str(failed), "--no-cache"],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=30)
    written = {json.loads(line)["id"] for line in out.splitlines()}
    return process.returncode, written, err, await asyncio.to_thread(failed.read_bytes)


@pytest.mark.slow
async def test_binary_input_gives_the_same_answer_on_stdin_and_from_a_file(
    gallery: FakeGallery, tmp_path: Path
) -> None:
    first, last = gallery.ids[:2]
    data = b"".join(
        [
            b"\xef\xbb\xbf" + first.encode() + b"\r\n",  # a BOM, CRLF: accepted
            b"\n  \r\n",  # blank lines: skipped
            b"two\x00x\n",  # a NUL: refused
            b"\xffbad\n",  # not UTF-8: refused
            b"a\rb\n",  # a lone CR: one line, refused
            b"y" * 5000 + b"\n",  # too long: refused from its start
            last.encode(),  # no newline at the end: accepted
        ]
    )
    path = tmp_path / "ids.txt"
    path.write_bytes(data)
    from_stdin, from_file = await asyncio.gather(
        bulk(gallery, "-", tmp_path / "failed-stdin.txt", stdin=data),
        bulk(gallery, str(path), tmp_path / "failed-file.txt"),
    )
    assert from_stdin == from_file
    status, written, err, failed = from_file
    assert (status, written) == (1, {first, last})
    assert err.decode().splitlines()[0] == "meigen-async: 4 of 6 ids failed:"
    # Back as they were read: the file of failed ids feeds back in to the same lines.
    assert failed == b"two\x00x\n\xffbad\na\rb\n" + b"y" * MAX_LINE + b"\n"
