"""The export's shards: which shard a post goes to, the names in OUT, stats and the marker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from meigen_async._export_rules import Sample
from meigen_async._export_shards import (
    Marker,
    ShardAssembler,
    ShardRecord,
    Tail,
    done_prefix,
    marker_text,
    read_marker,
    read_stats,
    shard_of_name,
    shard_stats,
    stats_with_tail,
)


def _samples(count: int) -> list[Sample]:
    return [Sample({"status": "success"}) for _ in range(count)]


def test_a_shard_closes_before_a_post_that_would_overfill_it_and_no_post_is_split():
    assembler = ShardAssembler(size=4)
    sizes = [2, 1, 3, 1, 6, 1]  # pictures a post
    shards = [
        shard for n, size in enumerate(sizes) for shard in assembler.add(n, f"p{n}", _samples(size))
    ]
    assert [s.input_end for s in shards] == [2, 4, 5]  # a full shard closes at once
    last = assembler.finish(len(sizes))
    assert last is not None
    shards.append(last)
    assert [len(shard.samples) for shard in shards] == [3, 4, 6, 1]
    assert [(s.input_start, s.input_end) for s in shards] == [(0, 2), (2, 4), (4, 5), (5, 6)]
    assert [(s.first_id, s.last_id) for s in shards] == [
        ("p0", "p1"),
        ("p2", "p3"),
        ("p4", "p4"),
        ("p5", "p5"),
    ]


def test_a_duplicate_input_belongs_to_the_open_shard_and_counts_there():
    assembler = ShardAssembler(size=2, number=7, start=100)
    assert assembler.add(100, "a", _samples(1)) == []
    assert assembler.add(101, "a", (), duplicate=True) == []
    [shard] = assembler.add(102, "b", _samples(1))
    assert (shard.number, shard.input_end, shard.duplicates, shard.last_id) == (7, 103, 1, "b")
    assert assembler.finish(103) is None


def test_repeats_after_the_last_shard_closed_are_a_tail_counted_in_its_stats():
    import json

    assembler = ShardAssembler(size=1, number=3, start=10)
    [shard] = assembler.add(10, "a", _samples(1))
    assert assembler.add(11, "a", (), duplicate=True) == []
    assert assembler.add(12, "a", (), duplicate=True) == []
    tail = assembler.finish(13)
    assert tail == Tail(number=3, input_start=11, input_end=13, last_id="a", duplicates=2)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    text = json.dumps(
        shard_stats(shard, fmt="webdataset", shard_size=1, size=9, started=now, ended=now)
    )
    stats = stats_with_tail(text, tail, "webdataset", 1)
    assert stats is not None
    assert (stats["input_end"], stats["last_id"], stats["duplicates"]) == (13, "a", 2)
    # Stats that no longer end where the repeats start are not changed.
    assert stats_with_tail(json.dumps(stats), tail, "webdataset", 1) is None


def _stats(**changes: object) -> dict[str, object]:
    shard = ShardAssembler(size=3, number=2, start=10)
    shard.add(10, "a", _samples(2))
    closed = shard.finish(12)
    assert closed is not None
    now = datetime(2025, 1, 1, tzinfo=UTC)
    stats = shard_stats(closed, fmt="parquet", shard_size=3, size=99, started=now, ended=now)
    return {**stats, **changes}


def test_stats_read_back_as_a_done_shard():
    import json

    record = read_stats(json.dumps(_stats()), 2, "parquet", 3)
    assert record is not None
    assert (record.input_start, record.input_end, record.bytes) == (10, 12, 99)
    assert record.counts["success"] == 2


@pytest.mark.parametrize(
    "changes",
    [
        {"shard": 3},
        {"format": "webdataset"},
        {"shard_size": 4},
        {"input_end": 10},
        {"bytes": -1},
        {"status": {"success": "2"}},
        {"first_id": None},
    ],
)
def test_stats_of_another_shard_or_export_or_garbled_are_not_done(changes):
    import json

    assert read_stats(json.dumps(_stats(**changes)), 2, "parquet", 3) is None
    assert read_stats("{not json", 2, "parquet", 3) is None


def _record(number: int, start: int, end: int) -> ShardRecord:
    return ShardRecord(number, start, end, "a", "b", {}, 0)


def test_a_resume_keeps_the_done_shards_from_zero_up_to_the_first_gap():
    records = {0: _record(0, 0, 5), 1: _record(1, 5, 9), 3: _record(3, 12, 14)}
    assert [r.number for r in done_prefix(records)] == [0, 1]
    assert done_prefix({0: _record(0, 0, 5), 1: _record(1, 6, 9)}) == [_record(0, 0, 5)]
    assert done_prefix({1: _record(1, 0, 5)}) == []


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("00012.tar", 12),
        ("00012.parquet", 12),
        ("00012_status.parquet", 12),
        ("00012_status.jsonl", 12),
        ("123456_stats.json", 123456),
        ("12.tar", None),
        ("00012.tar.bak", None),
        ("notes.txt", None),
        ("\u0661\u0662\u0663\u0664\u0665.tar", None),
    ],
)
def test_only_names_of_our_shards_are_ours(name, number):
    assert shard_of_name(name) == number


def test_the_marker_reads_back_and_anything_else_is_no_marker():
    marker = Marker("imagefolder", 500, True)
    assert read_marker(marker_text(marker)) == marker
    for text in ("{}", "[]", "nope", '{"meigen_async_export": 1, "format": "zip"}'):
        assert read_marker(text) is None
