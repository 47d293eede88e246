"""The command line."""

from __future__ import annotations

import pytest

from meigen_async.cli import main, run_demo


async def test_demo_fetches_the_sample_with_one_request_per_distinct_id() -> None:
    report = await run_demo()
    assert report.requested == 121
    assert report.fetched == 120
    assert report.requests == 61
    assert list(report.errors) == ["1999999999999999999"]
    assert report.coalesced >= 20
    assert report.cache_hits == 61


def test_demo_command_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "images fetched     120" in out
    assert "upstream requests  61" in out
