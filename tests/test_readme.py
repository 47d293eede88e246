"""The README's install command installs the checkout, and its first example runs offline."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INDEX = ROOT / "docs" / "index.md"


def install_commands(page: Path) -> list[list[str]]:
    """The commands of the first `sh` block under the page's "## Install" heading."""
    text = page.read_text(encoding="utf-8")
    block = re.search(r"^## Install\n.*?```sh\n(.*?)```", text, re.S | re.M)
    assert block is not None, f"{page.name} has no sh block under ## Install"
    return [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]


@pytest.mark.slow
def test_the_readmes_install_command_installs_the_package_from_the_checkout(
    tmp_path: Path,
) -> None:
    [command] = install_commands(README)
    assert command[:2] == ["pip", "install"]
    # As written, but into a directory of its own, offline, and without the dependencies
    # (installed already, and not what this checks).
    isolated = ["--target", str(tmp_path), "--no-deps", "--no-build-isolation", "--no-index"]
    result = subprocess.run(
        [sys.executable, "-m", "pip", *command[1:], *isolated, "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "meigen_async" / "__init__.py").is_file()
    assert (tmp_path / "meigen_async" / "data" / "sample_gallery.jsonl").is_file()


def test_the_home_page_installs_as_the_readme_does() -> None:
    assert install_commands(INDEX) == install_commands(README)


def test_every_extra_the_install_texts_name_is_declared() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    for page in (README, INDEX):
        named = set(re.findall(r"(?:\.|meigen-async)\[(\w+)\]", page.read_text(encoding="utf-8")))
        assert named, page.name
        assert named <= set(declared), page.name


@pytest.mark.slow
def test_the_readmes_first_python_block_runs_offline_as_it_is() -> None:
    readme = README.read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", readme, re.S)
    assert block is not None
    assert "FakeGallery" in block.group(1)
    result = subprocess.run(
        [sys.executable, "-c", block.group(1)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # The sample serves its pictures itself: even the media URL names 127.0.0.1.
    assert result.stdout.startswith("nanobanana 2048 http://127.0.0.1:")
