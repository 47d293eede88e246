"""What `bulk` keeps of its failures (`cli/_failures.py`): a tally in flat memory, and the
`--failed` file written in whole lines as ids fail. Pure: no network, no event loop."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest

from meigen_async.cli import FailureTally
from meigen_async.cli._failures import FailedIdsWriter


def test_many_failures_are_grouped_by_kind_with_counts_and_examples() -> None:
    failures = FailureTally()
    for i in range(12):
        failures.add(f"n{i}", "ImageNotFound", f"HTTP 404 for image n{i}")
    failures.add("t1", "TransportError", "refused")
    assert failures.summary(100) == [
        "meigen-async: 13 of 100 ids failed:",
        "  ImageNotFound: 12 ids (n0, n1, n2, ...)",
        "    e.g. HTTP 404 for image n0",
        "  TransportError: 1 ids (t1)",
        "    e.g. refused",
    ]


def test_a_few_failures_are_listed_one_a_line_in_the_order_they_came() -> None:
    failures = FailureTally()
    failures.add("b", "MediaNotAllowed", "refused 'http://x/0.png'")
    failures.add("a", "ImageNotFound", "HTTP 404")
    assert failures.summary(5) == [
        "meigen-async: 2 of 5 ids failed:",
        "  b: refused 'http://x/0.png'",
        "  a: HTTP 404",
    ]


def failing_run(count: int) -> int:
    """The peak memory of `count` failures through the tally and the --failed writer."""
    written = 0

    def write(data: memoryview) -> int:
        nonlocal written
        written += len(data)
        return len(data)

    tracemalloc.start()
    try:
        failures, failed = FailureTally(), FailedIdsWriter(write)
        for number in range(count):
            image_id = f"{10**18 + number}"
            kind = ("ImageNotFound", "MediaNotAllowed", "MediaWriteError")[number % 3]
            failures.add(image_id, kind, f"image {image_id} failed: {kind}")
            failed.add(image_id)
        failed.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert failures.total == count
    assert written == count * 20  # 19 digits and a newline each: every id handed on
    return peak


@pytest.mark.slow
def test_memory_does_not_grow_with_the_number_of_failures() -> None:
    small, large = failing_run(2_000), failing_run(20_000)
    # Ten times the failures, the same peak: the batch and the examples, not the ids (the
    # list of tuples this replaced held about 350 bytes a failure: 6 MB more here).
    assert large < small + 4096, (small, large)


def test_the_failed_file_gets_whole_lines_even_from_short_writes() -> None:
    chunks: list[bytes] = []

    def short_write(data: memoryview) -> int:
        # A raw file that takes at most 7 bytes a call, as a signal or a full disk may cut it.
        chunks.append(bytes(data[:7]))
        return min(7, len(data))

    failed = FailedIdsWriter(short_write)
    ids = [f"id{number:05}" for number in range(1000)]
    for image_id in ids:
        failed.add(image_id)
    failed.flush()
    assert b"".join(chunks).decode().splitlines() == ids


def test_a_batch_goes_out_as_whole_lines_before_the_end() -> None:
    batches: list[bytes] = []
    failed = FailedIdsWriter(record(batches))
    for number in range(2000):
        failed.add(f"{10**18 + number}")
    assert batches  # before any flush: the file fills as the run goes
    assert all(batch.endswith(b"\n") for batch in batches)


def test_an_id_read_from_bytes_that_are_not_utf8_is_written_back_as_those_bytes() -> None:
    batches: list[bytes] = []
    failed = FailedIdsWriter(record(batches))
    failed.add(b"\xffbad\x00".decode("utf-8", "surrogateescape"))
    failed.add("\ud800")  # a surrogate no byte was read as: escaped, never a crash
    failed.flush()
    assert batches == [b"\xffbad\x00\n\\ud800\n"]


def test_a_file_that_takes_no_bytes_is_an_error_not_a_spin() -> None:
    failed = FailedIdsWriter(lambda data: 0)
    failed.add("a")
    with pytest.raises(OSError, match="took none of the bytes"):
        failed.flush()


def record(batches: list[bytes]) -> Callable[[memoryview], int]:
    def write(data: memoryview) -> int:
        batches.append(bytes(data))
        return len(data)

    return write
