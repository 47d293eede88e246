"""The package's public names, and the one name each is documented under in the API reference.

A public module is one whose dotted path has no part starting with `_`; its public names are
those in its `__all__`. One object may be public under several names (`GalleryImage` is in
both `meigen_async.__all__` and `meigen_async.models.__all__`): docs/reference.md documents it
once, under the name a user imports it by. That is `meigen_async.<name>` when the package
itself exports it, else the name in the public module that defines it, else in the first
public module (alphabetically) that exports it.

Read statically with griffe, so that re-exports resolve to what they name without importing
anything. tests/test_docs.py and tools/markdown_docstrings.py both use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import griffe

PACKAGE = "meigen_async"
ROOT = Path(__file__).resolve().parent.parent


def load_package() -> griffe.Module:
    """The package, as griffe reads it from the checkout, with Google-style docstrings."""
    package = griffe.load(
        PACKAGE, search_paths=[str(ROOT)], docstring_parser="google", resolve_aliases=True
    )
    assert isinstance(package, griffe.Module)
    return package


def public_modules(package: griffe.Module) -> Iterator[griffe.Module]:
    """The package and every module under it with no `_` part in its path, package first."""
    yield package
    for name, module in sorted(package.modules.items()):
        if not name.startswith("_"):
            yield from public_modules(module)


def final_target(obj: griffe.Object | griffe.Alias) -> griffe.Object | None:
    """What `obj` names in the end, or None when that cannot be found (an outside import)."""
    try:
        target = obj.final_target if obj.is_alias else obj
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    return target if isinstance(target, griffe.Object) else None


def exported(module: griffe.Module) -> list[tuple[str, griffe.Object | None]]:
    """Each name in `module`'s `__all__`, with the object it names (None if not found)."""
    names = [str(name) for name in module.exports or ()]
    return [
        (name, final_target(module[name]) if name in module.members else None) for name in names
    ]


def documented_names(package: griffe.Module) -> dict[str, str]:
    """The path of every public object, mapped to the name the reference documents it by."""
    candidates: dict[str, list[str]] = {}
    for module in public_modules(package):
        for name, target in exported(module):
            if target is not None:
                candidates.setdefault(target.path, []).append(f"{module.path}.{name}")

    def rank(path: str, name: str) -> tuple[int, str]:
        module = name.rsplit(".", 1)[0]
        if module == PACKAGE:
            return (0, name)
        return (1 if path.rsplit(".", 1)[0] == module else 2, name)

    return {
        path: min(names, key=lambda name: rank(path, name)) for path, names in candidates.items()
    }
