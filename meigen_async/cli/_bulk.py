"""The `bulk` command: ids in, JSON Lines out, with `--resume`, `--failed` and the failures."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import stat
import sys
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing, contextmanager, suppress
from typing import Any, TextIO

from .._core import unreachable_after as _stop_after
from ..errors import MeigenError, UpstreamUnreachable
from ..media import MediaResult
from ..models import (
    GalleryImage,
    ImageResult,
    SessionStats,
    unstructure_image,
)
from ._failures import FailedIdsWriter, FailureTally
from ._input import count_ids, open_ids
from ._options import (
    _session,
    cli_message,
)
from ._output import (
    _EXIT_FAILED,
    _EXIT_OK,
    _PROG,
    CommandError,
    Interrupted,
    _cannot_write,
    _error,
    _flush,
    _open_output,
    _print,
    _print_json,
)
from ._progress import _progress


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


def _resume_command(args: argparse.Namespace) -> str:
    argv = list(getattr(args, "argv", None) or [])
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join([_PROG, *argv])


async def _bulk(args: argparse.Namespace) -> int:
    with _sigterm_as_interrupt():
        return await _run_bulk(args)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Handle SIGTERM (`kill`, a process manager, `timeout`) as Ctrl-C in the body.

    The task is cancelled, as asyncio cancels it for Ctrl-C, so that the job reports where it
    stopped and writes `--failed` (then raises `Interrupted`), and main() exits with Ctrl-C's
    status; cancelled before the job could report, KeyboardInterrupt goes to main(). Where
    the loop takes no signal handlers (Windows, a thread other than the main one), SIGTERM
    keeps its default action.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    terminated = active = False

    def terminate() -> None:
        nonlocal terminated
        # A signal handled after the body ended must not cancel what runs after it.
        if active and task is not None:
            terminated = True
            task.cancel()

    with suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGTERM, terminate)
        active = True
    try:
        yield
    except asyncio.CancelledError:
        if terminated:
            raise KeyboardInterrupt from None
        raise
    finally:
        if active:
            active = False
            loop.remove_signal_handler(signal.SIGTERM)


async def _run_bulk(args: argparse.Namespace) -> int:
    failures = FailureTally()
    done = written = read = skipped = not_attempted = 0
    stats: SessionStats | None = None
    to_stdout = args.output is None or args.output == "-"
    if args.resume and to_stdout:
        raise CommandError("--resume needs -o OUT: the file to read the done ids from")
    _refuse_one_file_twice(args)
    finished = read_done_ids(args.output) if args.resume else set()
    unreachable: UpstreamUnreachable | None = None
    with (
        _failed_ids(args.failed) as failed,
        open_ids(args.file) as source,
        _open_output(args.output, append=args.resume) as out,
    ):

        def wanted() -> Iterator[str]:
            nonlocal read, skipped
            for image_id in source:
                if image_id in finished:
                    skipped += 1
                    continue
                read += 1
                yield image_id

        def fail(image_id: str, kind: str, message: str) -> None:
            failures.add(image_id, kind, message)
            _add_failed(failed, image_id, args.failed)

        ids = wanted()
        total = _total(args, finished)
        try:
            with _progress(sys.stderr, total) as progress:
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
                            if isinstance(result.error, UpstreamUnreachable):
                                unreachable = result.error
                                not_attempted += 1
                                _add_failed(failed, result.id, args.failed)
                                continue
                            done += 1
                            # An image whose media did not all download is a failure, and
                            # is not written: OUT holds what is done, so --resume retries it.
                            problem = _problem(result)
                            if problem is None and result.image is not None:
                                problem = _write_image(
                                    out, args.output, result.image, _media_fields(result)
                                )
                            if problem is None:
                                written += 1
                            else:
                                fail(result.id, *problem)
                            progress.advance(problem is None, _media_bytes(result))
                    stats = session.stats
                if unreachable is not None:
                    progress.end("stopped")
                    for image_id in ids:
                        not_attempted += 1
                        _add_failed(failed, image_id, args.failed)
        except asyncio.CancelledError:
            # After the bar's last frame: each line of the report on a line of its own.
            _flush(out, args.output)
            _flush_failed(failed, args.failed)
            where = "stdout" if to_stdout else args.output
            _print(
                f"{_PROG}: interrupted: {written:,} of {read:,} ids read were written to "
                f"{where}" + (f" ({skipped:,} already there)" if skipped else ""),
                sys.stderr,
            )
            if failures.total:
                for line in failures.summary(done):
                    _print(line, sys.stderr)
            if not to_stdout:
                _print(f"{_PROG}: resume with: {_resume_command(args)}", sys.stderr)
            raise Interrupted from None
        _flush(out, args.output)
    if unreachable is not None:
        cause = unreachable.__cause__
        reason = cause.message if isinstance(cause, MeigenError) else str(unreachable)
        _error(
            f"the gallery at {args.base_url} is unreachable ({reason}): stopped after "
            f"{_stop_after(args.concurrency)} ids in a row failed to reach it; "
            f"{not_attempted:,} ids were not attempted"
            + (f" (listed in {args.failed})" if args.failed else "")
        )
    if stats is not None and sys.stderr.isatty():
        # Beside the progress bar: a pipe's reader gets only the failures on stderr.
        _print(bulk_summary(done, stats), sys.stderr)
    if failures.total:
        for line in failures.summary(done):
            _print(line, sys.stderr)
    if failures.total or unreachable is not None:
        return _EXIT_FAILED
    return _EXIT_OK


def _total(args: argparse.Namespace, finished: set[str]) -> int | None:
    """The ids the bar counts to: FILE's, less those done; None if not drawn or not known."""
    if args.file == "-" or not sys.stderr.isatty():
        return None
    return count_ids(args.file, skip=finished)


