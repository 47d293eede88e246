"""Reading ids, one a line, from a file or stdin: as bytes, the same way from both.

A text stream decodes differently depending on where it came from: Python's stdin turns
invalid UTF-8 into surrogate escapes where a file opened as UTF-8 stops the run, and a file
ends a line at a lone carriage return where stdin does not. Reading bytes and decoding each
line here makes one answer for both, and lets no line stop the run: a line that is not UTF-8
becomes an id the gallery's check refuses, reported with the others, and written back to
`--failed` as the same bytes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Container, Iterable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

from ._output import CommandError

__all__ = ["count_ids", "decode_lines", "open_ids", "read_ids"]

MAX_LINE = 4096
"""The most bytes of a line read: a gallery id is at most 128 characters, and a line longer
than this is refused from what it starts with, never held whole (a file with no newline)."""

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def read_ids(lines: Iterable[str]) -> Iterator[str]:
    """Yield the ids of `lines`, one a line, whitespace stripped and blank lines skipped.

    A generator: it reads a line only when the next id is wanted.
    """
    for line in lines:
        image_id = line.strip()
        if image_id:
            yield image_id


def decode_lines(stream: BinaryIO, name: str) -> Iterator[str]:
    r"""The lines of the bytes of `stream` (named `name` in errors), as text, read as asked.

    A line ends at `\n` (a `\r` before it is whitespace, stripped with the rest). A UTF-8
    byte order mark opening the input is dropped. Bytes that are not UTF-8 become surrogate
    escapes, which no gallery id holds. A line longer than `MAX_LINE` bytes gives its first
    `MAX_LINE` bytes, and the rest of it is skipped.

    Raises:
        CommandError: the input opens with a UTF-16 byte order mark: it is not UTF-8 text at
            all, and every line of it would fail.

    """
    first = True
    while line := stream.readline(MAX_LINE):
        if len(line) == MAX_LINE and not line.endswith(b"\n"):
            _skip_line(stream)
        if first:
            first = False
            if line.startswith(_UTF16_BOMS):
                raise CommandError(f"cannot read {name}: not UTF-8 text (it is UTF-16)")
            line = line.removeprefix(_UTF8_BOM)
        yield line.decode("utf-8", "surrogateescape")


def _skip_line(stream: BinaryIO) -> None:
    while (rest := stream.readline(MAX_LINE)) and not rest.endswith(b"\n"):
        pass


def _name(path: str) -> str:
    return "stdin" if path == "-" else repr(path)


@contextmanager
def open_ids(path: str) -> Iterator[Iterator[str]]:
    """The ids of the file at `path` (`-`: stdin), read lazily from its bytes.

    Raises:
        CommandError: the file cannot be opened.

    """
    if path == "-":
        yield read_ids(decode_lines(sys.stdin.buffer, _name(path)))
        return
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CommandError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    with stream:
        yield read_ids(decode_lines(stream, _name(path)))


def count_ids(path: str, skip: Container[str] = frozenset()) -> int | None:
    """The ids in a regular file but those in `skip`, read once as a stream; None for a pipe."""
    if not os.path.isfile(path):
        return None
    try:
        with open_ids(path) as ids:
            return sum(1 for image_id in ids if image_id not in skip)
    except (OSError, CommandError):
        return None  # reading it for real reports the problem
