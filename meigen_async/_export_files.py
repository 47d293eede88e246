"""Dataset exports, the file side: each shard written whole, then renamed into place.

Everything here blocks (reads, writes, fsyncs, renames) and runs in a worker thread, never on
the event loop. A shard's files are written under temporary names (`.{name}.part`) and renamed
in order, data, status table, then stats: a stats file says its shard is done, and a kill at
any moment leaves every name either whole or absent. What to write is decided in
`_export_rules` and `_export_shards`; the pipeline that feeds this is `_export`.

pyarrow (the `dataset` extra) is imported only here, only when an export runs; without it the
status tables and imagefolder's metadata are JSON Lines, and the parquet format is refused.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

from ._export_rules import (
    COLUMNS,
    WEBDATASET_IMAGE_FIELD,
    ExportFormat,
    Sample,
    hf_features,
    json_row,
)
from ._export_shards import (
    MARKER_NAME,
    Marker,
    Shard,
    ShardRecord,
    data_name,
    done_prefix,
    marker_text,
    read_marker,
    read_stats,
    shard_of_name,
    stats_name,
    status_name,
)
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
    "write_shard",
    "write_stats",
]

_ROW_GROUP = 100  # rows a Parquet row group holds, as the Hub's viewer likes them
_ROW_GROUP_BYTES = 64 * 1024 * 1024  # ...or fewer, when their pictures are this large
_TAR_MTIME = 0  # with owner and mode fixed, the same samples make the same bytes
_CHANGED = "the downloaded file changed or vanished before it was exported"


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
        said = f"--format {found.format} --shard-size {found.shard_size}"
        said += " --ignore-opt-out" if found.ignore_opt_out else ""
        raise ExportError(f"{out} holds an export made with {said}: resume it with the same")


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


# -- One shard ------------------------------------------------------------------------------------


def write_shard(
    out: Path, fmt: ExportFormat, shard: Shard, arrow: Arrow | None, *, verify: bool = True
) -> Shard:
    """Write `shard`'s data and status table, renamed into place; the shard as written.

    A picture that changed or vanished on disk since it was downloaded is not written: its
    sample becomes `failed_to_download`, in the shard returned (and its status table). With
    `verify`, a picture's SHA-256 is checked again as it is read; without, its size.

    Raises:
        ExportError: a file could not be written (nothing of this shard is left half-made).

    """
    target = out / data_name(fmt, shard.number)
    try:
        if not shard.written:
            # No data file for a shard of failures: a reader infers its fields from the first.
            failed: set[str] = set()
        elif fmt == "webdataset":
            failed = _write_tar(target, shard.written, verify)
        elif fmt == "parquet":
            assert arrow is not None  # refused before the export started
            failed = _write_parquet(target, shard.written, arrow, verify)
        else:
            failed = _write_images(target, shard.written)
        if failed:
            shard = attrs.evolve(shard, samples=tuple(_failed(s, failed) for s in shard.samples))
        rows = (_status_row(fmt, shard.number, sample) for sample in shard.samples)
        _write_table(out / status_name(shard.number, arrow is not None), rows, arrow)
    except OSError as exc:
        raise _error(f"cannot write shard {shard.number} in {out}", exc) from exc
    return shard


def _failed(sample: Sample, failed: set[str]) -> Sample:
    if sample.key not in failed:
        return sample
    row = {**sample.row, "status": "failed_to_download", "error_message": _CHANGED}
    row.update(width=None, height=None, sha256=None)
    return Sample(row)


def _status_row(fmt: ExportFormat, number: int, sample: Sample) -> dict[str, Any]:
    # Where the sample is in the dataset: imagefolder's `file_name`, the member or path else.
    name = None
    if sample.picture is not None:
        ext = f".{WEBDATASET_IMAGE_FIELD}" if fmt == "webdataset" else sample.ext
        name = f"{sample.key}{ext}"
        if fmt == "imagefolder":
            name = f"{data_name(fmt, number)}/{name}"
    return {"file_name": name, **sample.row}


def _open_picture(sample: Sample) -> int | None:
    """A descriptor of the picture's file, when it is a regular file of the size downloaded."""
    assert sample.picture is not None
    try:
        fd = os.open(sample.picture.path, _READ)
    except OSError:
        return None
    try:
        found = os.fstat(fd)
        if stat.S_ISREG(found.st_mode) and found.st_size == sample.picture.bytes:
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _picture(sample: Sample, verify: bool) -> bytes | None:
    """The picture's bytes, when the file is still the one downloaded.

    Its size is checked, and with `verify` its SHA-256 too: a media directory of the user's
    may change under us; the export's own staging is read as written.
    """
    assert sample.picture is not None
    fd = _open_picture(sample)
    if fd is None:
        return None
    with open(fd, "rb") as stream:
        data = stream.read(sample.picture.bytes + 1)
    if len(data) != sample.picture.bytes:
        return None
    if verify and hashlib.sha256(data).hexdigest() != sample.picture.sha256:
        return None
    return data


_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