def _problem(result: ImageResult | MediaResult) -> tuple[str, str] | None:
    """What failed for `result` (its error's kind and message), or None.

    For `bulk --media`, a failed media file fails its image, though the image was fetched.
    """
    if result.error is None:
        return None
    return type(result.error).__name__, cli_message(result.error)


def bulk_summary(done: int, stats: SessionStats) -> str:
    """The line `bulk` ends with on a terminal: ids done, and what the session's counters say."""
    return (
        f"{_PROG}: {done:,} ids, {stats.requests:,} upstream requests, "
        f"{stats.cache_hits:,} cache hits, {stats.coalesced:,} coalesced, "
        f"{stats.revalidated:,} revalidated (304), {stats.refreshed:,} refreshed in the background"
    )


@contextmanager
def _failed_ids(path: str | None) -> Iterator[FailedIdsWriter]:
    """The `--failed` file, opened (emptied) now and written as ids fail; discarded without."""
    if path is None:
        yield FailedIdsWriter(len)
        return
    try:
        # Unbuffered: the writer hands it whole lines only, and nothing sits in a buffer.
        stream = open(path, "wb", buffering=0)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CommandError(f"cannot write {path!r}: {exc.strerror or exc}") from None
    with stream:
        writer = FailedIdsWriter(stream.write)
        try:
            yield writer
        finally:
            # On every way out: the end, Ctrl-C, SIGTERM, an error.
            _flush_failed(writer, path)


def _add_failed(failed: FailedIdsWriter, image_id: str, path: str | None) -> None:
    try:
        failed.add(image_id)
    except OSError as exc:
        raise CommandError(_cannot_write(path, exc), _EXIT_FAILED) from None


def _flush_failed(failed: FailedIdsWriter, path: str | None) -> None:
    try:
        failed.flush()
    except OSError as exc:
        raise CommandError(_cannot_write(path, exc), _EXIT_FAILED) from None


def _refuse_one_file_twice(args: argparse.Namespace) -> None:
    """Refuse FILE, OUT and FAILED.txt naming one file: opening one for writing empties it.

    `bulk failed.txt --failed failed.txt` would empty the list before reading it.
    """
    named = [("FILE", args.file), ("-o", args.output), ("--failed", args.failed)]
    seen: dict[tuple[int, int], str] = {}
    for option, path in named:
        identity = _identity(path, stdin=option == "FILE")
        if identity is None:
            continue
        if identity in seen:
            raise CommandError(
                f"{seen[identity]} and {option} are the same file ({path!r}): writing one "
                "would lose the other; give them different files"
            )
        seen[identity] = option


def _identity(path: str | None, *, stdin: bool) -> tuple[int, int] | None:
    """The device and inode of the regular file `path` names, else None.

    `-` is stdin (a file redirected to it) where `stdin` is true; elsewhere it is stdout, whose
    file the shell has already opened for writing.
    """
    if path is None or (path == "-" and not stdin):
        return None
    try:
        found = os.fstat(sys.stdin.fileno()) if path == "-" else os.stat(path)
    except (OSError, ValueError, AttributeError):  # missing; stdin closed or not a real file
        return None
    if not stat.S_ISREG(found.st_mode):
        return None  # a terminal, a pipe, /dev/null: written and read without harm
    return found.st_dev, found.st_ino


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
) -> tuple[str, str] | None:
    """Write one JSON line; what went wrong with this image (a kind and a message), or None.

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
        return "WriteError", f"cannot write the image: {exc}"
    return None
