"""What a dataset export reports: `ExportProgress` as it runs, `ExportSummary` at the end.

The exporting itself is `GallerySession.export`; see docs/datasets.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs

from ._export_rules import (
    DEFAULT_SHARD_SIZE,
    FORMATS,
    MAX_SHARD_SIZE,
    STATUSES,
    ExportFormat,
)

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "FORMATS",
    "MAX_SHARD_SIZE",
    "STATUSES",
    "ExportFormat",
    "ExportProgress",
    "ExportSummary",
]


@attrs.frozen
class ExportProgress:
    """How far an export has come, in this run: given to `progress` after each input."""

    inputs: int
    """Inputs (ids, images) read, duplicates included."""
    samples: int
    """Status rows made: one a picture, or one for a post that gave none."""
    written: int
    """Samples whose picture is written (status `success`)."""
    failed: int
    """Samples `not_found`, `failed_to_download` or `refused`."""
    opted_out: int
    """Samples whose picture's host opted out (not written)."""
    bytes: int
    """Bytes of the pictures written."""


@attrs.frozen
class ExportSummary:
    """What an export did: the shards it wrote in this run, and their samples by status."""

    out: Path
    """The dataset's directory."""
    format: ExportFormat
    """Its layout."""
    shards: int
    """Shards done in `out`, those of earlier runs included."""
    shards_written: int
    """Shards written by this run (the others were done already: `resume=True`)."""
    counts: Mapping[str, int]
    """This run's samples by status: every status of `STATUSES`, zero included."""
    bytes: int
    """Bytes of the pictures this run wrote."""
    duplicates: int
    """Inputs naming a post already exported (earlier in the input), skipped: those counted in
    the stats this run wrote (repeats at the input's end in the last shard's)."""
    seconds: float
    """How long it took."""

    @property
    def samples(self) -> int:
        """Status rows this run made."""
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        """Samples of this run `not_found`, `failed_to_download` or `refused`."""
        return self.samples - self.counts.get("success", 0) - self.counts.get("opted_out", 0)