def _write_tar(target: Path, samples: Sequence[Sample], verify: bool) -> set[str]:
    """A WebDataset shard: for each sample its picture, `.json` and `.txt`, in order.

    Laid out as `tarfile` lays out a PAX archive, its headers made by `tarfile` itself, but
    written here, so that a picture is copied file to file by the kernel (`copy_file_range`)
    rather than through Python, when it need not be hashed again.
    """
    failed: set[str] = set()
    with _replacing(target) as temp, open(temp, "wb", buffering=0) as stream:
        out = stream.fileno()
        for sample in samples:
            assert sample.picture is not None
            name = f"{sample.key}.{WEBDATASET_IMAGE_FIELD}"
            if verify:
                data = _picture(sample, verify)
                if data is None:
                    failed.add(str(sample.key))
                    continue
                _member(out, name, data)
            else:
                source = _open_picture(sample)
                if source is None:
                    failed.add(str(sample.key))
                    continue
                size = sample.picture.bytes
                try:
                    _write_all(out, _header(name, size))
                    copied = _copy(source, out, size)
                finally:
                    os.close(source)
                if not copied:  # shorter than its size: the archive is not kept
                    raise OSError(errno.EIO, f"{sample.picture.path} changed while it was read")
                _write_all(out, _padding(size))
            row = json_row(sample.row)
            text = json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode(
                "utf-8", "replace"
            )
            prompt = str(row["text"]).encode("utf-8", "replace")
            for field, body in (("json", text), ("txt", prompt)):
                _write_all(
                    out, _header(f"{sample.key}.{field}", len(body)), body, _padding(len(body))
                )
        end = stream.tell() + 2 * _BLOCK
        _write_all(out, bytes(2 * _BLOCK + (-end % _RECORD)))
    return failed


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = _TAR_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _member(out: int, name: str, body: bytes) -> None:
    _write_all(out, _header(name, len(body)), body, _padding(len(body)))


def _padding(size: int) -> bytes:
    return bytes(-size % _BLOCK)


def _write_all(fd: int, *parts: bytes) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view) :]


def _copy(source: int, out: int, size: int) -> bool:
    """Copy `size` bytes from `source` to `out`, in the kernel where it can; False if short."""
    left = size
    copy_file_range = getattr(os, "copy_file_range", None)
    while left and copy_file_range is not None:
        try:
            done = copy_file_range(source, out, left)
        except OSError:  # another file system on an old kernel, or not supported: by hand
            break
        if done == 0:
            return False
        left -= done
    while left:
        chunk = os.read(source, min(left, 1 << 20))
        if not chunk:
            return False
        _write_all(out, chunk)
        left -= len(chunk)
    return True


def _parquet_schema(arrow: Arrow) -> Any:
    pa = arrow.pa
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [pa.field("image", image)] + [pa.field(n, _arrow_type(pa, t)) for n, t in COLUMNS]
    features = hf_features([("image", "image"), *COLUMNS])
    metadata = {"huggingface": json.dumps({"info": {"features": features}})}
    return pa.schema(fields, metadata=metadata)


def _arrow_type(pa: ModuleType, kind: str) -> Any:
    return pa.int64() if kind == "int64" else pa.string()


def _write_parquet(target: Path, samples: Sequence[Sample], arrow: Arrow, verify: bool) -> set[str]:
    failed: set[str] = set()
    schema = _parquet_schema(arrow)
    with _replacing(target) as temp, arrow.pq.ParquetWriter(temp, schema) as writer:
        batch: list[dict[str, Any]] = []
        held = 0
        for sample in samples:
            data = _picture(sample, verify)
            if data is None:
                failed.add(str(sample.key))
                continue
            batch.append({"image": {"bytes": data, "path": f"{sample.key}{sample.ext}"}})
            batch[-1].update(sample.row)
            held += len(data)
            if len(batch) >= _ROW_GROUP or held >= _ROW_GROUP_BYTES:
                writer.write_table(arrow.pa.Table.from_pylist(batch, schema=schema))
                batch, held = [], 0
        if batch or not samples:
            writer.write_table(arrow.pa.Table.from_pylist(batch, schema=schema))
    return failed


def _write_images(target: Path, samples: Sequence[Sample]) -> set[str]:
    """Link (or, across file systems, copy) each picture into a folder, renamed into place."""
    failed: set[str] = set()
    temp = target.with_name(f".{target.name}.part")
    _remove(temp)
    temp.mkdir(parents=True)
    for sample in samples:
        assert sample.picture is not None
        if not _place(sample.picture.path, temp / f"{sample.key}{sample.ext}", sample):
            failed.add(str(sample.key))
    _fsync_dir(temp)
    _remove(target)
    os.replace(temp, target)
    _fsync_dir(target.parent)
    return failed


def _place(source: Path, final: Path, sample: Sample) -> bool:
    assert sample.picture is not None
    try:
        os.link(source, final, follow_symlinks=False)
        found = os.lstat(final)
        # A hard link to a symbolic link is a link: only a regular file of the size is kept.
        if stat.S_ISREG(found.st_mode) and found.st_size == sample.picture.bytes:
            return True
        final.unlink()
        return False
    except FileNotFoundError:
        return False
    except OSError:
        pass  # another file system, or no hard links here: a copy
    data = _picture(sample, verify=True)
    if data is None:
        return False
    with open(final, "xb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    return True


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
        fields += [pa.field(n, _arrow_type(pa, t)) for n, t in COLUMNS]
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
        fields += [pa.field(n, _arrow_type(pa, t)) for n, t in COLUMNS]
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


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # a directory cannot be opened so everywhere
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_staged(staging: Path, image_id: str) -> None:
    """Remove the downloads of gallery post `image_id` from the export's own staging."""
    shutil.rmtree(staging / validate_image_id(image_id), ignore_errors=True)


def _error(message: str, exc: OSError) -> ExportError:
    error = ExportError(f"{message}: {exc.strerror or exc}")
    error.__cause__ = exc
    return error
