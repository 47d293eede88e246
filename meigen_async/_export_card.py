"""The dataset card (README.md) of an export, in Hugging Face's format: plain text out.

A YAML header (the configuration, its data files and features, the number of samples) and a
body: what it is, the command that made it, where from, the status counts, and whose the
pictures are. Every string from outside (a query, an input's name, a URL) goes into the YAML
as a JSON string, which YAML reads as the same string, and into the body escaped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from ._export_rules import COLUMNS, STATUSES, WEBDATASET_IMAGE_FIELD, ExportFormat
from ._text import terminal_safe

__all__ = ["Card", "card_text"]

_DATA_FILES: Mapping[ExportFormat, tuple[str, ...]] = {
    # `*[0-9].parquet`, not `*.parquet`: the status tables sit beside the shards.
    "parquet": ("*[0-9].parquet",),
    "webdataset": ("*.tar",),
    "imagefolder": ("metadata.parquet", "images/*/*"),
}


@attrs.frozen
class Card:
    """What the card says of one export."""

    format: ExportFormat
    counts: Mapping[str, int]
    """Samples by status, over every done shard."""
    shards: int
    bytes: int
    command: str
    """The command line (or Python call) that made it."""
    gallery: str
    """The gallery's base URL."""
    source: str
    """What was exported: ids from a file, a search, or every post."""
    ignore_opt_out: bool
    metadata_name: str = "metadata.parquet"
    """imagefolder's metadata file (`metadata.jsonl` without pyarrow)."""


def _features(fmt: ExportFormat) -> list[dict[str, Any]]:
    columns = [{"name": name, "dtype": kind} for name, kind in COLUMNS]
    if fmt == "webdataset":
        return [
            {"name": "__key__", "dtype": "string"},
            {"name": "__url__", "dtype": "string"},
            {"name": WEBDATASET_IMAGE_FIELD, "dtype": "image"},
            {"name": "json", "struct": columns},
            {"name": "txt", "dtype": "string"},
        ]
    return [{"name": "image", "dtype": "image"}, *columns]


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """`value` (dicts, lists, strings, numbers, booleans) as block YAML lines."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                lines.extend(_yaml(item, indent + 2))
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    else:
        for item in value:
            nested = _yaml(item, indent + 2) if isinstance(item, (dict, list)) else []
            if nested:
                lines.append(f"{pad}- {nested[0].strip()}")
                lines.extend(nested[1:])
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # A JSON string is a YAML double-quoted string: no value can end it or start a new key.
    return json.dumps(value if isinstance(value, str) else str(value))


def _size_category(samples: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if samples < bound:
            return name
    return "100K<n<1M" if samples < 1_000_000 else "n>1M"


def card_text(card: Card) -> str:
    """The README.md of an export."""
    samples = card.counts.get("success", 0)
    files = list(_DATA_FILES[card.format])
    if card.format == "imagefolder":
        files[0] = card.metadata_name
    header = {
        "pretty_name": "MeiGen gallery export",
        "license": "other",
        "task_categories": ["text-to-image"],
        "tags": ["meigen-async", card.format],
        "size_categories": [_size_category(samples)],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": files if len(files) > 1 else files[0]}],
            }
        ],
        "dataset_info": {
            "features": _features(card.format),
            "splits": [{"name": "train", "num_bytes": card.bytes, "num_examples": samples}],
        },
    }
    counts = "\n".join(f"  - {status}: {card.counts.get(status, 0):,}" for status in STATUSES)
    opt_out = (
        "**`--ignore-opt-out` was used**: pictures whose host sent `X-Robots-Tag: noai` or "
        "`noimageai` are included, as the person who made this export said they have the "
        "rights to use them."
        if card.ignore_opt_out
        else "Pictures whose host sent `X-Robots-Tag: noai` or `noimageai` were not written "
        "(their rows in the status tables say `opted_out`)."
    )
    body = f"""
# MeiGen gallery export

{samples:,} pictures with their prompts from MeiGen's public gallery, in {card.shards:,}
{card.format} shards ({card.bytes:,} bytes of pictures). Made by
[meigen-async](https://pypi.org/project/meigen-async/) with:

```
{_fenced(card.command)}
```

- Source: {_prose(card.source)}, from the gallery at {_inline(card.gallery)}.
- Samples by status (every picture, and every input that gave none, has a row in the
  `*_status.parquet` tables, or `*_status.jsonl`, failures included; an id given again is
  exported once; `*_stats.json` has each shard's counts):
{counts}
- Each sample is keyed `{{id}}_{{index}}`: picture `index` of gallery post `id`. Its
  `sha256` is that of the picture's bytes, which are the source's own, never re-encoded.
- {opt_out}

## Whose pictures these are

The pictures and the prompts belong to their authors, the people who posted them; the
`author_username` and `author_display_name` columns are the attribution, and each sample's
`source_url` says where its picture came from. Nothing here grants a licence to them: ask
their authors before you use them beyond what the law allows you.
"""
    return "---\n" + "\n".join(_yaml(header)) + "\n---\n" + body


# What CommonMark reads as markup inside a line: code, emphasis, links, HTML, entities.
_MARKUP = re.compile(r"([\\`*_\[\]<>&~])")


def _prose(text: str) -> str:
    """`text` as plain words on one line, whatever it holds: its markup characters escaped."""
    return _MARKUP.sub(r"\\\1", terminal_safe(text))


def _inline(text: str) -> str:
    """`text` as inline code on one line, whatever it holds (a backtick shown as a quote)."""
    shown = terminal_safe(text).replace("`", "'")
    return f"`{shown}`"


def _fenced(text: str) -> str:
    # One line (a newline shown as \n), so that no line of it can end the fence.
    return terminal_safe(text)
