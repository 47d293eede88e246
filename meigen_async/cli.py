"""The `meigen-async` command line: `get`, `bulk`, `serve` and `demo`.

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
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import aclosing, contextmanager, suppress
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, cast
from urllib.parse import urlsplit

import attrs

from ._protocol import validate_image_id
from ._transport import image_urls
from ._version import __version__
from .errors import MeigenError
from .models import GalleryImage, unstructure_image
from .prompt import PromptKind
from .retry import RetryPolicy
from .session import DEFAULT_BASE_URL, GallerySession
from .testing import FakeGallery, load_jsonl, sample_images

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "BASE_URL_ENV",
    "DemoReport",
    "base_url_problem",
    "demo_story",
    "main",
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
def _open_output(path: str | None) -> Iterator[TextIO]:
    if path is None or path == "-":
        yield sys.stdout
        return
    try:
        stream = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed below
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
def _progress(stream: TextIO, total: int | None) -> Iterator[Callable[[bool], None]]:
    """Yield `advance(ok)`; it draws a rich progress bar when `stream` is a terminal."""
    if not stream.isatty():
        yield lambda ok: None
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
    with progress:
        task = progress.add_task("fetching", total=total)

        def advance(ok: bool) -> None:
            nonlocal failed
            if ok:
                progress.advance(task)
            else:
                failed += 1
                progress.update(task, advance=1, description=f"fetching ({failed:,} failed)")

        yield advance


def _console(stream: TextIO) -> Console:
    from rich.console import Console

    return Console(file=cast("TextIO", _SafeStream(stream)))


async def _bulk(args: argparse.Namespace) -> int:
    failures: list[tuple[str, str]] = []
    done = 0
    with _open_input(args.file) as source, _open_output(args.output) as out:
        total = _count_ids(args.file) if args.file != "-" and sys.stderr.isatty() else None
        with _progress(sys.stderr, total) as advance:
            try:
                async with _session(args) as session:
                    # Closed on the way out, so that an error here cancels its fetches at once.
                    results = session.iter_images(read_ids(source))
                    async with aclosing(results):
                        async for result in results:
                            done += 1
                            ok = result.ok
                            if result.image is not None:
                                problem = _write_image(out, args.output, result.image)
                                if problem is not None:
                                    failures.append((result.id, problem))
                                    ok = False
                            else:
                                failures.append((result.id, str(result.error)))
                            advance(ok)
            except UnicodeDecodeError as exc:
                name = "stdin" if args.file == "-" else repr(args.file)
                raise CommandError(f"cannot read {name}: not UTF-8 text: {exc}") from None
        _flush(out, args.output)
    if failures:
        _print(f"{_PROG}: {len(failures):,} of {done:,} ids failed:", sys.stderr)
        for image_id, message in failures:
            _print(f"  {image_id}: {message}", sys.stderr)
        return _EXIT_FAILED
    return _EXIT_OK


def _write_image(out: TextIO, path: str | None, image: GalleryImage) -> str | None:
    """Write one JSON line; what went wrong with this image, or None.

    A record that cannot be written is reported and the run goes on. A stream that cannot be
    written to (a full disk) stops the run: every record after it would fail the same way.
    """
    try:
        _print_json(unstructure_image(image), out)
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


_BURST = 20


async def run_demo(*, seed: int = 7) -> DemoReport:
    """Serve the bundled sample on loopback and bulk-fetch it the way a busy bot would.

    The ids come with duplicates and one id that does not exist; a burst of handlers asks
    for the same popular image at once; then the whole list is asked for again.
    """
    async with FakeGallery.sample(delay=0.02) as gallery:
        missing = "1999999999999999999"
        ids = gallery.ids * 2 + [missing]
        random.Random(seed).shuffle(ids)
        started = time.perf_counter()
        async with GallerySession(gallery.url, concurrency=8) as session:
            popular = gallery.ids[0]
            burst = asyncio.gather(*(session.get_image(popular) for _ in range(_BURST)))
            await session.get_images(ids, return_exceptions=True)
            await burst
            # A second pass, as a bot asked again later: answered from the cache.
            outcomes = await session.get_images(ids, return_exceptions=True)
            stats = session.stats
        seconds = time.perf_counter() - started
    errors = {i: str(o) for i, o in zip(ids, outcomes, strict=True) if isinstance(o, MeigenError)}
    distinct = {o.id: o for o in outcomes if isinstance(o, GalleryImage)}.values()
    kinds = Counter(image.prompt.kind for image in distinct)
    return DemoReport(
        requested=len(ids),
        calls=2 * len(ids) + _BURST,
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
    )


def demo_story(report: DemoReport) -> list[str]:
    """What the demo did, as sentences: calls against requests, what was saved, the prompts."""
    saved = report.calls - report.requests
    lines = [
        f"{report.calls} get_image calls ({report.requested} ids a pass, twice, and a burst of "
        f"{_BURST} for one popular image) were answered with {report.requests} upstream "
        f"requests, one per distinct id ({report.distinct}), in {report.seconds:.2f} s.",
        f"{saved} requests saved: the cache answered {report.cache_hits} calls, "
        f"{report.coalesced} joined a request already in flight for their id, and "
        f"{max(saved - report.cache_hits - report.coalesced, 0)} were duplicates within one "
        "get_images call, fetched once.",
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


def _session(args: argparse.Namespace) -> GallerySession:
    try:
        return GallerySession(
            args.base_url,
            timeout=args.timeout,
            retry=RetryPolicy(max_retries=args.retries),
            concurrency=getattr(args, "concurrency", 16),
            rate_limit=getattr(args, "rate_limit", None),
        )
    except ValueError as exc:  # the options are checked when parsed; this is a backstop
        raise CommandError(str(exc)) from None


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
completion order. Failed ids are listed on stderr at the end.

exit status: 0 when every id was fetched, 1 when one failed, 2 for bad input."""

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
    bulk.set_defaults(run=_bulk)

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
