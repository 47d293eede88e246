"""A shard's data file, written from plain samples: what becomes of a picture that changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq
from conftest import picture

from meigen_async._export_files import load_arrow
from meigen_async._export_rules import COLUMNS, Sample
from meigen_async._export_writers import shard_file
from meigen_async.media import MediaFile


def _sample(path: Path, data: bytes, key: str) -> Sample:
    path.write_bytes(data)
    row = dict.fromkeys(name for name, _ in COLUMNS)
    row.update(key=key, id=key.split("_")[0], image_index=0, status="success")
    row.update(sha256=hashlib.sha256(data).hexdigest(), width=8, height=6)
    media = MediaFile(
        url=f"http://127.0.0.1:9/{key}",
        path=path,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="image/png",
    )
    return Sample(row, media)


def test_a_parquet_row_group_keeps_the_pictures_read_whole_and_fails_those_that_changed(
    tmp_path: Path,
) -> None:
    pictures = [picture("PNG", (8, 6), (n * 40, 0, 0)) for n in range(4)]
    samples = [_sample(tmp_path / f"{n}.png", data, f"p{n}_0") for n, data in enumerate(pictures)]
    (tmp_path / "1.png").write_bytes(pictures[1] + b"x")  # grew after its download
    (tmp_path / "2.png").write_bytes(pictures[0][: len(pictures[2])].ljust(len(pictures[2])))
    (tmp_path / "3.png").unlink()
    shard = shard_file(tmp_path / "out", "parquet", 0, load_arrow(), verify=True)
    (tmp_path / "out").mkdir()
    for sample in samples:
        shard.add(sample)
    shard.close()
    shard.commit()

    table = pq.read_table(tmp_path / "out" / "00000.parquet").to_pylist()
    assert [(row["key"], row["image"]) for row in table] == [
        ("p0_0", {"bytes": pictures[0], "path": "p0_0.png"})
    ]
    assert [s.row["status"] for s in shard.samples] == ["success"] + ["failed_to_download"] * 3
    assert shard.size == len(pictures[0])
