"""The `meigen-async` command line: `get`, `bulk`, `search`, `download`, `serve` and `demo`.

Every command that talks to a gallery takes `--base-url` (default: `$MEIGEN_BASE_URL`, else
the real service) and `--timeout`. Bad input is reported as one `meigen-async: error: ...`
line on stderr with exit status 2; failed fetches give exit status 1.

Whatever it writes goes through `_write`, so that no string (a lone surrogate from a server's
JSON, text a non-UTF-8 terminal cannot show) can stop a run halfway.

rich (the `cli` extra) draws the progress bar and the demo's table. It is imported only
where it is needed, so `get`, `serve` and a non-interactive `bulk` run without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shlex
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import aclosing, asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, cast
from urllib.parse import urlsplit

import attrs

from ._protocol import validate_image_id
from ._transport import image_urls
from ._version import __version__
from .cache import MemoryCache
from .errors import MeigenError, UpstreamUnreachable
from .media import MediaResult
from .models import GalleryImage, ImageResult, SearchHit, SessionStats, converter, unstructure_image
from .prompt import PromptKind
from .retry import RetryPolicy
from .session import DEFAULT_BASE_URL, GallerySession
from .sqlite_cache import SQLiteCache
from .testing import FakeGallery, load_jsonl, sample_images

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "BASE_URL_ENV",
    "DemoReport",
    "base_url_problem",
    "bulk_summary",
    "default_cache_path",
    "demo_story",
    "failure_summary",
    "main",
    "read_done_ids",
    "read_ids",
    "run_demo",
    "summarize",
]

_PROG = "meigen-async"

BASE_URL_ENV = "MEIGEN_BASE_URL"
"""The environment variable that sets the default `--base-url`."""

_EXIT_OK = 0
_EXIT_FAILED = 1
_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130

_MAX_RETRIES = 100
"""The most `--retries`: with backoffs capped at 30 s, already some 50 minutes an id."""


class CommandError(Exception):
    """A failure to report as one `meigen-async: error: ...` line and an exit status."""

    def __init__(self, message: str, status: int = _EXIT_USAGE):
        super().__init__(message)
        self.message = message
        self.status = status


def _error(message: str) -> None:
    _print(f"{_PROG}: error: {message}", sys.stderr)


# -- Writing any string --------------------------------------------------------------------------

# json.loads accepts "\ud800"; no UTF-8 stream can write the lone surrogate it gives.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogates(text: str) -> str:
    r"""`text` with each lone surrogate written as its `\uXXXX` escape."""
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
    """Write `text` and a newline as readable text: never raises for what the string holds."""
    _write(stream, _escape_surrogates(text) + "\n")


def _print_json(value: Any, stream: TextIO, *, indent: int | None = None) -> None:
    r"""Write `value` as JSON and a newline, in UTF-8 where the stream and the strings allow.

    Strings with lone surrogates, and streams that cannot carry every character (an ASCII
    terminal), get the all-ASCII form of the same JSON (`\uXXXX` escapes), which a JSON
    reader reads back to the same strings.
    """
    text = json.dumps(value, ensure_ascii=False, indent=indent) + "\n"
    if _SURROGATE.search(text) is not None:
        text = json.dumps(value, indent=indent) + "\n"
    _write(stream, text, lambda: json.dumps(value, indent=indent) + "\n")


class _SafeStream:
    """A text stream for rich whose writes cannot fail on what a string holds."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        _write(self._stream, _escape_surrogates(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# -- get -----------------------------------------------------------------------------------------


def summarize(image: GalleryImage) -> str:
    """A readable, multi-line summary of one image: the prompt, counts, date, author, media."""
    prompt = image.prompt
    kind = "JSON" if prompt.kind is PromptKind.JSON else "plain text"
    if prompt.repaired:
        kind += " (repaired)"
    width, height = image.image_width, image.image_height
    size = f"{width}x{height}" if width is not None and height is not None else "unknown"
    posted = image.created_at.strftime("%Y-%m-%d %H:%M UTC") if image.created_at else "unknown"
    rows = [
        ("prompt", kind),
        ("size", size),
        ("model", image.model or "unknown"),
        ("author", _attribution(image) or "unknown"),
        ("posted", posted),
        ("likes", f"{image.likes:,}"),
        ("views", f"{image.views:,}"),
    ]
    media = list(image.media_urls) or ([image.thumbnail_url] if image.thumbnail_url else [])
    lines = [image.id, *(f"  {label:<7}{value}" for label, value in rows)]
    lines += [f"  {'media' if n == 0 else '':<7}{url}" for n, url in enumerate(media)] or [
        f"  {'media':<7}none"
    ]
    lines += ["", *(f"    {line}" for line in _prompt_lines(image))]
    return "\n".join(lines)


_PROMPT_LINES = 6
_PROMPT_WIDTH = 100


