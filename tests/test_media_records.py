"""The pure records of resuming: a file's extended attribute, an image's manifest."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

from meigen_async._media_records import (
    ManifestEntry,
    file_record,
    manifest_text,
    read_file_record,
    read_manifest,
    worth_hashing,
)
from meigen_async.media import MediaFile


def _file(name: str = "0.png", url: str = "https://images.meigen.ai/x") -> MediaFile:
    return MediaFile(url, Path("out/a") / name, 10, "ab" * 32, "image/png", 4, 3)


def test_a_manifest_reads_back_what_was_written():
    entries = read_manifest(manifest_text("a", [(0, _file())]))
    media = _file()
    assert entries[0] == ManifestEntry(
        0, media.url, media.path.name, media.bytes, media.sha256, media.content_type
    )


def test_a_manifest_entry_naming_another_path_is_ignored():
    text = manifest_text("a", [(0, _file())]).replace('"0.png"', '"../../etc/passwd.png"')
    assert read_manifest(text) == {}


_URL = "https://images.meigen.ai/x"


def test_a_file_record_reads_back_what_a_rerun_checks():
    record = file_record(_URL, 10, "ab" * 32)
    entry = read_file_record("0.png", record, [_URL])
    assert entry == ManifestEntry(0, _URL, "0.png", 10, "ab" * 32, "image/png", on_file=True)


def test_a_file_record_fits_inside_an_ext4_inode():
    assert len(file_record(_URL * 100, 2**40, "ab" * 32)) <= 60


def test_a_file_record_for_another_url_is_not_believed():
    assert read_file_record("0.png", file_record(_URL, 10, "ab" * 32), [_URL + "?v=2"]) is None


@pytest.mark.parametrize(
    "name", ["00.png", "0.jpeg", "0", "x.png", "\u00b2.png", "1.png", ".0.png"]
)
def test_a_file_record_on_a_name_that_is_not_ours_is_not_believed(name):
    # "1.png": an index with no URL (the image has one); "²": a digit, but not an ASCII one.
    assert read_file_record(name, file_record(_URL, 10, "ab" * 32), [_URL]) is None


def test_an_unreadable_file_record_is_none():
    assert read_file_record("0.png", b"\xff{not a record", [_URL]) is None
    record = bytearray(file_record(_URL, 10, "ab" * 32))
    record[0] = 3  # a later version
    assert read_file_record("0.png", bytes(record), [_URL]) is None


def test_a_file_record_of_version_1_is_not_believed_for_it_cannot_tell_an_opt_out():
    version_1 = b"\x01" + file_record(_URL, 10, "ab" * 32)[1:-1]
    assert read_file_record("0.png", version_1, [_URL]) is None


def test_an_opt_out_is_kept_in_the_file_record_and_in_the_manifest():
    entry = read_file_record("0.png", file_record(_URL, 10, "ab" * 32, opted_out=True), [_URL])
    assert entry is not None
    assert entry.opted_out
    opted = attrs.evolve(_file(), opted_out=True)
    assert read_manifest(manifest_text("a", [(0, opted)]))[0].opted_out
    assert not read_manifest(manifest_text("a", [(0, _file())]))[0].opted_out


def test_an_unreadable_manifest_is_empty():
    assert read_manifest("{not json") == {}
    assert read_manifest(json.dumps({"files": [{"index": "0"}]})) == {}


def test_a_file_is_worth_hashing_only_with_the_same_url_and_size():
    entry = ManifestEntry(0, "https://h/x", "0.png", 10, "ab" * 32, "image/png")
    assert worth_hashing(entry, "https://h/x", 10)
    assert not worth_hashing(entry, "https://h/x", 9)
    assert not worth_hashing(entry, "https://h/other", 10)
    assert not worth_hashing(entry, "https://h/x", None)
    assert not worth_hashing(None, "https://h/x", 10)
