"""Dataset exports, the file side: OUT made ready, status tables, stats, the card, metadata.

Everything here blocks and runs in a worker thread, never on the event loop. Every file is
written under a temporary name (`.{name}.part`), fsynced and renamed: after a shard's data
(`_export_writers`), its status table, then its stats, which say the shard is done, so that a
kill at any moment leaves every name whole or absent. What to write is decided in
`_export_rules` and `_export_shards`; the pipeline that feeds this is `_export`.

pyarrow (the `dataset` extra) is imported only here, only when an export runs; without it the
status tables and imagefolder's metadata are JSON Lines, and the parquet format is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

from ._export_rules import COLUMNS, ExportFormat
from ._export_shards import (
    MARKER_NAME,
    Marker,
    ShardRecord,
    Tail,
    done_prefix,
    marker_options,
    marker_text,
    read_marker,
    read_stats,
    shard_of_name,
    stats_name,
    stats_with_tail,
    status_name,
)
from ._export_writers import ShardFile, arrow_type
from ._protocol import validate_image_id
from .errors import ExportError

__all__ = [
    "Arrow",
    "load_arrow",
    "prepare",
    "read_records",
    "remove_staged",
    "write_atomically",
    "write_card",
    "write_metadata",
    "write_stats",
    "write_status",
]


@attrs.frozen
class Arrow:
    """pyarrow and pyarrow.parquet, imported."""

    pa: ModuleType
    pq: ModuleType


def load_arrow() -> Arrow | None:
    """pyarrow, when it is installed (`pip install 'meigen-async[dataset]'`), else None."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None
    return Arrow(pa, pq)


# -- OUT, before the first shard ------------------------------------------------------------------


def prepare(out: Path, marker: Marker, *, resume: bool, arrow: bool) -> list[ShardRecord]:
    """Make OUT ready: the shards a resume keeps, every other shard's files removed.

    Raises:
        ExportError: OUT is not empty and `resume` is false; or it holds no export of ours, or
            one of another format, shard size or opt-out choice; or it cannot be written.

    """
    try:
        names = os.listdir(out)
    except FileNotFoundError:
        names = []
    except OSError as exc:
        raise _error(f"cannot read {out}", exc) from exc
    if names and not resume:
        raise ExportError(
            f"{out} is not empty: give an empty or new directory, or --resume (resume=True) "
            "to continue the export in it"
        )
    if names:
        _check_marker(out, marker)
        return _keep_done(out, names, marker, arrow)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_atomically(out / MARKER_NAME, marker_text(marker).encode())
    except OSError as exc:
        raise _error(f"cannot make {out}", exc) from exc
    return []