def _prompt_lines(image: GalleryImage) -> list[str]:
    """The prompt's first lines, or for a JSON prompt its top-level fields, each cut short."""
    prompt = image.prompt
    if isinstance(prompt.data, dict):
        lines = [f"{key}: {_short(value)}" for key, value in prompt.data.items()]
    else:
        lines = [line for line in image.text.splitlines() if line.strip()]
    if not lines:
        return ["(no prompt)"]
    shown = [_cut(line) for line in lines[:_PROMPT_LINES]]
    if len(lines) > _PROMPT_LINES:
        shown.append(f"... ({len(lines) - _PROMPT_LINES} more lines)")
    return shown


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _cut(line: str) -> str:
    return line if len(line) <= _PROMPT_WIDTH else line[: _PROMPT_WIDTH - 3] + "..."


def _attribution(image: GalleryImage) -> str:
    name, username = image.author_display_name, image.author_username
    if name and username:
        return f"{name} (@{username})"
    return name or (f"@{username}" if username else "")


async def _get(args: argparse.Namespace) -> int:
    ids: list[str] = args.ids
    for image_id in ids:
        try:
            validate_image_id(image_id)
        except MeigenError as error:
            raise CommandError(error.message) from None
    async with _session(args) as session:
        outcomes = await session.get_images(ids, return_exceptions=True)
    images = [outcome for outcome in outcomes if isinstance(outcome, GalleryImage)]
    if args.json:
        document = [unstructure_image(image) for image in images]
        if len(ids) > 1:
            _print_json(document, sys.stdout, indent=2)
        elif document:
            _print_json(document[0], sys.stdout, indent=2)
    elif images:
        _print("\n\n".join(summarize(image) for image in images), sys.stdout)
    failed = {i: o for i, o in zip(ids, outcomes, strict=True) if isinstance(o, MeigenError)}
    for failure in failed.values():
        _error(failure.message)
    return _EXIT_FAILED if failed else _EXIT_OK


# -- bulk ----------------------------------------------------------------------------------------


def read_ids(lines: Iterable[str]) -> Iterator[str]:
    """Yield the ids of `lines`, one a line, whitespace stripped and blank lines skipped.

    A generator: it reads a line only when the next id is wanted.
    """
    for line in lines:
        image_id = line.strip()
        if image_id:
            yield image_id


