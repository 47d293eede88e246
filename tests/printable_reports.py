"""A pytest plugin: every test report can reach pytest-xdist's controller, whatever it holds.

execnet, which carries a worker's reports to the controller, refuses a string that UTF-8
cannot encode. A failure whose text held a lone surrogate (what `json.loads` makes of
`"\\ud800"`, a thing these tests feed the library on purpose) ended the whole run in
INTERNALERROR, naming no test, and with exit status 0. Each such character is written as its
escape instead (`\\ud800`), before the report leaves the worker; other text is left alone.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest


def printable(value: Any) -> Any:
    """`value` with every lone surrogate in its strings, at any depth, written as its escape."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {printable(key): printable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(printable(item) for item in value)
    return value


@pytest.hookimpl(wrapper=True)
def pytest_report_to_serializable(
    config: pytest.Config, report: pytest.CollectReport | pytest.TestReport
) -> Generator[None, Any, Any]:
    """The serialized report, made printable: xdist sends this dict as it is."""
    data = yield
    return printable(data)
