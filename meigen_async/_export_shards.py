"""Dataset shards decided with plain values: no asyncio, no aiohttp, no files.

Which shard a post goes to (`ShardAssembler`), where repeats at the input's end are counted
(`Tail`, `stats_with_tail`), what each file of OUT is named (`data_name`,
`status_name`, `stats_name`, `shard_of_name`), what a shard's stats say (`shard_stats`,
`read_stats`), which shards a resume keeps (`done_prefix`), and what OUT's marker says
(`marker_text`, `read_marker`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import attrs

from ._export_rules import FORMATS, STATUSES, ExportFormat, Sample, utc_text

__all__ = [
    "MARKER_NAME",
    "Marker",
    "Shard",
    "ShardAssembler",
    "ShardRecord",
    "Tail",
    "data_name",
    "done_prefix",
    "marker_text",
    "read_marker",
    "read_stats",
    "shard_name",
    "shard_of_name",
    "shard_stats",
    "stats_name",
    "stats_with_tail",
    "status_name",
]

MARKER_NAME: Final = ".meigen-export.json"
"""In OUT from the start of an export: what it is, so that `--resume` continues only its own."""


# -- Shards ---------------------------------------------------------------------------------------


@attrs.frozen
class Shard:
    """A closed shard: its number, its samples in input order, and the inputs it holds.

    Its inputs are the positions from `input_start` up to (not including) `input_end`.
    """

    number: int
    input_start: int
    input_end: int
    first_id: str
    last_id: str
    samples: tuple[Sample, ...]
    duplicates: int = 0
    """Inputs naming a post already exported (earlier in the input), given no row."""

    @property
    def written(self) -> list[Sample]:
        """The samples with a picture to write, in order."""
        return [sample for sample in self.samples if sample.picture is not None]


@attrs.frozen
class Tail:
    """Repeats at the input's end, come after the last shard holding samples had closed.

    No shard is made for them (it would hold no sample): they are counted in the stats of that
    last shard, numbered `number`, whose inputs are then made to run on to `input_end` (so that
    a resume reads past them, and counts them no more). Their positions start at `input_start`,
    where that shard's inputs ended.
    """

    number: int
    input_start: int
    input_end: int
    last_id: str
    duplicates: int


@attrs.define
class ShardAssembler:
    """Puts the posts, in input order, into shards of at most `size` samples.

    A post is never split: a shard closes once it holds `size` samples, or before a post that
    would take it past `size` (a post larger than `size` gets a shard of its own). Every
    input position belongs to one shard, so a shard's inputs are a range of positions: what
    `--resume` skips.
    """

    size: int
    number: int = 0
    start: int = 0
    _samples: list[Sample] = attrs.field(factory=list)
    _first_id: str | None = None
    _last_id: str = ""
    _duplicates: int = 0

    def add(
        self, position: int, item_id: str, samples: Sequence[Sample], *, duplicate: bool = False
    ) -> list[Shard]:
        """Add the input at `position`; the shards it closed (none, one or two)."""
        closed = []
        if samples and self._samples and len(self._samples) + len(samples) > self.size:
            closed.append(self._close(position))
        if self._first_id is None:
            self._first_id = item_id
        self._last_id = item_id
        self._samples.extend(samples)
        self._duplicates += duplicate
        if len(self._samples) >= self.size:  # full: closed now, not when the next post comes
            closed.append(self._close(position + 1))
        return closed

    def finish(self, end: int) -> Shard | Tail | None:
        """What the input's end, at position `end`, closes: a shard, a `Tail`, or nothing.

        The last shard, when samples came after the one before closed; else the repeats that
        came after it (a `Tail`), if any.
        """
        if self._samples:
            return self._close(end)
        if not self._duplicates:
            return None
        # A repeat names an input that came before, and made samples: a shard has closed.
        assert self.number > 0, "repeats with no shard before them"
        return Tail(self.number - 1, self.start, end, self._last_id, self._duplicates)

    def _close(self, end: int) -> Shard:
        shard = Shard(
            number=self.number,
            input_start=self.start,
            input_end=end,
            first_id=self._first_id or "",
            last_id=self._last_id,
            samples=tuple(self._samples),
            duplicates=self._duplicates,
        )
        self.number += 1
        self.start = end
        self._samples = []
        self._first_id = None
        self._last_id = ""
        self._duplicates = 0
        return shard


# -- Names in OUT ---------------------------------------------------------------------------------


def shard_name(number: int) -> str:
    """A shard's number as every file of it is named: five digits, more past 99,999."""
    return f"{number:05d}"


def data_name(fmt: ExportFormat, number: int) -> str:
    """The path, relative to OUT, of shard `number`'s data: a file, or imagefolder's folder."""
    name = shard_name(number)
    if fmt == "imagefolder":
        return f"images/{name}"
    return f"{name}.tar" if fmt == "webdataset" else f"{name}.parquet"


def status_name(number: int, arrow: bool) -> str:
    """The status table of shard `number`: Parquet, or JSON Lines where pyarrow is absent."""
    return f"{shard_name(number)}_status.{'parquet' if arrow else 'jsonl'}"


def stats_name(number: int) -> str:
    """The stats of shard `number`: written last, so that it says the shard is done."""
    return f"{shard_name(number)}_stats.json"


