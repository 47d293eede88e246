"""The `search` command: one line, JSON object or id a hit."""

from __future__ import annotations

import argparse
import sys
from contextlib import aclosing

from .._text import terminal_safe
from ..errors import MeigenError
from ..models import (
    SearchHit,
    unstructure_search_hit,
)
from ._options import (
    _session,
)
from ._output import (
    _EXIT_FAILED,
    _EXIT_OK,
    CommandError,
    _print,
    _print_json,
)


def hit_line(hit: SearchHit) -> str:
    """One readable line for a search hit: id, model, author, likes, the prompt's first line.

    Terminal-safe, as `summarize` is: controls, escape sequences, bidi overrides and newlines
    in a field come out escaped.
    """
    author = f"@{hit.author_username}" if hit.author_username else hit.author_display_name or "-"
    first = next((line.strip() for line in hit.text.splitlines() if line.strip()), "")
    if len(first) > 80:
        first = first[:79] + "…"
    return terminal_safe(f"{hit.id}  {hit.model or '-'}  {author}  {hit.likes:,} likes  {first}")


async def _search(args: argparse.Namespace) -> int:
    # Every hit's id is a gallery id: the library skips (and logs) the others, so `--ids | bulk -`
    # gets one gallery id per line whatever a server put in the field.
    try:
        async with _session(args) as session:
            hits = session.iter_search(args.query, max_results=args.max, page_size=args.limit)
            async with aclosing(hits):
                async for hit in hits:
                    if args.ids:
                        _print(hit.id, sys.stdout)
                    elif args.json:
                        _print_json(unstructure_search_hit(hit), sys.stdout)
                    else:
                        _print(hit_line(hit), sys.stdout)
    except ValueError as exc:  # InvalidQuery: before any request
        raise CommandError(str(exc)) from None
    except MeigenError as error:
        raise CommandError(error.message, _EXIT_FAILED) from None
    return _EXIT_OK
