"""The `download` command: the media files of a few images."""

from __future__ import annotations

import argparse
import sys
from contextlib import aclosing

from ._options import _check_ids, _session
from ._output import _EXIT_FAILED, _EXIT_OK, _error, _print_row


async def _download(args: argparse.Namespace) -> int:
    ids: list[str] = args.ids
    _check_ids(ids)
    failed = 0
    async with _session(args) as session:
        results = session.iter_media(ids, args.output)
        async with aclosing(results):
            async for result in results:
                for media in result.files:
                    _print_row((media.path, media.bytes, media.content_type), sys.stdout)
                if result.error is not None:
                    failed += 1
                    _error(result.error.message)
    return _EXIT_FAILED if failed else _EXIT_OK
