"""The conftest's report hook (tests/printable_reports.py), in a pytest-xdist run of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from printable_reports import printable

HERE = Path(__file__).resolve().parent


def test_a_lone_surrogate_is_written_as_its_escape_at_any_depth() -> None:
    report = {"longrepr": {"lines": ["a \ud800 b", ("\udfff",)]}, "when": "call", "n": 1}
    assert printable(report) == {
        "longrepr": {"lines": ["a \\ud800 b", ("\\udfff",)]},
        "when": "call",
        "n": 1,
    }


def test_text_that_utf8_can_encode_is_left_as_it_is() -> None:
    text = "Caf\u00e9 \U0001f600 \\ud800"
    assert printable(text) is text


@pytest.mark.slow
def test_a_failure_whose_message_holds_a_lone_surrogate_is_reported_by_name_under_xdist(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_lone.py").write_text(
        'def test_lone_surrogate():\n    assert "a \\ud800 b" == "x"\n', encoding="utf-8"
    )
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    # Only the plugins this needs: a run in seconds, whatever else is installed.
    env = {**os.environ, "PYTHONPATH": path, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    plugins = ["-p", "xdist.plugin", "-p", "printable_reports", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *plugins, "-n", "2", "test_lone.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "INTERNALERROR" not in output
    assert "FAILED test_lone.py::test_lone_surrogate" in output
    assert result.returncode == 1, output
