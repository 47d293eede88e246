"""The command line's `export`: its inputs (a file, stdin, a search, every post), its exit
statuses and what it says."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import pytest
from conftest import MediaHost, picture
from helpers import media_origin

from meigen_async import ExportSummary
from meigen_async.cli import main
from meigen_async.cli._export import export_summary
from meigen_async.testing import FakeGallery


async def run(*argv: str) -> int:
    """``main(argv)``'s exit status, run in a worker thread so that this loop keeps serving."""

    def status() -> int:
        try:
            return main(list(argv))
        except SystemExit as stop:  # argparse's own errors
            return int(stop.code or 0)

    return await asyncio.to_thread(status)


@pytest.fixture
async def posts(media_host: MediaHost) -> FakeGallery:
    gallery = FakeGallery(
        [
            {
                "id": "n1",
                "text": "neon city at night",
                "media_urls": [media_host.add("a", picture())],
            },
            {
                "id": "n2",
                "text": "neon rain",
                "media_urls": [media_host.add("b", picture("JPEG"), "image/jpeg")],
            },
            {
                "id": "f1",
                "text": "a forest",
                "media_urls": [media_host.add("c", b"no", status=404)],
            },
        ]
    )
    await gallery.start()
    yield gallery  # type: ignore[misc]
    await gallery.close()


def _options(gallery: FakeGallery) -> list[str]:
    origin = media_origin(gallery)
    return ["--base-url", gallery.url, "--media-host", origin, "--no-cache", "--retries", "0"]


@pytest.mark.slow
async def test_export_of_an_ids_file_says_what_it_wrote_and_fails_for_a_failed_sample(
    posts, tmp_path, capsys
):
    ids = tmp_path / "ids.txt"
    ids.write_text("n1\nf1\n")
    out = tmp_path / "out"
    argv = ["export", str(out), str(ids), "--format", "parquet", *_options(posts)]
    assert await run(*argv) == 1
    said = capsys.readouterr().err
    assert f"parquet in {out}: 1 shard written, 2 samples (1 success, 1 not_found)" in said
    assert sorted(p.name for p in out.glob("*.parquet")) == [
        "00000.parquet",
        "00000_status.parquet",
    ]
    assert f"meigen-async export {out} {ids} --format parquet" in (out / "README.md").read_text()


@pytest.mark.slow
async def test_export_of_a_search_exports_its_hits(posts, tmp_path):
    out = tmp_path / "out"
    argv = ["export", str(out), "--query", "neon", "--format", "webdataset", *_options(posts)]
    assert await run(*argv) == 0
    assert posts.searches[0][0] == "neon"
    assert "the hits of the search 'neon'" in (out / "README.md").read_text()
    assert [p.name for p in out.glob("*.tar")] == ["00000.tar"]


@pytest.mark.slow
async def test_export_all_browses_the_gallery_with_the_empty_query(posts, tmp_path):
    out = tmp_path / "out"
    argv = ["export", str(out), "--all", "--format", "imagefolder", *_options(posts)]
    assert await run(*argv) == 1
    assert len(list(out.glob("images/*/*"))) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["--format", "parquet"],
        ["ids.txt", "--query", "x", "--format", "parquet"],
        ["--all", "--query", "x", "--format", "parquet"],
        ["ids.txt", "--format", "zip"],
        ["ids.txt", "--format", "parquet", "--shard-size", "10001"],
    ],
)
async def test_export_without_exactly_one_input_or_with_a_bad_option_is_a_usage_error(
    argv, tmp_path, capsys
):
    assert (
        await run("export", str(tmp_path / "out"), *argv, "--base-url", "http://127.0.0.1:9") == 2
    )
    assert capsys.readouterr().err.startswith("meigen-async: error: ")
    assert not (tmp_path / "out").exists()


async def test_export_into_a_file_is_a_usage_error_and_leaves_the_file(tmp_path, capsys):
    mine = tmp_path / "afile"
    mine.write_text("mine")
    argv = ["export", str(mine), "--query", "x", "--format", "parquet"]
    assert await run(*argv, "--base-url", "http://127.0.0.1:9") == 2
    said = f"meigen-async: error: OUT {str(mine)!r} is not a directory: give a new or empty one\n"
    assert capsys.readouterr().err == said
    assert mine.read_text() == "mine"


async def test_export_into_a_directory_that_is_not_empty_is_refused(posts, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    argv = ["export", str(tmp_path / "out"), "--query", "neon", "--format", "parquet"]
    assert await run(*argv, *_options(posts)) == 1
    assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


@pytest.mark.slow
async def test_the_offline_examples_of_export_help_run_against_the_gallery_serve_serves(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("COLUMNS", "300")  # one line an example
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    examples = capsys.readouterr().out.split("examples")[1].split("\n\n")[0].splitlines()[1:]
    offline = [shlex.split(line) for line in examples if "the real service" not in line]
    assert sum(words[1] == "export" for words in offline) >= 2
    monkeypatch.chdir(tmp_path)
    # What 'meigen-async serve --port 8080' serves, on a free port.
    async with FakeGallery.sample() as gallery:
        for words in offline:
            words = [
                word.replace("http://127.0.0.1:8080", gallery.url).replace(
                    "127.0.0.1:8080", gallery.media_host
                )
                for word in words
            ]
            target = words.index(">") if ">" in words else len(words)
            assert await run(*words[1:target]) == 0, words
            if target < len(words):
                listed = capsys.readouterr().out  # what 'serve --list' printed
                await asyncio.to_thread(Path(words[target + 1]).write_text, listed)


def test_the_summary_says_one_shard_one_sample_and_a_size_in_human_units():
    counts = {"success": 1, "not_found": 0, "failed_to_download": 0, "refused": 0}
    summary = ExportSummary(Path("out"), "webdataset", 1, 1, counts, 36_700, 0, 0.52)
    assert export_summary(summary) == (
        "meigen-async: webdataset in out: 1 shard written, 1 sample (1 success), 36.7 kB in 0.5 s"
    )
