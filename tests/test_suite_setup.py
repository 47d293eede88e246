"""The suite's own setup: what `make test` relies on to keep timed tests apart."""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("processes")
def test_a_test_marked_with_a_group_runs_in_its_groups_worker(
    request: pytest.FixtureRequest,
) -> None:
    # The tests that time several processes share one worker (`--dist loadgroup`). pytest 9.2
    # broke that silently (pytest-dev/pytest-xdist#1386: the group is no longer added to the
    # node id, so the tests were spread over both workers): this fails when it happens again.
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("only under pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@processes")
