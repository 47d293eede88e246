"""The `search` command: a readable line, a JSON object or an id for each hit."""

from __future__ import annotations

import argparse
import shutil
import sys
import unicodedata
from contextlib import aclosing

from .._text import terminal_safe
from ..errors import MeigenError
from ..models import (
    SearchHit,
    unstructure_search_hit,
)
from ..prompt import _string_values
from ._options import (
    _session,
)
from ._output import (
    _EXIT_FAILED,
    _EXIT_OK,
    _PROG,
    CommandError,
    _print,
    _print_json,
)

# The columns of a readable line, in terminal cells; the prompt has what the width leaves.
_ID_CELLS = 19  # a gallery id of today; a longer one is shown whole, never cut
_MODEL_CELLS = 10
_AUTHOR_CELLS = 15
_LIKES_CELLS = 7  # up to 9,999,999
_PROMPT_CELLS = 20  # at the least, however narrow the terminal
_GAP = "  "


def hit_header() -> str:
    """The line naming the columns of `hit_line`."""
    return _GAP.join(
        [
            _fit("ID", _ID_CELLS),
            _fit("MODEL", _MODEL_CELLS),
            _fit("AUTHOR", _AUTHOR_CELLS),
            "LIKES".rjust(_LIKES_CELLS),
            "PROMPT",
        ]
    )


def hit_line(hit: SearchHit, width: int = 80) -> str:
    """One readable line for a search hit, in aligned columns that fit `width` cells.

    Id, model, author, likes, and the first line of the prompt's text (a JSON prompt's first
    text, not its `{`), cut with `…` where a column is too narrow. Terminal-safe, as
    `summarize` is: controls, escape sequences, bidi overrides and newlines in a field come
    out escaped.
    """
    author = f"@{hit.author_username}" if hit.author_username else hit.author_display_name
    head = _GAP.join(
        [
            _fit(terminal_safe(hit.id), _ID_CELLS, cut=False),
            _fit(terminal_safe(hit.model or "-"), _MODEL_CELLS),
            _fit(terminal_safe(author or "-"), _AUTHOR_CELLS),
            f"{hit.likes:,}".rjust(_LIKES_CELLS),
            "",
        ]
    )
    room = max(width - _cells(head), _PROMPT_CELLS)
    return head + _fit(terminal_safe(first_text(hit)), room, pad=False)


def first_text(hit: SearchHit) -> str:
    """The first line of text of the hit's prompt: of a JSON prompt, its first string value."""
    prompt = hit.prompt
    texts = _string_values(prompt.data) if prompt.data is not None else iter((hit.text,))
    for text in texts:
        for line in text.splitlines():
            if line.strip():
                return line.strip()
    return ""


def _cell(char: str) -> int:
    """The terminal cells `char` takes: two if wide, none if combining, else one."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in "WF" else 1


def _cells(text: str) -> int:
    return sum(map(_cell, text))


def _fit(text: str, cells: int, *, cut: bool = True, pad: bool = True) -> str:
    """`text` in `cells` cells: cut short with `…` (if `cut`), padded with spaces (if `pad`)."""
    if cut and _cells(text) > cells:
        kept: list[str] = []
        used = 0
        for char in text:
            used += _cell(char)
            if used > cells - 1:
                break
            kept.append(char)
        text = "".join(kept) + "…"
    return text + " " * (cells - _cells(text)) if pad else text


async def _search(args: argparse.Namespace) -> int:
    # Every hit's id is a gallery id: the library skips (and logs) the others, so `--ids | bulk -`
    # gets one gallery id per line whatever a server put in the field.
    found = 0
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
                        width = shutil.get_terminal_size().columns
                        if not found:
                            _print(hit_header(), sys.stdout)
                        _print(hit_line(hit, width), sys.stdout)
                    found += 1
    except ValueError as exc:  # InvalidQuery: before any request
        raise CommandError(str(exc)) from None
    except MeigenError as error:
        raise CommandError(error.message, _EXIT_FAILED) from None
    if not found:
        # On stderr: stdout stays what a pipe reads, with nothing in it.
        query = getattr(args, "query", None)
        _print(f"{_PROG}: no hits" + (f" for {query!r}" if query else ""), sys.stderr)
    return _EXIT_OK