def _count_ids(path: str) -> int | None:
    """The ids in a regular file, read once as a stream; None for a pipe or a device."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as lines:
            return sum(1 for _ in read_ids(lines))
    except (OSError, UnicodeDecodeError):
        return None  # reading it for real reports the problem


@contextmanager
def _open_input(path: str) -> Iterator[TextIO]:
    if path == "-":
        yield sys.stdin
        return
    try:
        stream = open(path, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CommandError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    with stream:
        yield stream


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


@contextmanager
def _progress(stream: TextIO, total: int | None) -> Iterator[Callable[..., None]]:
    """Yield `advance(ok, size=0)`; it draws a rich progress bar when `stream` is a tty.

    `size` is the media bytes the image brought, shown next to the count when not zero.
    """
    if not stream.isatty():
        yield lambda ok, size=0: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Ids per second, as rich estimates it."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            shown = "-" if speed is None else f"{speed:,.0f}"
            return Text(f"{shown} ids/s", style="progress.data.speed")

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=_console(stream),
        redirect_stdout=False,
        redirect_stderr=False,
    )
    failed = 0
    media_bytes = 0
    with progress:
        task = progress.add_task("fetching", total=total)

        def advance(ok: bool, size: int = 0) -> None:
            nonlocal failed, media_bytes
            failed += not ok
            media_bytes += size
            notes = [f"{failed:,} failed"] if failed else []
            if media_bytes:
                notes.insert(0, f"{media_bytes / 1e6:,.1f} MB of media")
            description = f"fetching ({', '.join(notes)})" if notes else "fetching"
            progress.update(task, advance=1, description=description)

        yield advance


def _console(stream: TextIO) -> Console:
    from rich.console import Console

    return Console(file=cast("TextIO", _SafeStream(stream)))


def read_done_ids(path: str) -> set[str]:
    """The ids of the images already in the JSON Lines file `path`, for `bulk --resume`.

    A trailing line without its newline (a run killed mid-write) is cut off the file, so that
    appending starts on a line of its own; a missing file is no ids.
    """
    done: set[str] = set()
    try:
        with open(path, "rb+") as stream:
            # Line by line: an output of millions of images is never held whole.
            complete = 0
            for line in stream:
                if not line.endswith(b"\n"):
                    stream.truncate(complete)
                    break
                complete += len(line)
                image_id = _record_id(line)
                if image_id is not None:
                    done.add(image_id)
    except FileNotFoundError:
        return done
    except OSError as exc:
        raise CommandError(f"cannot resume from {path!r}: {exc.strerror or exc}") from None
    return done


def _record_id(line: bytes) -> str | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    image_id = record.get("id") if isinstance(record, dict) else None
    return image_id if isinstance(image_id, str) else None


_LISTED_FAILURES = 10
"""Up to this many failures are listed one a line; more are grouped by kind."""


def failure_summary(failures: Sequence[tuple[str, str, str]], done: int) -> list[str]:
    """The lines reporting `failures` (id, kind, message) out of `done` ids, for stderr.

    A few failures are listed one a line; more are grouped by kind, with a count, a few
    example ids and one message each.
    """
    lines = [f"{_PROG}: {len(failures):,} of {done:,} ids failed:"]
    if len(failures) <= _LISTED_FAILURES:
        lines.extend(f"  {image_id}: {message}" for image_id, _, message in failures)
        return lines
    groups: dict[str, list[tuple[str, str]]] = {}
    for image_id, kind, message in failures:
        groups.setdefault(kind, []).append((image_id, message))
    for kind, members in sorted(groups.items(), key=lambda item: -len(item[1])):
        examples = ", ".join(image_id for image_id, _ in members[:3])
        more = ", ..." if len(members) > 3 else ""
        lines.append(f"  {kind}: {len(members):,} ids ({examples}{more})")
        lines.append(f"    e.g. {members[0][1]}")
    return lines


def _stop_after(concurrency: int) -> int:
    # More than two full waves of requests: one network blip fails every request in flight
    # at once, and should not end a long job; the ids started after it failing too should.
    return max(20, 2 * concurrency)


def _resume_command(args: argparse.Namespace) -> str:
    argv = list(getattr(args, "argv", None) or [])
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join([_PROG, *argv])


async def _bulk(args: argparse.Namespace) -> int:
    failures: list[tuple[str, str, str]] = []
    done = written = read = skipped = 0
    stats: SessionStats | None = None
    to_stdout = args.output is None or args.output == "-"
    if args.resume and to_stdout:
        raise CommandError("--resume needs -o OUT: the file to read the done ids from")
    finished = read_done_ids(args.output) if args.resume else set()
    failed_out = _open_failed(args.failed)
    unreachable: UpstreamUnreachable | None = None
    not_attempted: list[str] = []
    with _open_input(args.file) as source, _open_output(args.output, append=args.resume) as out:

        def wanted() -> Iterator[str]:
            nonlocal read, skipped
            for image_id in read_ids(source):
                if image_id in finished:
                    skipped += 1
                    continue
                read += 1
                yield image_id

        ids = wanted()
        total = _count_ids(args.file) if args.file != "-" and sys.stderr.isatty() else None
        with _progress(sys.stderr, total) as advance:
            try:
                async with _session(args) as session:
                    # Closed on the way out, so that an error here cancels its fetches at once.
                    results: AsyncGenerator[ImageResult | MediaResult, None] = (
                        session.iter_images(
                            ids, stop_after_transport_failures=_stop_after(args.concurrency)
                        )
                        if args.media is None
                        else session.iter_media(ids, args.media)
                    )
                    async with aclosing(results):
                        async for result in results:
                            ok = result.ok
                            if isinstance(result.error, UpstreamUnreachable):
                                unreachable = result.error
                                not_attempted.append(result.id)
                                continue
                            done += 1
                            if result.image is not None:
                                problem = _write_image(
                                    out, args.output, result.image, _media_fields(result)
                                )
                                if problem is not None:
                                    failures.append((result.id, "WriteError", problem))
                                    ok = False
                                else:
                                    written += 1
                            elif result.error is not None:
                                kind = type(result.error).__name__
                                failures.append((result.id, kind, str(result.error)))
                            advance(ok, _media_bytes(result))
                    stats = session.stats
                if unreachable is not None:
                    not_attempted.extend(ids)
            except UnicodeDecodeError as exc:
                name = "stdin" if args.file == "-" else repr(args.file)
                raise CommandError(f"cannot read {name}: not UTF-8 text: {exc}") from None
            except asyncio.CancelledError:
                _flush(out, args.output)
                _write_failed(failed_out, failures, not_attempted)
                where = "stdout" if to_stdout else args.output
                _print(
                    f"{_PROG}: interrupted: {written:,} of {read:,} ids read were written to "
                    f"{where}" + (f" ({skipped:,} already there)" if skipped else ""),
                    sys.stderr,
                )
                if not to_stdout:
                    _print(f"{_PROG}: resume with: {_resume_command(args)}", sys.stderr)
                raise
        _flush(out, args.output)
    _write_failed(failed_out, failures, not_attempted)
    if unreachable is not None:
        cause = unreachable.__cause__
        reason = cause.message if isinstance(cause, MeigenError) else str(unreachable)
        _error(
            f"the gallery at {args.base_url} is unreachable ({reason}): stopped after "
            f"{_stop_after(args.concurrency)} ids in a row failed to reach it; "
            f"{len(not_attempted):,} ids were not attempted"
            + (f" (listed in {args.failed})" if args.failed else "")
        )
    if stats is not None and sys.stderr.isatty():
        # Beside the progress bar: a pipe's reader gets only the failures on stderr.
        _print(bulk_summary(done, stats), sys.stderr)
    if failures:
        for line in failure_summary(failures, done):
            _print(line, sys.stderr)
    if failures or unreachable is not None:
        return _EXIT_FAILED
    return _EXIT_OK


def bulk_summary(done: int, stats: SessionStats) -> str:
    """The line `bulk` ends with on a terminal: ids done, and what the session's counters say."""
    return (
        f"{_PROG}: {done:,} ids, {stats.requests:,} upstream requests, "
        f"{stats.cache_hits:,} cache hits, {stats.coalesced:,} coalesced, "
        f"{stats.revalidated:,} revalidated (304), {stats.refreshed:,} refreshed in the background"
    )


