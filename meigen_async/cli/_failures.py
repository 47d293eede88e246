"""What `bulk` keeps of its failures: counts by kind and a few examples, in flat memory.

A job of millions of ids can fail for every one of them (a gallery that answers 404, a media
host that is not allowed). Nothing here grows with the number of failures: the ids go to the
`--failed` file as they happen, in whole lines, and the tally keeps a count and a few examples
a kind. No I/O but the writes it is handed a stream for; no asyncio.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TypeAlias

import attrs

from ._output import _PROG

__all__ = ["FailedIdsWriter", "FailureTally"]

_LISTED_FAILURES = 10
"""Up to this many failures are listed one a line; more are grouped by kind."""

_EXAMPLES = 3
"""The example ids named for each kind."""


@attrs.frozen
class _Failure:
    image_id: str
    kind: str
    message: str


@attrs.define  # not frozen: a running count
class _Kind:
    """One kind of failure: how many, the first few ids, and the first message."""

    count: int
    message: str
    examples: list[str]


class FailureTally:
    """The failures of a `bulk` run: a count a kind, a few example ids and one message each.

    Its memory does not grow with the number of failures: it keeps the first few failures
    whole (listed one a line when there are few) and, for each kind (an error's class name),
    a count, the first three ids and the first message. The kinds are a handful of class
    names, whatever the input.
    """

    __slots__ = ("_first", "_kinds", "total")

    def __init__(self) -> None:
        self.total: int = 0
        """The failures recorded."""
        self._first: list[_Failure] = []
        self._kinds: dict[str, _Kind] = {}

    def add(self, image_id: str, kind: str, message: str) -> None:
        """Record that `image_id` failed with an error of class `kind`, saying `message`."""
        self.total += 1
        if len(self._first) < _LISTED_FAILURES:
            self._first.append(_Failure(image_id, kind, message))
        tally = self._kinds.get(kind)
        if tally is None:
            self._kinds[kind] = _Kind(1, message, [image_id])
            return
        tally.count += 1
        if len(tally.examples) < _EXAMPLES:
            tally.examples.append(image_id)

    def summary(self, done: int) -> list[str]:
        """The lines reporting these failures out of `done` ids, for stderr.

        A few failures are listed one a line; more are grouped by kind, most frequent first,
        with a count, a few example ids and one message each.
        """
        lines = [f"{_PROG}: {self.total:,} of {done:,} ids failed:"]
        if self.total <= _LISTED_FAILURES:
            lines.extend(f"  {f.image_id}: {f.message}" for f in self._first)
            return lines
        for kind, tally in sorted(self._kinds.items(), key=lambda item: -item[1].count):
            more = ", ..." if tally.count > len(tally.examples) else ""
            lines.append(f"  {kind}: {tally.count:,} ids ({', '.join(tally.examples)}{more})")
            lines.append(f"    e.g. {tally.message}")
        return lines


RawWrite: TypeAlias = Callable[[memoryview], "int | None"]
"""A raw file's `write`: how many bytes it wrote (None: none, the file is non-blocking)."""

_BATCH_BYTES = 8192
"""Ids are handed to the file in batches of about this size: whole lines each."""


class FailedIdsWriter:
    """The ids written to `--failed` as they fail, one a line, in batches of whole lines.

    `write` is the raw (unbuffered) write of the file: each call gets only complete lines,
    so that a run stopped at any point (Ctrl-C, SIGTERM, a crash, a kill) leaves a file of
    whole lines, ready to be read back as ids. What a kill catches in the batch is lost; the
    ids are not done either, so `--resume` tries them again. An id is written as the bytes it
    was read from (surrogate escapes back to the bytes), so that feeding the file back in
    asks for the same lines.
    """

    __slots__ = ("_batch", "_size", "_write")

    def __init__(self, write: RawWrite) -> None:
        self._write = write
        self._batch: list[bytes] = []
        self._size = 0

    def add(self, image_id: str) -> None:
        """Add one id; a full batch is written at once."""
        try:
            line = image_id.encode("utf-8", "surrogateescape") + b"\n"
        except UnicodeEncodeError:  # a surrogate that no byte was read as: not from a file
            line = image_id.encode("utf-8", "backslashreplace") + b"\n"
        self._batch.append(line)
        self._size += len(line)
        if self._size >= _BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the batch, whole, however many calls the file takes for it.

        Raises:
            OSError: the file could not be written (a full disk); the batch is dropped, so
                that a later flush does not write it twice.

        """
        if not self._batch:
            return
        data = memoryview(b"".join(self._batch))
        self._batch.clear()
        self._size = 0
        while data:
            # A raw file may write less than it was given (a signal mid-write, a nearly
            # full disk): the rest follows, so that the last line is whole.
            count = self._write(data)
            if not count:  # nothing taken: trying again would spin
                raise OSError(errno.EIO, "the file took none of the bytes written to it")
            data = data[count:]
