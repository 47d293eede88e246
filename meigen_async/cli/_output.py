r"""Writing any string safely, the exit statuses, and `CommandError`.

Whatever the command line writes goes through `_write`, so that no string (a lone
surrogate from a server's JSON, text a non-UTF-8 terminal cannot show) can stop a run
halfway. Readable lines go through `_print` (or `_print_row`), which shows every control,
escape sequence and bidi override escaped (`terminal_safe`): a string from a server or a
cache cannot act on the terminal, nor add a line. JSON holding one is written in its
all-ASCII form, which escapes them as `\uXXXX` and reads back to the same strings.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO, cast

from .._text import terminal_safe

if TYPE_CHECKING:
    from rich.console import Console


_PROG = "meigen-async"

RICH_HINT = "pip install rich, the cli extra"
"""How to get rich, which draws the progress bar and the demo's table."""


_EXIT_OK = 0
_EXIT_FAILED = 1
_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A failure to report as one `meigen-async: error: ...` line and an exit status."""

    def __init__(self, message: str, status: int = _EXIT_USAGE):
        super().__init__(message)
        self.message = message
        self.status = status


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped a command that has already said where it stopped."""


def counted(count: int, one: str, many: str) -> str:
    """`count` and the noun for it: `1 image`, `2 images`."""
    return f"{count:,} {one if count == 1 else many}"


def human_size(count: int) -> str:
    """`count` bytes in decimal units, as rich shows them: `287 bytes`, `12.3 kB`, `4.5 MB`.

    Here rather than rich's own: `download` and `cache` run without rich.
    """
    if count < 1000:
        return "1 byte" if count == 1 else f"{count} bytes"
    value = float(count)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000:
            return f"{value:,.1f} {unit}"
    return f"{value / 1000:,.1f} TB"


def _error(message: str) -> None:
    _print(f"{_PROG}: error: {message}", sys.stderr)


# -- Writing any string --------------------------------------------------------------------------

# json.loads accepts "\ud800"; no UTF-8 stream can write the lone surrogate it gives.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogates(text: str) -> str:
    r"""`text` with each lone surrogate written as its `\uXXXX` escape.

    For rich's stream, whose escape sequences are its drawing: what rich is given to show is
    made terminal-safe before.
    """
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _escaped_for(stream: TextIO, text: str) -> str:
    """`text` with what the encoding of `stream` cannot carry written as backslash escapes."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        return text.encode(encoding, "backslashreplace").decode(encoding, "replace")
    except LookupError:  # a stream naming no codec Python knows
        return text.encode("ascii", "backslashreplace").decode("ascii")


def _write(stream: TextIO, text: str, fallback: Callable[[], str] | None = None) -> None:
    """Write `text`, or, when the stream's encoding cannot carry it, `fallback()`.

    Without a fallback the characters it cannot carry are written as backslash escapes. A text
    stream encodes the whole string before it buffers any of it, so a refused write leaves
    nothing half-written.
    """
    try:
        stream.write(text)
        return
    except UnicodeEncodeError:
        pass
    text = fallback() if fallback is not None else _escaped_for(stream, text)
    try:
        stream.write(text)
    except UnicodeEncodeError:  # an encoding that is not ASCII-compatible, with strict errors
        stream.write(text.encode("ascii", "backslashreplace").decode("ascii"))


def _print(text: str, stream: TextIO) -> None:
    """Write `text` as one readable line; never raises for what the string holds.

    Controls, escape sequences, bidi overrides and newlines in it are shown escaped
    (`terminal_safe`). A multi-line layout is printed a line at a time, so that no newline
    in a field can add a line of its own.
    """
    _write(stream, terminal_safe(text) + "\n")


def _print_row(fields: Iterable[object], stream: TextIO) -> None:
    """Write `fields` as one tab-separated line, each shown as `_print` shows a line."""
    _write(stream, "\t".join(terminal_safe(str(field)) for field in fields) + "\n")


def _print_json(value: Any, stream: TextIO, *, indent: int | None = None) -> None:
    r"""Write `value` as JSON and a newline, in UTF-8 where the stream and the strings allow.

    Strings with what `terminal_safe` escapes (lone surrogates, controls, bidi overrides:
    `ensure_ascii=False` leaves C1 controls, DEL and U+202E raw), and streams that cannot
    carry every character (an ASCII terminal), get the all-ASCII form of the same JSON
    (`\uXXXX` escapes), which a JSON reader reads back to the same strings.
    """
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    if terminal_safe(text, newlines=True) != text:
        text = json.dumps(value, indent=indent)
    _write(stream, text + "\n", lambda: json.dumps(value, indent=indent) + "\n")


class _SafeStream:
    """A text stream for rich whose writes cannot fail on what a string holds."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        _write(self._stream, _escape_surrogates(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def _open_output(path: str | None, *, append: bool = False) -> Iterator[TextIO]:
    if path is None or path == "-":
        yield sys.stdout
        return
    try:
        stream = open(path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise CommandError(f"cannot write {path!r}: {exc.strerror or exc}") from None
    try:
        yield stream
    finally:
        try:
            stream.close()
        except OSError as exc:  # the last flush: a full disk shows here
            raise CommandError(_cannot_write(path, exc), _EXIT_FAILED) from None


def _cannot_write(path: str | None, exc: OSError) -> str:
    name = "stdout" if path is None or path == "-" else repr(path)
    return f"cannot write {name}: {exc.strerror or exc}"


def _console(stream: TextIO) -> Console:
    from rich.console import Console

    return Console(file=cast("TextIO", _SafeStream(stream)))


def _flush(out: TextIO, path: str | None) -> None:
    try:
        out.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise CommandError(_cannot_write(path, exc), _EXIT_FAILED) from None