def _open_failed(path: str | None) -> TextIO | None:
    if path is None:
        return None
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot write {path!r}: {exc.strerror or exc}") from None


def _write_failed(
    stream: TextIO | None, failures: Sequence[tuple[str, str, str]], not_attempted: list[str]
) -> None:
    """Write the failed and not attempted ids, one a line, to `--failed`."""
    if stream is None or stream.closed:
        return
    try:
        with stream:
            for image_id, _, _ in failures:
                _print(image_id, stream)
            for image_id in not_attempted:
                _print(image_id, stream)
    except OSError as exc:
        raise CommandError(_cannot_write(stream.name, exc), _EXIT_FAILED) from None


def _media_fields(result: ImageResult | MediaResult) -> dict[str, Any] | None:
    """What bulk --media adds to an image's line: its `media` list."""
    if not isinstance(result, MediaResult):
        return None
    return {
        "media": [
            {
                "path": str(media.path),
                "bytes": media.bytes,
                "sha256": media.sha256,
                "content_type": media.content_type,
            }
            for media in result.files
        ]
    }


def _media_bytes(result: ImageResult | MediaResult) -> int:
    return sum(m.bytes for m in result.files) if isinstance(result, MediaResult) else 0


def _write_image(
    out: TextIO, path: str | None, image: GalleryImage, extra: dict[str, Any] | None = None
) -> str | None:
    """Write one JSON line; what went wrong with this image, or None.

    A record that cannot be written is reported and the run goes on. A stream that cannot be
    written to (a full disk) stops the run: every record after it would fail the same way.
    """
    try:
        _print_json({**unstructure_image(image), **(extra or {})}, out)
    except BrokenPipeError:
        raise  # the reader has gone: main() exits quietly
    except OSError as exc:
        raise CommandError(_cannot_write(path, exc), _EXIT_FAILED) from None
    except (UnicodeError, ValueError, TypeError) as exc:
        return f"cannot write the image: {exc}"
    return None


def _flush(out: TextIO, path: str | None) -> None:
    try:
        out.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise CommandError(_cannot_write(path, exc), _EXIT_FAILED) from None


# -- search --------------------------------------------------------------------------------------


def hit_line(hit: SearchHit) -> str:
    """One readable line for a search hit: id, model, author, likes, the prompt's first line."""
    author = f"@{hit.author_username}" if hit.author_username else hit.author_display_name or "-"
    first = next((line.strip() for line in hit.text.splitlines() if line.strip()), "")
    if len(first) > 80:
        first = first[:79] + "…"
    return f"{hit.id}  {hit.model or '-'}  {author}  {hit.likes:,} likes  {first}"


async def _search(args: argparse.Namespace) -> int:
    try:
        async with _session(args) as session:
            hits = session.iter_search(args.query, max_results=args.max, page_size=args.limit)
            async with aclosing(hits):
                async for hit in hits:
                    if args.ids:
                        _print(hit.id, sys.stdout)
                    elif args.json:
                        _print_json(converter.unstructure(hit), sys.stdout)
                    else:
                        _print(hit_line(hit), sys.stdout)
    except ValueError as exc:  # InvalidQuery: before any request
        raise CommandError(str(exc)) from None
    except MeigenError as error:
        raise CommandError(error.message, _EXIT_FAILED) from None
    return _EXIT_OK


# -- download ------------------------------------------------------------------------------------


async def _download(args: argparse.Namespace) -> int:
    ids: list[str] = args.ids
    for image_id in ids:
        try:
            validate_image_id(image_id)
        except MeigenError as error:
            raise CommandError(error.message) from None
    failed = 0
    async with _session(args) as session:
        results = session.iter_media(ids, args.output)
        async with aclosing(results):
            async for result in results:
                for media in result.files:
                    _print(f"{media.path}\t{media.bytes}\t{media.content_type}", sys.stdout)
                if result.error is not None:
                    failed += 1
                    _error(result.error.message)
    return _EXIT_FAILED if failed else _EXIT_OK


# -- serve ---------------------------------------------------------------------------------------


def _load_gallery(path: str) -> list[dict[str, Any]]:
    """The `data` objects of a JSON Lines file, or one line saying what is wrong with it."""
    try:
        return load_jsonl(path)
    except OSError as exc:
        raise CommandError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path}: not UTF-8 text: {exc.reason}") from None
    except ValueError as exc:
        raise CommandError(str(exc)) from None


_IDS_SHOWN = 5


