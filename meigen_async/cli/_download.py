"""The `download` command: the media files of images named as arguments, in a file or on stdin."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, aclosing

import attrs

from ._failures import FailureTally
from ._input import count_ids, open_ids
from ._options import _check_ids, _session, cli_message
from ._output import (
    _EXIT_FAILED,
    _EXIT_OK,
    _PROG,
    CommandError,
    _print,
    _print_row,
    counted,
    human_size,
)
from ._progress import _progress


@attrs.define  # not frozen: a running count
class _Tally:
    """What a `download` run did: images, files downloaded and their bytes, files already there."""

    images: int = 0
    downloaded: int = 0
    downloaded_bytes: int = 0
    already_there: int = 0

    def summary(self) -> str:
        """The line `download` ends with."""
        return (
            f"{_PROG}: {counted(self.images, 'image', 'images')}: "
            f"{counted(self.downloaded, 'file', 'files')} downloaded "
            f"({human_size(self.downloaded_bytes)}), {self.already_there:,} already there"
        )


async def _download(args: argparse.Namespace) -> int:
    named: list[str] = args.ids
    if not named and args.input is None:
        raise CommandError("no ids: give them as arguments, '-' to read stdin, or -i FILE")
    _check_ids([image_id for image_id in named if image_id != "-"])
    tally = _Tally()
    failures = FailureTally()
    with ExitStack() as inputs:
        # Each source is opened now (a missing file is refused before any request) and read
        # as the downloads go: a file of millions of ids runs in flat memory.
        sources: list[Iterable[str]] = [
            inputs.enter_context(open_ids("-")) if item == "-" else [item] for item in named
        ]
        if args.input is not None:
            sources.append(inputs.enter_context(open_ids(args.input)))
        ids: Iterator[str] = itertools.chain.from_iterable(sources)
        with _progress(sys.stderr, _total(args), doing="downloading", unit="images") as progress:
            async with _session(args) as session:
                results = session.iter_media(ids, args.output)
                async with aclosing(results):
                    async for result in results:
                        tally.images += 1
                        fresh = 0
                        for media in result.files:
                            state = "already there" if media.reused else "downloaded"
                            _print_row(
                                (media.path, media.bytes, media.content_type, state), sys.stdout
                            )
                            if media.reused:
                                tally.already_there += 1
                            else:
                                tally.downloaded += 1
                                fresh += media.bytes
                        tally.downloaded_bytes += fresh
                        if result.error is not None:
                            failures.add(
                                result.id, type(result.error).__name__, cli_message(result.error)
                            )
                        progress.advance(result.error is None, fresh)
    _print(tally.summary(), sys.stderr)
    for line in failures.summary(tally.images) if failures.total else []:
        _print(line, sys.stderr)
    return _EXIT_FAILED if failures.total else _EXIT_OK


def _total(args: argparse.Namespace) -> int | None:
    """The ids the bar counts to; None when some come from stdin, or the bar is not drawn."""
    if "-" in args.ids or args.input == "-" or not sys.stderr.isatty():
        return None
    from_file = count_ids(args.input) if args.input is not None else 0
    return None if from_file is None else len(args.ids) + from_file
