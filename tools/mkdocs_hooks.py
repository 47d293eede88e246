"""mkdocs hooks: the package version, read from `meigen_async/_version.py`, in the site's title."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

_VERSION_FILE = Path(__file__).resolve().parent.parent / "meigen_async" / "_version.py"


def package_version() -> str:
    """`__version__` as `_version.py` assigns it, read without importing the package."""
    for node in ast.parse(_VERSION_FILE.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__version__" for target in node.targets
        ):
            value = ast.literal_eval(node.value)
            if isinstance(value, str):
                return value
    raise RuntimeError(f"no __version__ in {_VERSION_FILE}")


def on_config(config: Any) -> Any:
    """Show the version next to the site's name and in the footer."""
    version = package_version()
    config["site_name"] = f"{config['site_name']} {version}"
    config["extra"]["version_number"] = version
    config["copyright"] = (
        f"meigen-async {version}. No public repository yet: the source is the checkout "
        "these pages were built from (CHANGELOG.md, docs/)."
    )
    return config