async def _serve(args: argparse.Namespace) -> int:
    images = _load_gallery(args.data) if args.data is not None else sample_images()
    source = args.data if args.data is not None else "the bundled sample"
    gallery = FakeGallery(images, port=args.port)
    if args.list:
        for image_id in gallery.ids:
            _print(image_id, sys.stdout)
        return _EXIT_OK
    try:
        await gallery.start()
    except OSError as exc:
        await gallery.close()
        raise CommandError(
            f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}"
        ) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Both signals go through the loop: Python's own KeyboardInterrupt never comes when SIGINT
    # was ignored at start (a background job of a script, nohup, some CI runners), and a
    # handler installed here replaces the ignoring. Installed before the URL is printed, so a
    # script that has read the URL can stop it. They need Unix and the main thread; elsewhere
    # Ctrl-C still arrives as KeyboardInterrupt, which main() turns into exit status 0.
    handled: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    try:
        _print(gallery.url, sys.stdout)
        sys.stdout.flush()
        example = f"{gallery.url}/api/images/{gallery.ids[0]}" if gallery.ids else gallery.url
        _print(
            f"{_PROG}: serving {len(gallery.ids)} images from {source}; "
            f"try {example}; Ctrl-C to stop",
            sys.stderr,
        )
        shown = gallery.ids[:_IDS_SHOWN]
        more = len(gallery.ids) - len(shown)
        _print(
            f"{_PROG}: ids: {', '.join(shown)}"
            + (f" and {more} more ('{_PROG} serve --list' lists them all)" if more else ""),
            sys.stderr,
        )
        sys.stderr.flush()
        await stop.wait()
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        await gallery.close()
    return _EXIT_OK


# -- demo ----------------------------------------------------------------------------------------


@attrs.frozen
class DemoReport:
    """What the demo's bulk fetch did."""

    requested: int
    """Ids in one pass, duplicates included."""
    calls: int = attrs.field(default=0, kw_only=True)
    """Every `get_image` call of the whole scenario: both passes and the burst."""
    distinct: int = attrs.field(default=0, kw_only=True)
    """Distinct ids asked for, the missing one included."""
    missing: str = attrs.field(default="", kw_only=True)
    """The id asked for on purpose that the gallery does not have."""
    fetched: int
    """Images returned over the second pass, duplicates included."""
    errors: dict[str, str]
    """The ids that failed, with their error messages."""
    requests: int
    """Upstream requests the gallery received."""
    cache_hits: int
    """Calls answered from the cache."""
    coalesced: int
    """Calls that joined a request already in flight."""
    seconds: float
    """Wall time of the whole scenario."""
    plain_prompts: int
    """Distinct images whose prompt is plain text."""
    json_prompts: int
    """Distinct images whose prompt is JSON."""
    repaired_prompts: int
    """Distinct images whose JSON prompt needed repairing to parse."""
    revalidated: int = 0
    """Expired images a 304 renewed."""
    refreshed: int = 0
    """Background refreshes done (stale-while-revalidate)."""


_BURST = 20
_LATER = 3601.0


