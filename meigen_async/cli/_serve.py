"""The `serve` command: a `FakeGallery` on 127.0.0.1 until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from contextlib import suppress
from typing import Any

from ..testing import FakeGallery, load_jsonl, sample_images
from ._output import (
    _EXIT_OK,
    _PROG,
    CommandError,
    _print,
)


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
    # The sample serves its own media, so that download and bulk --media work offline; a
    # file's media URLs are its own to serve or not.
    gallery = FakeGallery(images, port=args.port, serve_media=args.data is None)
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
        if gallery.serve_media and gallery.ids:
            _print(
                f"{_PROG}: media files are served here too: {_PROG} download --base-url "
                f"{gallery.url} --media-host {gallery.media_host} {gallery.ids[0]}",
                sys.stderr,
            )
        sys.stderr.flush()
        await stop.wait()
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        await gallery.close()
    return _EXIT_OK