def _check_marker(out: Path, marker: Marker) -> None:
    try:
        found = read_marker((out / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        found = None
    if found is None:
        raise ExportError(
            f"{out} holds no export of meigen-async ({MARKER_NAME} is missing or unreadable): "
            "nothing in it is touched; give an empty or new directory"
        )
    if found != marker:
        raise ExportError(
            f"{out} holds an export made with {marker_options(found)}, but this resume asks "
            f"for {marker_options(marker)}: resume it with the same --format, --shard-size and "
            "opt-out choice (format, shard_size and ignore_opt_out from Python)"
        )


def read_records(out: Path, marker: Marker) -> list[ShardRecord]:
    """The done shards of OUT, in order: those whose stats say so, from shard 0 on."""
    records: dict[int, ShardRecord] = {}
    for name in os.listdir(out):
        number = shard_of_name(name)
        if number is None or name != stats_name(number):
            continue
        try:
            text = (out / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # unreadable: the shard is not done, and is made again
        record = read_stats(text, number, marker.format, marker.shard_size)
        if record is not None:
            records[number] = record
    return done_prefix(records)


def _keep_done(out: Path, names: list[str], marker: Marker, arrow: bool) -> list[ShardRecord]:
    done = read_records(out, marker)
    kept = {record.number for record in done}
    try:
        for name in names:
            if _unfinished(name, shard_of_name(name), kept):
                _remove(out / name)
        images = out / "images"
        if marker.format == "imagefolder" and images.is_dir():
            for name in os.listdir(images):
                number = int(name) if name.isascii() and name.isdigit() else None
                if _unfinished(name, number, kept):
                    _remove(images / name)
    except OSError as exc:
        raise _error(f"cannot clear the unfinished shards of {out}", exc) from exc
    return done


def _unfinished(name: str, number: int | None, kept: set[int]) -> bool:
    """Whether a file of OUT is a leftover to remove: a temporary file, or a shard not done."""
    if name.startswith(".") and name.endswith(".part"):
        return True
    return number is not None and number not in kept


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# -- One shard's table --------------------------------------------------------------------------


def write_status(out: Path, shard: ShardFile, arrow: Arrow | None) -> None:
    """Write the status table of `shard`: every sample's row, with where it is in the dataset.

    Raises:
        ExportError: it could not be written.

    """
    rows = ({"file_name": shard.file_name(sample), **sample.row} for sample in shard.samples)
    target = out / status_name(shard.number, arrow is not None)
    try:
        _write_table(target, rows, arrow)
    except OSError as exc:
        raise _error(f"cannot write {target}", exc) from exc


# -- Tables ---------------------------------------------------------------------------------------


def _write_table(target: Path, rows: Iterable[dict[str, Any]], arrow: Arrow | None) -> None:
    """Rows with `file_name` and `COLUMNS`, as Parquet (or JSON Lines), renamed into place."""
    with _replacing(target) as temp:
        if arrow is None:
            with open(temp, "w", encoding="utf-8") as stream:
                for row in rows:
                    stream.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        pa = arrow.pa
        fields = [pa.field("file_name", pa.string())]
        fields += [pa.field(n, arrow_type(pa, t)) for n, t in COLUMNS]
        schema = pa.schema(fields)
        with arrow.pq.ParquetWriter(temp, schema) as writer:
            writer.write_table(pa.Table.from_pylist(list(rows), schema=schema))


def write_metadata(out: Path, shards: Sequence[ShardRecord], arrow: Arrow | None) -> None:
    """Write imagefolder's `metadata.parquet` (`.jsonl` without pyarrow).

    It holds the successes of every done shard, read back from their status tables one shard
    at a time.
    """
    name = "metadata.parquet" if arrow is not None else "metadata.jsonl"

    def successes() -> Iterator[dict[str, Any]]:
        for record in shards:
            for row in _read_table(out / status_name(record.number, arrow is not None), arrow):
                if row.get("status") == "success" and row.get("file_name"):
                    yield row

    try:
        if arrow is None:
            _write_table(out / name, successes(), None)
            return
        # Shard by shard: a status table is at most MAX_SHARD_SIZE rows.
        pa = arrow.pa
        fields = [pa.field("file_name", pa.string())]
        fields += [pa.field(n, arrow_type(pa, t)) for n, t in COLUMNS]
        schema = pa.schema(fields)
        with _replacing(out / name) as temp, arrow.pq.ParquetWriter(temp, schema) as writer:
            batch: list[dict[str, Any]] = []
            for row in successes():
                batch.append(row)
                if len(batch) >= 1000:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    batch = []
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    except OSError as exc:
        raise _error(f"cannot write {out / name}", exc) from exc


def _read_table(path: Path, arrow: Arrow | None) -> Iterator[dict[str, Any]]:
    if path.suffix == ".jsonl" or arrow is None:
        jsonl = path.with_suffix(".jsonl")
        with open(jsonl, encoding="utf-8") as stream:
            for line in stream:
                row = json.loads(line)
                if isinstance(row, dict):
                    yield row
        return
    if not path.exists():  # a shard made without pyarrow, read by a run with it
        yield from _read_table(path.with_suffix(".jsonl"), None)
        return
    yield from arrow.pq.read_table(path).to_pylist()


# -- Small pieces ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _replacing(target: Path) -> Iterator[Path]:
    """A temporary path beside `target`; once written, fsynced and renamed to `target`."""
    temp = target.with_name(f".{target.name}.part")
    temp.unlink(missing_ok=True)
    try:
        yield temp
        with open(temp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_stats(out: Path, number: int, stats: dict[str, Any]) -> None:
    """Write shard `number`'s stats file: from now on the shard is done.

    Raises:
        ExportError: it could not be written (the shard is then not done, and is made again).

    """
    target = out / stats_name(number)
    try:
        write_atomically(target, (json.dumps(stats, indent=1) + "\n").encode())
    except OSError as exc:
        raise _error(f"cannot write {target}", exc) from exc


def count_tail(out: Path, tail: Tail, fmt: ExportFormat, shard_size: int) -> None:
    """Count `tail`'s repeats in the stats of the shard before them, rewritten whole.

    A kill before the rename leaves the stats as they were: a resume reads the repeats again
    and counts them then.

    Raises:
        ExportError: those stats could not be read or written, or are no longer that shard's.

    """
    target = out / stats_name(tail.number)
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as exc:
        raise _error(f"cannot read {target}", exc) from exc
    except UnicodeDecodeError:
        text = ""
    stats = stats_with_tail(text, tail, fmt, shard_size)
    if stats is None:
        raise ExportError(
            f"{target} changed during the export: it is no longer shard {tail.number}'s"
        )
    write_stats(out, tail.number, stats)


def write_card(out: Path, text: str) -> None:
    """Write the dataset card, `README.md`.

    Raises:
        ExportError: it could not be written.

    """
    try:
        write_atomically(out / "README.md", text.encode("utf-8"))
    except OSError as exc:
        raise _error(f"cannot write {out / 'README.md'}", exc) from exc


def write_atomically(target: Path, data: bytes) -> None:
    """Write `data` to `target` whole: through a temporary file, fsynced, then a rename."""
    with _replacing(target) as temp, open(temp, "wb") as stream:
        stream.write(data)


def remove_staged(staging: Path, image_id: str) -> None:
    """Remove the downloads of gallery post `image_id` from the export's own staging."""
    shutil.rmtree(staging / validate_image_id(image_id), ignore_errors=True)


def _error(message: str, exc: OSError) -> ExportError:
    error = ExportError(f"{message}: {exc.strerror or exc}")
    error.__cause__ = exc
    return error