class _DemoClock:
    """The monotonic clock, which the demo can move an hour ahead to show what expiry does."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.ahead


async def run_demo(*, seed: int = 7) -> DemoReport:
    """Serve the bundled sample on loopback and bulk-fetch it the way a busy bot would.

    The ids come with duplicates and one id that does not exist; a burst of handlers asks
    for the same popular image at once; then the whole list is asked for again; then, an hour
    later (the cache's clock moved ahead), a burst asks for the popular image once more: it is
    answered at once from the expired copy while one background request revalidates it.
    """
    async with FakeGallery.sample(delay=0.02) as gallery:
        missing = "1999999999999999999"
        ids = gallery.ids * 2 + [missing]
        random.Random(seed).shuffle(ids)
        clock = _DemoClock()
        started = time.perf_counter()
        async with GallerySession(
            gallery.url,
            concurrency=8,
            cache=MemoryCache(4096, timer=clock),
            stale_while_revalidate=_LATER,
        ) as session:
            popular = gallery.ids[0]
            burst = asyncio.gather(*(session.get_image(popular) for _ in range(_BURST)))
            await session.get_images(ids, return_exceptions=True)
            await burst
            # A second pass, as a bot asked again later: answered from the cache.
            outcomes = await session.get_images(ids, return_exceptions=True)
            clock.ahead = _LATER  # an hour on: every image has expired
            await asyncio.gather(*(session.get_image(popular) for _ in range(_BURST)))
            for _ in range(200):  # the background refresh: one request, bounded wait
                if session.stats.refreshed:
                    break
                await asyncio.sleep(0.01)
            stats = session.stats
        seconds = time.perf_counter() - started
    errors = {i: str(o) for i, o in zip(ids, outcomes, strict=True) if isinstance(o, MeigenError)}
    distinct = {o.id: o for o in outcomes if isinstance(o, GalleryImage)}.values()
    kinds = Counter(image.prompt.kind for image in distinct)
    return DemoReport(
        requested=len(ids),
        calls=2 * len(ids) + 2 * _BURST,
        distinct=len(set(ids)),
        missing=missing,
        fetched=sum(isinstance(o, GalleryImage) for o in outcomes),
        errors=errors,
        requests=stats.requests,
        cache_hits=stats.cache_hits,
        coalesced=stats.coalesced,
        seconds=seconds,
        plain_prompts=kinds[PromptKind.PLAIN],
        json_prompts=kinds[PromptKind.JSON],
        repaired_prompts=sum(image.prompt.repaired for image in distinct),
        revalidated=stats.revalidated,
        refreshed=stats.refreshed,
    )


def demo_story(report: DemoReport) -> list[str]:
    """What the demo did, as sentences: calls against requests, what was saved, the prompts."""
    saved = report.calls - report.requests
    lines = [
        f"{report.calls} get_image calls ({report.requested} ids a pass, twice, and two bursts "
        f"of {_BURST} for one popular image) were answered with {report.requests} upstream "
        f"requests: one per distinct id ({report.distinct}), and one to revalidate, in "
        f"{report.seconds:.2f} s.",
        f"{saved} requests saved: the cache answered {report.cache_hits} calls, "
        f"{report.coalesced} joined a request already in flight for their id, and "
        f"{max(saved - report.cache_hits - report.coalesced, 0)} were duplicates within one "
        "get_images call, fetched once.",
        f"An hour later the popular image had expired: the second burst was answered at once "
        f"from the expired copy, while {report.refreshed} background refresh asked the gallery "
        f"whether it had changed; {report.revalidated} answer was 304 Not Modified, no body "
        "sent.",
    ]
    for image_id, message in report.errors.items():
        expected = "as expected" if image_id == report.missing else "unexpectedly"
        lines.append(f"The id {image_id} failed {expected}: {message}.")
    images = report.plain_prompts + report.json_prompts
    lines.append(
        f"Prompts of the {images} images: {report.plain_prompts} plain text, "
        f"{report.json_prompts} JSON, of which {report.repaired_prompts} needed repairing "
        "to parse."
    )
    return lines


def _print_demo(report: DemoReport) -> None:
    console = _console(sys.stdout)
    console.print(
        "meigen-async demo: the bundled sample gallery on 127.0.0.1, asked the way a busy bot "
        "would: every id twice with duplicates, one id that does not exist, a burst for one "
        "popular image.",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )
    for line in demo_story(report):
        console.print(f"- {line}", soft_wrap=True, markup=False, highlight=False)


async def _demo(args: argparse.Namespace) -> int:
    _print_demo(await run_demo())
    return _EXIT_OK


# -- Arguments -----------------------------------------------------------------------------------


def base_url_problem(value: str) -> str | None:
    """What keeps `value` from being a `GallerySession` base URL, in plain words; None if nothing.

    It must be an absolute `http://` or `https://` URL with a host, a port (if any) from 0 to
    65535, and no query or fragment: the session appends `/api/images/<id>` to it.
    """
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        return f"expected an http:// or https:// URL, got {value!r}: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an http:// or https:// URL, got {value!r}"
    if any(char.isspace() or not char.isprintable() for char in value):
        return f"a URL cannot hold spaces or control characters, got {value!r}"
    try:
        parts.port  # noqa: B018 - reading the port is what checks it
    except ValueError:
        return f"expected a port from 0 to 65535, got {value!r}"
    if parts.query or parts.fragment:
        return f"a base URL cannot have a query or a fragment, got {value!r}"
    try:
        image_urls(value)  # the session's own reading of it
    except ValueError as exc:
        return f"expected an http:// or https:// URL, got {value!r}: {exc}"
    return None


def _base_url(value: str) -> str:
    problem = base_url_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return number


def _int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            bounds = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"expected a whole number {bounds}, got {value!r}")
        return number

    return parse


def default_cache_path() -> Path:
    """Where the CLI keeps its SQLite cache: `$XDG_CACHE_HOME/meigen-async/cache.sqlite`.

    Without `XDG_CACHE_HOME` (or with a relative one, which the spec says to ignore), under
    `~/.cache`.
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "meigen-async" / "cache.sqlite"


def _open_cache(args: argparse.Namespace) -> SQLiteCache | None:
    """The SQLite cache the options ask for, or None (`--no-cache`, or no place for it)."""
    if getattr(args, "no_cache", True):
        return None
    path = Path(args.cache).expanduser() if args.cache is not None else default_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _print(
            f"{_PROG}: warning: cannot make {str(path.parent)!r} ({exc.strerror or exc}): "
            "running without the cache",
            sys.stderr,
        )
        return None
    return SQLiteCache(path)


@asynccontextmanager
async def _session(args: argparse.Namespace) -> AsyncIterator[GallerySession]:
    """The session the options ask for, with the SQLite cache behind it unless `--no-cache`."""
    cache = _open_cache(args)
    try:
        session = GallerySession(
            args.base_url,
            timeout=args.timeout,
            retry=RetryPolicy(max_retries=args.retries),
            concurrency=getattr(args, "concurrency", 16),
            rate_limit=getattr(args, "rate_limit", None),
            cache=cache,
            **_media_options(args),
        )
    except ValueError as exc:  # the options are checked when parsed; this is a backstop
        if cache is not None:
            await cache.close()
        raise CommandError(str(exc)) from None
    try:
        async with session:
            yield session
    finally:
        if cache is not None:
            await cache.close()


def _media_options(args: argparse.Namespace) -> dict[str, Any]:
    hosts = getattr(args, "media_hosts", None)
    return {} if hosts is None else {"media_hosts": hosts}


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports a bad argument in one line, as every other error is."""

    def error(self, message: str) -> NoReturn:
        """Print one `meigen-async: error: ...` line and exit with status 2."""
        _error(f"{message} (see '{self.prog} --help')")
        self.exit(_EXIT_USAGE)


_DESCRIPTION = """\
Fetch images from MeiGen's public gallery (GET /api/images/:id), in bulk or one by one,
or serve a local fake gallery to test against."""

_EXAMPLES = """\
examples (offline, against the bundled sample gallery):
  meigen-async serve --port 8080 &
  export MEIGEN_BASE_URL=http://127.0.0.1:8080
  meigen-async get 2013572250852104677
  meigen-async get --json 2013572250852104677 2014980103401885690
  meigen-async serve --list > ids.txt && meigen-async bulk ids.txt -o images.jsonl
  meigen-async search "neon city" --ids --max 500 | meigen-async bulk - -o neon.jsonl
  meigen-async demo

Without --base-url or $MEIGEN_BASE_URL, get and bulk ask the real service.

Run 'meigen-async COMMAND --help' for a command's options."""

_GET_EXAMPLES = """\
examples (start 'meigen-async serve --port 8080' first to try them offline):
  meigen-async get --base-url http://127.0.0.1:8080 2013572250852104677
  meigen-async get --base-url http://127.0.0.1:8080 --json 2014980103401885690 > image.json
  meigen-async get 2009629483448627597    # the real service

exit status: 0 when every image was fetched, 1 when one failed, 2 for bad input."""

_BULK_EXAMPLES = """\
examples (start 'meigen-async serve --port 8080' first to try them offline):
  meigen-async serve --list > ids.txt
  meigen-async bulk --base-url http://127.0.0.1:8080 ids.txt -o images.jsonl
  cut -f1 export.tsv | meigen-async bulk - --concurrency 32 --rate-limit 20 > images.jsonl

The ids are read as a stream, one a line (blank lines skipped), so a file of millions of ids
runs in flat memory. Each image is written as one JSON line as soon as it arrives, in
completion order. Failed ids are reported on stderr at the end (grouped by kind when there
are many), and written to --failed. --resume skips the ids already in OUT and appends, so an
interrupted job (Ctrl-C, a kill) carries on where it stopped. When the gallery cannot be
reached for 20 ids in a row (2 x --concurrency when more), bulk stops at once.

exit status: 0 when every id was fetched, 1 when one failed, 2 for bad input."""

_SEARCH_EXAMPLES = """\
examples:
  meigen-async search "cherry blossom"
  meigen-async search "neon city" --json --max 50 > hits.jsonl
  meigen-async search "neon city" --ids --max 500 | meigen-async bulk - -o neon.jsonl

Pages through GET /api/search by offset, each id once, until the results end or --max.
The service does not document its search, limits it per address, and may change it.

exit status: 0 when the search ran, 1 when it failed, 2 for bad input."""

_SERVE_EXAMPLES = """\
examples:
  meigen-async serve
  meigen-async serve --port 8080 --data my-gallery.jsonl
  meigen-async serve --list

Prints the URL to stdout, then serves GET /api/images/:id on 127.0.0.1 until Ctrl-C.
--data takes a JSON Lines file, one endpoint 'data' object (with an 'id') a line.

exit status: 0 when stopped by SIGINT (Ctrl-C) or SIGTERM, also when started with SIGINT
ignored; 2 for bad input."""

_DEMO_EXAMPLES = """\
example:
  meigen-async demo

Starts the bundled sample gallery on 127.0.0.1, fetches it the way a busy bot would
(duplicates, a missing id, a burst of calls for one popular image, a second pass from the
cache) and shows what the session did. Sends nothing to the real service."""


def _add_media_host(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--media-host",
        dest="media_hosts",
        action="append",
        metavar="HOST",
        help="a host media may be downloaded from; repeatable, replaces the defaults "
        "(images.meigen.ai, pbs.twimg.com)",
    )


_DOWNLOAD_EXAMPLES = """\
examples:
  meigen-async download 2009629483448627597 -o media/
  meigen-async download 2009629483448627597 2013572250852104677

Prints one line per file (path, bytes, type). Files already complete (see DIR/{id}/manifest.json)
are not downloaded again. Only http(s) URLs on the media hosts are requested.

exit status: 0 when every file was downloaded, 1 when one failed, 2 for bad input."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `meigen-async` and its commands."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=_PROG, description=_DESCRIPTION, epilog=_EXAMPLES, formatter_class=formatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    remote = _Parser(add_help=False)
    remote.add_argument(
        "--base-url",
        type=_base_url,
        default=None,  # resolved in main(), so that a bad $MEIGEN_BASE_URL is named as such
        metavar="URL",
        help=f"the gallery to ask (default: ${BASE_URL_ENV}, else {DEFAULT_BASE_URL})",
    )
    remote.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="time allowed for one request (default: 10)",
    )
    remote.add_argument(
        "--retries",
        type=_int_at_least(0, _MAX_RETRIES),
        default=3,
        metavar="N",
        help="retries of a request that failed in a retryable way (default: 3)",
    )
    remote.add_argument(
        "--cache",
        metavar="PATH",
        default=None,
        help="the SQLite cache file (default: $XDG_CACHE_HOME/meigen-async/cache.sqlite, "
        "else ~/.cache/meigen-async/cache.sqlite)",
    )
    remote.add_argument(
        "--no-cache",
        action="store_true",
        help="keep nothing between runs: no SQLite cache",
    )

    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    get = commands.add_parser(
        "get",
        parents=[remote],
        help="show one or more images",
        description="Show gallery images: a summary each, or their JSON.",
        epilog=_GET_EXAMPLES,
        formatter_class=formatter,
    )
    get.add_argument("ids", nargs="+", metavar="ID", help="a gallery image id")
    get.add_argument(
        "--json",
        action="store_true",
        help="print the images as JSON: an object for one id, a list for several",
    )
    get.set_defaults(run=_get)

    bulk = commands.add_parser(
        "bulk",
        parents=[remote],
        help="fetch many ids from a file or stdin into JSON Lines",
        description="Fetch every id of FILE (or stdin) and write the images as JSON Lines.",
        epilog=_BULK_EXAMPLES,
        formatter_class=formatter,
    )
    bulk.add_argument("file", metavar="FILE", help="ids, one a line; '-' reads stdin")
    bulk.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout")
    bulk.add_argument(
        "--concurrency",
        type=_int_at_least(1),
        default=16,
        metavar="N",
        help="most requests in flight at once (default: 16)",
    )
    bulk.add_argument(
        "--rate-limit",
        type=_positive_float,
        default=None,
        metavar="R",
        help="most requests per second (default: no limit)",
    )
    bulk.add_argument(
        "--resume",
        action="store_true",
        help="skip the ids already in OUT (a trailing partial line is dropped) and append",
    )
    bulk.add_argument(
        "--failed",
        metavar="FAILED.txt",
        help="write the ids that failed or were not attempted here, one a line",
    )
    bulk.add_argument(
        "--media",
        metavar="DIR",
        help="also download each image's media files into DIR/{id}/{index}{ext}",
    )
    _add_media_host(bulk)
    bulk.set_defaults(run=_bulk)

    download = commands.add_parser(
        "download",
        parents=[remote],
        help="download the media files of a few images",
        description="Download the media files of each ID into DIR/{id}/{index}{ext}.",
        epilog=_DOWNLOAD_EXAMPLES,
        formatter_class=formatter,
    )
    download.add_argument("ids", nargs="+", metavar="ID", help="a gallery image id")
    download.add_argument(
        "-o", "--output", metavar="DIR", default="media", help="where to write (default: media)"
    )
    _add_media_host(download)
    download.set_defaults(run=_download)

    search = commands.add_parser(
        "search",
        parents=[remote],
        help="find gallery ids by words of their prompts or authors",
        description="Search the gallery (GET /api/search) and list the hits.",
        epilog=_SEARCH_EXAMPLES,
        formatter_class=formatter,
    )
    search.add_argument("query", metavar="QUERY", help="the words to search for")
    search.add_argument(
        "--limit",
        type=_int_at_least(1, 20),
        default=20,
        metavar="N",
        help="results a page, 1 to 20 (default: 20)",
    )
    search.add_argument(
        "--max",
        type=_int_at_least(1),
        default=100,
        metavar="M",
        help="the most hits to list (default: 100)",
    )
    shown = search.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="one JSON object a hit (JSON Lines)")
    shown.add_argument("--ids", action="store_true", help="one id a line, for 'bulk -'")
    search.set_defaults(run=_search)

    serve = commands.add_parser(
        "serve",
        help="serve a fake gallery on 127.0.0.1 for testing",
        description="Serve a FakeGallery on 127.0.0.1 until interrupted.",
        epilog=_SERVE_EXAMPLES,
        formatter_class=formatter,
    )
    serve.add_argument(
        "--port",
        type=_int_at_least(0, 65535),
        default=0,
        metavar="P",
        help="the port to listen on (default: 0, a free one)",
    )
    serve.add_argument(
        "--data", metavar="FILE.jsonl", help="serve these images (default: the bundled sample)"
    )
    serve.add_argument(
        "--list", action="store_true", help="print the ids it would serve, one a line, and exit"
    )
    serve.set_defaults(run=_serve)

    demo = commands.add_parser(
        "demo",
        help="bulk-fetch the bundled sample gallery on loopback and show the figures",
        description="Bulk-fetch the bundled sample gallery on 127.0.0.1 and show the figures.",
        epilog=_DEMO_EXAMPLES,
        formatter_class=formatter,
    )
    demo.set_defaults(run=_demo)
    return parser


# -- Entry point ---------------------------------------------------------------------------------


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at devnull so that the exit flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured in a test)
        pass


def _default_base_url(parser: argparse.ArgumentParser) -> str:
    value = os.environ.get(BASE_URL_ENV)
    if not value:
        return DEFAULT_BASE_URL
    problem = base_url_problem(value)
    if problem is not None:
        parser.error(f"${BASE_URL_ENV}: {problem}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: `sys.argv[1:]`); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if hasattr(args, "base_url") and args.base_url is None:
        args.base_url = _default_base_url(parser)
    if args.command in ("demo",) or (args.command == "bulk" and sys.stderr.isatty()):
        try:
            import rich  # noqa: F401
        except ModuleNotFoundError:
            _error("this command needs rich: pip install 'meigen-async[cli]'")
            return _EXIT_USAGE
    try:
        status: int = asyncio.run(args.run(args))
    except CommandError as error:
        _error(error.message)
        return error.status
    except KeyboardInterrupt:
        if args.command == "serve":
            return _EXIT_OK
        _error("interrupted")
        return _EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return _EXIT_FAILED
    return status


if __name__ == "__main__":
    sys.exit(main())