_SHARD_FILE = re.compile(
    r"([0-9]{5,})(\.tar|\.parquet|_status\.parquet|_status\.jsonl|_stats\.json)"
)


def shard_of_name(name: str) -> int | None:
    """The shard a file of OUT named `name` belongs to, else None.

    Only names that `data_name`, `status_name` and `stats_name` make have one: any other file
    is not ours, and is left alone.
    """
    match = _SHARD_FILE.fullmatch(name)
    return int(match.group(1)) if match else None


# -- Stats ----------------------------------------------------------------------------------------


@attrs.frozen
class ShardRecord:
    """What a done shard's stats file says: its inputs and its counts."""

    number: int
    input_start: int
    input_end: int
    first_id: str
    last_id: str
    counts: Mapping[str, int]
    bytes: int


def shard_stats(
    shard: Shard,
    *,
    fmt: ExportFormat,
    shard_size: int,
    size: int,
    started: datetime,
    ended: datetime,
) -> dict[str, Any]:
    """The stats file of `shard`: its counts by status, bytes written, seconds, inputs."""
    counts = dict.fromkeys(STATUSES, 0)
    for sample in shard.samples:
        counts[sample.row["status"]] += 1
    return {
        "shard": shard.number,
        "format": fmt,
        "shard_size": shard_size,
        "count": len(shard.samples),
        "successes": counts["success"],
        "status": counts,
        "bytes": size,
        "seconds": round((ended - started).total_seconds(), 3),
        "start_time": utc_text(started),
        "end_time": utc_text(ended),
        "first_id": shard.first_id,
        "last_id": shard.last_id,
        "input_start": shard.input_start,
        "input_end": shard.input_end,
        "duplicates": shard.duplicates,
    }


def read_stats(text: str, number: int, fmt: ExportFormat, shard_size: int) -> ShardRecord | None:
    """The record a stats file holds, when it is one for shard `number` of this export.

    Anything else (unreadable, another shard's, another format or size, counts that are no
    counts) is None: the shard is not done, and is made again.
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    ints = [data.get(k) for k in ("shard", "input_start", "input_end", "bytes", "shard_size")]
    ids = [data.get(k) for k in ("first_id", "last_id")]
    counts = data.get("status")
    if (
        any(type(value) is not int or value < 0 for value in ints)
        or any(type(value) is not str for value in ids)
        or not isinstance(counts, dict)
        or any(type(counts.get(status)) is not int for status in STATUSES)
        or data["shard"] != number
        or data.get("format") != fmt
        or data["shard_size"] != shard_size
        or data["input_end"] <= data["input_start"]
    ):
        return None
    return ShardRecord(
        number=number,
        input_start=data["input_start"],
        input_end=data["input_end"],
        first_id=data["first_id"],
        last_id=data["last_id"],
        counts={status: counts[status] for status in STATUSES},
        bytes=data["bytes"],
    )


def stats_with_tail(
    text: str, tail: Tail, fmt: ExportFormat, shard_size: int
) -> dict[str, Any] | None:
    """Shard `tail.number`'s stats (`text`) counting `tail`'s repeats, its inputs run on to them.

    None when `text` is no stats of that shard of this export ending where `tail` starts.
    """
    record = read_stats(text, tail.number, fmt, shard_size)
    if record is None or record.input_end != tail.input_start:
        return None
    stats: dict[str, Any] = json.loads(text)
    before = stats.get("duplicates")
    counted = before if type(before) is int and before >= 0 else 0
    stats.update(
        input_end=tail.input_end, last_id=tail.last_id, duplicates=counted + tail.duplicates
    )
    return stats


def done_prefix(records: Mapping[int, ShardRecord]) -> list[ShardRecord]:
    """The done shards a resume keeps: 0, 1, ... each starting where the one before ended.

    Shards are committed in order, so a shard past a gap was not made by this export's
    order of work (or its inputs moved): it is made again like the gap.
    """
    kept: list[ShardRecord] = []
    end = 0
    while (record := records.get(len(kept))) is not None and record.input_start == end:
        kept.append(record)
        end = record.input_end
    return kept


# -- OUT's marker ---------------------------------------------------------------------------------


@attrs.frozen
class Marker:
    """What an export records in OUT before its first shard."""

    format: ExportFormat
    shard_size: int
    ignore_opt_out: bool


def marker_options(marker: Marker) -> str:
    """The options that made an export, each one a resume must repeat, as the command says them."""
    opt_out = "--ignore-opt-out" if marker.ignore_opt_out else "no --ignore-opt-out"
    return f"--format {marker.format}, --shard-size {marker.shard_size} and {opt_out}"


def marker_text(marker: Marker) -> str:
    """The marker file's JSON."""
    return (
        json.dumps(
            {
                "meigen_async_export": 1,
                "format": marker.format,
                "shard_size": marker.shard_size,
                "ignore_opt_out": marker.ignore_opt_out,
            }
        )
        + "\n"
    )


def read_marker(text: str) -> Marker | None:
    """The marker a file holds, or None when it holds none of ours."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("meigen_async_export") != 1:
        return None
    fmt, size, ignore = data.get("format"), data.get("shard_size"), data.get("ignore_opt_out")
    if fmt not in FORMATS or type(size) is not int or type(ignore) is not bool:
        return None
    return Marker(format=fmt, shard_size=size, ignore_opt_out=ignore)
