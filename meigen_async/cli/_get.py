"""The `get` command: a readable summary of each image, or its JSON."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from .._text import terminal_safe
from ..errors import MeigenError
from ..models import (
    GalleryImage,
    unstructure_image,
)
from ..prompt import PromptKind
from ._options import _check_ids, _session
from ._output import (
    _EXIT_FAILED,
    _EXIT_OK,
    _error,
    _print,
    _print_json,
)


def summarize(image: GalleryImage) -> str:
    """A readable, multi-line summary of one image: the prompt, counts, date, author, media.

    Terminal-safe: each line is laid out and then shown as `terminal_safe` shows it, so a
    field's controls, escape sequences, bidi overrides and newlines come out escaped; the
    only newlines are the layout's (the prompt is shown a line of it a line).
    """
    return "\n".join(_summary_lines(image))


def _summary_lines(image: GalleryImage) -> list[str]:
    prompt = image.prompt
    kind = "JSON" if prompt.kind is PromptKind.JSON else "plain text"
    if prompt.repaired:
        kind += " (repaired)"
    width, height = image.image_width, image.image_height
    size = f"{width}x{height}" if width is not None and height is not None else "unknown"
    posted = _in_utc(image.created_at)
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
    return [terminal_safe(line) for line in lines]


def _in_utc(moment: datetime | None) -> str:
    """`moment` as a UTC date and time to the minute, converted from its own offset."""
    if moment is None:
        return "unknown"
    if moment.tzinfo is not None:  # a naive one (built by hand) is taken as UTC, as parsed
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


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
    _check_ids(ids)
    async with _session(args) as session:
        outcomes = await session.get_images(ids, return_exceptions=True)
    images = [outcome for outcome in outcomes if isinstance(outcome, GalleryImage)]
    if args.json:
        # JSON Lines whatever the number of ids, as bulk writes: one shape to read.
        for image in images:
            _print_json(unstructure_image(image), sys.stdout)
    else:
        for n, image in enumerate(images):
            for line in ([""] if n else []) + _summary_lines(image):
                _print(line, sys.stdout)
    failed = {i: o for i, o in zip(ids, outcomes, strict=True) if isinstance(o, MeigenError)}
    for failure in failed.values():
        _error(failure.message)
    return _EXIT_FAILED if failed else _EXIT_OK
