"""Dataset exports against loopback servers, read back with the readers users have.

Every format is read with Hugging Face `datasets` (and `webdataset`, `pyarrow`), pictures
decoded by Pillow, offline (conftest points their caches at a temporary directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import signal
import sys
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MediaHost, picture
from helpers import media_origin

import meigen_async._export
from meigen_async import ExportError, GallerySession, RetryPolicy, UpstreamUnreachable
from meigen_async._media_kept import Keeper
from meigen_async.testing import FakeGallery

NO_RETRY = RetryPolicy(max_retries=0)
PNG = picture("PNG", (8, 6))
JPEG = picture("JPEG", (6, 4), (10, 120, 200))


def _posts(host: MediaHost) -> dict[str, list[str]]:
    """Posts with every outcome: pictures of two types, a post of two, an opt-out, a 404, a
    5xx, a host not allowed."""
    return {
        "p1": [host.add("p1a", PNG)],
        "p2": [host.add("p2a", JPEG, "image/jpeg"), host.add("p2b", PNG)],
        "p3": [host.add("p3a", PNG, headers={"X-Robots-Tag": "noindex, noai"})],
        "p4": [host.add("p4a", b"gone", "text/plain", status=404)],
        "p5": [host.add("p5a", b"oops", "text/plain", status=500)],
        "p6": ["http://pictures.invalid/p6.png"],
        "p7": [host.add("p7a", JPEG, "image/jpeg")],
    }


INPUT = ["p1", "p2", "p3", "p4", "missing", "p5", "p1", "p6", "bad id!", "p7"]
EXPECTED = {
    "p1_0": "success",
    "p2_0": "success",
    "p2_1": "success",
    "p3_0": "opted_out",
    "p4_0": "not_found",
    "p5_0": "failed_to_download",
    "p6_0": "refused",
    "p7_0": "success",
    "missing": "not_found",  # no post: its row has an id and no key
    "bad id!": "not_found",
}
SOURCE = {"p1_0": PNG, "p2_0": JPEG, "p2_1": PNG, "p7_0": JPEG}


def _gallery(posts: dict[str, list[str]]) -> FakeGallery:
    return FakeGallery(
        {
            image_id: {
                "id": image_id,
                "text": f"a prompt for {image_id} --sref 77 --profile abc",
                "media_urls": urls,
                "author_username": f"author_{image_id}",
                "created_at": "2025-03-04T05:06:07+02:00",
                "likes": 3,
            }
            for image_id, urls in posts.items()
        }
    )


async def _export(gallery: FakeGallery, out: Path, **options: Any) -> Any:
    inputs = options.pop("inputs", INPUT)
    hosts = [media_origin(gallery)]
    async with GallerySession(gallery.url, media_hosts=hosts, retry=NO_RETRY) as session:
        return await session.export(inputs, out, **options)


def _status_rows(out: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows = []
    for path in sorted(out.glob("*_status.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def _statuses(out: Path) -> dict[str, str]:
    return {row["key"] or row["id"]: row["status"] for row in _status_rows(out)}


def _load(*args: Any, **kwargs: Any) -> Any:
    """The train split, read whole: `datasets.load_dataset` itself."""
    import datasets

    with _tar_readers_leak():
        rows = datasets.load_dataset(*args, split="train", **kwargs)
        return list(rows)


@contextlib.contextmanager
def _tar_readers_leak() -> Iterator[None]:
    # The tar readers of webdataset (and of datasets' webdataset builder) leave their files
    # to the garbage collector: collected here, their warnings silenced, not in a later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield
        gc.collect()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["imagefolder", "webdataset", "parquet"])
async def test_each_format_reads_back_decoded_with_a_status_row_for_every_input(
    fmt, media_host, tmp_path
):
    out = tmp_path / "out"
    async with _gallery(_posts(media_host)) as gallery:
        summary = await _export(gallery, out, format=fmt, shard_size=3)
    assert _statuses(out) == EXPECTED
    assert summary.duplicates == 1
    assert summary.counts["success"] == 4
    cache = tmp_path / "hf"
    if fmt == "imagefolder":
        rows = _load("imagefolder", data_dir=str(out), cache_dir=str(cache))
        stored = {p.stem: p.read_bytes() for p in out.glob("images/*/*")}
    elif fmt == "webdataset":
        rows = _load("webdataset", data_files=str(out / "*.tar"), cache_dir=str(cache))
        rows = [{"image": row["jpg"], **row["json"]} for row in rows]
        stored = {}
        for path in sorted(out.glob("*.tar")):
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    if member.name.endswith(".jpg"):
                        stored[member.name[:-4]] = tar.extractfile(member).read()  # type: ignore[union-attr]
        assert _webdataset_sizes(out) == {key: _size(body) for key, body in SOURCE.items()}
    else:
        rows = _load("parquet", data_files=str(out / "*[0-9].parquet"), cache_dir=str(cache))
        import pyarrow.parquet as pq

        stored = {
            row["key"]: row["image"]["bytes"]
            for path in sorted(out.glob("*[0-9].parquet"))
            for row in pq.read_table(path).to_pylist()
        }
    assert {row["key"]: row["image"].size for row in rows} == {
        key: _size(body) for key, body in SOURCE.items()
    }
    assert stored == SOURCE  # the source's own bytes, never re-encoded
    first = next(row for row in rows if row["key"] == "p2_1")
    assert first["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert (first["id"], first["image_index"], first["author_username"]) == ("p2", 1, "author_p2")
    assert (first["sref"], first["profile"], first["prompt_kind"]) == ("77", "abc", "plain")
    assert first["created_at"] == "2025-03-04T03:06:07Z"
    assert first["source_url"] == f"{media_host.url}/m/p2b"
    assert len(_load(str(out), cache_dir=str(cache))) == 4  # as the card's YAML says
    card = (out / "README.md").read_text()
    assert "num_examples: 4" in card
    assert "belong to their authors" in card
    assert "GallerySession.export(format=" in card


def _size(body: bytes) -> tuple[int, int]:
    return PNG_SIZE if body == PNG else JPEG_SIZE


PNG_SIZE, JPEG_SIZE = (8, 6), (6, 4)


def _webdataset_sizes(out: Path) -> dict[str, tuple[int, int]]:
    import webdataset

    tars = [str(path) for path in sorted(out.glob("*.tar"))]
    with _tar_readers_leak():
        dataset = webdataset.WebDataset(tars, shardshuffle=False, empty_check=False).decode("pil")
        return {sample["__key__"]: sample["jpg"].size for sample in dataset}


async def test_pictures_downloaded_before_are_reused_and_their_opt_outs_kept(media_host, tmp_path):
    posts = _posts(media_host)
    media = tmp_path / "media"
    async with _gallery(posts) as gallery:
        async with GallerySession(gallery.url, media_hosts=[media_host.origin]) as session:
            for image_id in ("p1", "p2", "p3"):
                await session.download_media(await session.get_image(image_id), media)
        media_host.requests.clear()
        await _export(
            gallery, tmp_path / "out", inputs=["p1", "p2", "p3"], format="parquet", media=media
        )
    assert media_host.requests == {}
    assert _statuses(tmp_path / "out") == {
        "p1_0": "success",
        "p2_0": "success",
        "p2_1": "success",
        "p3_0": "opted_out",
    }
    assert sorted(p.name for p in (media / "p2").iterdir()) == ["0.jpg", "1.png"]  # kept


@pytest.mark.slow
async def test_ignore_opt_out_writes_the_picture_and_the_card_says_so(media_host, tmp_path):
    async with _gallery(_posts(media_host)) as gallery:
        await _export(
            gallery, tmp_path / "out", inputs=["p3"], format="parquet", ignore_opt_out=True
        )
    assert _statuses(tmp_path / "out") == {"p3_0": "success"}
    assert "--ignore-opt-out` was used" in (tmp_path / "out" / "README.md").read_text()
    assert not (tmp_path / "out" / ".media").exists()  # the export's own downloads are gone


async def test_out_must_be_empty_without_resume_and_no_other_directory_is_touched(
    media_host, tmp_path
):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "00000.tar").write_bytes(b"my own file")
    async with _gallery(_posts(media_host)) as gallery:
        with pytest.raises(ExportError, match="not empty"):
            await _export(gallery, foreign, format="webdataset")
        with pytest.raises(ExportError, match="holds no export"):
            await _export(gallery, foreign, format="webdataset", resume=True)
        await _export(gallery, tmp_path / "out", inputs=["p1"], format="webdataset")
        with pytest.raises(ExportError, match="--format webdataset, --shard-size 1000 and"):
            await _export(gallery, tmp_path / "out", inputs=["p1"], format="parquet", resume=True)
    assert (foreign / "00000.tar").read_bytes() == b"my own file"
    assert media_host.requests["p1a"] == 1


async def test_a_resume_with_another_opt_out_choice_is_refused_naming_every_option(
    media_host, tmp_path
):
    async with _gallery(_posts(media_host)) as gallery:
        await _export(gallery, tmp_path / "out", inputs=["p1"], format="webdataset")
        with pytest.raises(ExportError) as refused:
            await _export(
                gallery,
                tmp_path / "out",
                inputs=["p1"],
                format="webdataset",
                resume=True,
                ignore_opt_out=True,
            )
    assert refused.value.message == (
        f"{tmp_path / 'out'} holds an export made with --format webdataset, --shard-size 1000 "
        "and no --ignore-opt-out, but this resume asks for --format webdataset, --shard-size "
        "1000 and --ignore-opt-out: resume it with the same --format, --shard-size and opt-out "
        "choice (format, shard_size and ignore_opt_out from Python)"
    )


@pytest.mark.parametrize("bound", [None, 0])
async def test_an_export_with_its_own_staging_stages_a_file_only_past_its_memory_bound(
    media_host, tmp_path, monkeypatch, bound
):
    # Within the bound, each picture goes from its download to the shard in memory: the
    # shard is the same as one made from the files of a media directory.
    if bound is not None:
        monkeypatch.setattr(meigen_async._export, "KEPT_BYTES", bound)
    keepers: list[Keeper] = []

    class Counted(Keeper):
        def __init__(self, limit: int):
            super().__init__(limit)
            keepers.append(self)

    monkeypatch.setattr(meigen_async._export, "Keeper", Counted)
    own = tmp_path / "own"
    staged: list[bool] = []
    inputs = ["p1", "p2", "p3", "p7"]
    async with _gallery(_posts(media_host)) as gallery:
        await _export(
            gallery,
            own,
            inputs=inputs,
            format="webdataset",
            progress=lambda _: staged.append((own / ".media").exists()),
        )
        await _export(
            gallery, tmp_path / "via", inputs=inputs, format="webdataset", media=tmp_path / "m"
        )
    assert staged == [bound is not None] * len(inputs)
    assert (own / "00000.tar").read_bytes() == (tmp_path / "via" / "00000.tar").read_bytes()
    assert _statuses(own) == _statuses(tmp_path / "via")
    assert not (own / ".media").exists()
    assert [keeper.held for keeper in keepers] == [0]  # every byte kept was given back


def _stats_files(out: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(out.glob("*_stats.json"))]


async def test_repeats_after_the_last_shard_closed_count_once_there_also_on_resume(
    media_host, tmp_path
):
    # One sample a shard: p7's shard closes at once, and the last three inputs are repeats.
    inputs = ["p1", "p1", "p7", "p1", "p7", "p1"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    async with _gallery(_posts(media_host)) as gallery:
        summary = await _export(gallery, whole, inputs=inputs, format="webdataset", shard_size=1)
        # Killed after its last shard, before the repeats past it were counted: a resume.
        await _export(gallery, resumed, inputs=inputs[:3], format="webdataset", shard_size=1)
        again = [
            await _export(
                gallery, resumed, inputs=inputs, format="webdataset", shard_size=1, resume=True
            )
            for _ in range(2)
        ]
    assert summary.duplicates == sum(s["duplicates"] for s in _stats_files(whole)) == 4
    assert [(s["input_end"], s["last_id"], s["duplicates"]) for s in _stats_files(whole)] == [
        (1, "p1", 0),
        (6, "p1", 4),  # the last shard's inputs run to the input's end
    ]
    assert [(a.duplicates, a.shards_written) for a in again] == [(3, 0), (0, 0)]
    assert [(s["input_end"], s["duplicates"]) for s in _stats_files(resumed)] == [(1, 0), (6, 4)]
    for name in ("00000.tar", "00001.tar"):
        assert (resumed / name).read_bytes() == (whole / name).read_bytes()


@pytest.mark.slow
async def test_an_unreachable_host_stops_the_export_without_a_shard_of_its_failures(
    media_host, tmp_path
):
    # Ten good posts, then forty whose host drops every connection: the stop comes after
    # 2 x concurrency (32) in a row.
    posts = {f"g{n}": [media_host.add(f"g{n}", PNG)] for n in range(10)}
    posts.update({f"d{n}": [media_host.add(f"d{n}", b"", status=0)] for n in range(40)})
    out = tmp_path / "out"
    async with _gallery(posts) as gallery:
        with pytest.raises(UpstreamUnreachable):
            await _export(gallery, out, inputs=list(posts), format="webdataset", shard_size=4)
        done = sorted(p.name for p in out.glob("*_stats.json"))
        assert done == ["00000_stats.json", "00001_stats.json"]  # g0-g7: not g8, g9, d0, d1
        for n in range(40):
            media_host.add(f"d{n}", PNG)
        summary = await _export(
            gallery, out, inputs=list(posts), format="webdataset", shard_size=4, resume=True
        )
    assert (summary.shards, summary.shards_written) == (13, 11)
    assert set(_statuses(out).values()) == {"success"}


async def test_close_ends_an_exports_downloads_and_writes_no_row_saying_they_failed(
    media_host, tmp_path
):
    # Two posts whose host is slow: close() comes while both downloads are running.
    posts = {f"s{n}": [media_host.add(f"s{n}", PNG, delay=30.0)] for n in range(2)}
    out = tmp_path / "out"
    async with _gallery(posts) as gallery:
        session = GallerySession(gallery.url, media_hosts=[media_host.origin], retry=NO_RETRY)
        async with session:
            export = asyncio.ensure_future(
                session.export(list(posts), out, format="webdataset", shard_size=1)
            )
            for _ in range(500):  # bounded: until both downloads have been asked for
                if len(media_host.requests) == 2:
                    break
                await asyncio.sleep(0.01)
            await asyncio.wait_for(session.close(), 5)
            with pytest.raises(RuntimeError, match="closed"):
                await asyncio.wait_for(export, 5)
    assert not list(out.glob("*_status.*"))


@pytest.mark.slow
async def test_without_pyarrow_metadata_and_status_tables_are_json_lines(
    media_host, tmp_path, monkeypatch
):
    monkeypatch.setattr(meigen_async._export, "load_arrow", lambda: None)
    out = tmp_path / "out"
    async with _gallery(_posts(media_host)) as gallery:
        with pytest.raises(ExportError, match="needs pyarrow"):
            await _export(gallery, out, format="parquet")
        await _export(gallery, out, inputs=["p1", "p4"], format="imagefolder")
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        ".meigen-export.json",
        "00000_stats.json",
        "00000_status.jsonl",
        "README.md",
        "images",
        "metadata.jsonl",
    ]
    rows = _load("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "hf"))
    assert [(row["key"], row["image"].size) for row in rows] == [("p1_0", PNG_SIZE)]


# -- A kill at any moment ------------------------------------------------------------------------


def _command(gallery: FakeGallery, out: Path, ids: Path) -> list[str]:
    return [
        sys.executable, "-m", "meigen_async", "export", str(out), str(ids),
        "--format", "webdataset", "--shard-size", "2", "--base-url", gallery.url,
        "--media-host", media_origin(gallery), "--no-cache", "--retries", "0",
    ]  # fmt: skip


def _whole_tar(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        names = tar.getnames()
        for member in tar.getmembers():
            assert len(tar.extractfile(member).read()) == member.size  # type: ignore[union-attr]
    return names


@pytest.mark.slow
async def test_a_killed_export_resumed_equals_an_uninterrupted_one(media_host, tmp_path):
    # Posts 0-7 come at once; 8-11 are held back, so the kill lands with shards 4 and 5 to go.
    posts = {
        f"k{n}": [media_host.add(f"k{n}", picture("PNG", (3 + n, 2)), delay=0.0 if n < 8 else 2.0)]
        for n in range(12)
    }
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(posts) + "\n")
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    async with _gallery(posts) as gallery:
        process = await asyncio.create_subprocess_exec(
            *_command(gallery, killed, ids),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(600):  # 30 s at most
            if (killed / "00003_stats.json").exists() or process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        assert not (killed / "00005_stats.json").exists()  # killed mid-run
        for tar in killed.glob("*.tar"):  # only whole shards under their names
            assert len(_whole_tar(tar)) == 6
        for path in killed.iterdir():
            assert path.name.startswith(".") or path.name[:5].isdigit()
        for name in posts:
            media_host.files[name] = (*media_host.files[name][:4], 0.0)
        await _export(
            gallery, killed, inputs=list(posts), format="webdataset", shard_size=2, resume=True
        )
        await _export(gallery, whole, inputs=list(posts), format="webdataset", shard_size=2)
    tars = sorted(p.name for p in whole.glob("*.tar"))
    assert tars == [f"{n:05d}.tar" for n in range(6)]
    assert sorted(p.name for p in killed.glob("*.tar")) == tars
    for name in tars:
        assert (killed / name).read_bytes() == (whole / name).read_bytes()
    assert _statuses(killed) == _statuses(whole)
    assert not any(p.name.endswith(".part") for p in killed.rglob("*"))
    assert not (killed / ".media").exists()
