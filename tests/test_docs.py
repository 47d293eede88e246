"""The API reference: every public field and parameter documented, no reST left in the HTML."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import slow_only

griffe = pytest.importorskip("griffe")

ROOT = Path(__file__).resolve().parent.parent
# The modules docs/reference.md renders, besides the package's own `__all__`.
REFERENCE_MODULES = ("testing", "bots", "prompt", "cache", "shared", "redis_cache")
ROLE = re.compile(r":(?:py:)?(?:class|meth|func|data|attr|mod|exc|obj):`")


def _public_objects() -> Iterator[griffe.Object]:
    package = griffe.load("meigen_async", search_paths=[str(ROOT)], docstring_parser="google")
    modules = [package, *(package[name] for name in REFERENCE_MODULES)]
    seen: set[str] = set()
    for module in modules:
        names = [str(n) for n in module.exports] if module.exports is not None else []
        for name in names:
            target = module[name]
            target = target.final_target if target.is_alias else target
            if target.path not in seen:
                seen.add(target.path)
                yield target


def _undocumented(obj: griffe.Object) -> Iterator[str]:
    if obj.is_class:
        documented = {
            item.name
            for section in (obj.docstring.parsed if obj.docstring else [])
            if section.kind.value in ("parameters", "attributes")
            for item in section.value
        }
        is_enum = any(str(base).split(".")[-1] == "Enum" for base in obj.bases)
        for name, member in obj.members.items():
            if name.startswith("_") or member.is_alias:
                continue
            if member.is_attribute and not member.docstring and name not in documented:
                yield f"{obj.path}.{name}: field without a docstring"
            if member.is_attribute and member.annotation is None and not is_enum:
                yield f"{obj.path}.{name}: field without a type"
            if member.is_function or member.is_class:
                yield from _undocumented(member)
        # A constructor parameter stored as a documented field of the same name is documented.
        documented |= {n for n, m in obj.all_members.items() if m.is_attribute and m.docstring}
        init = obj.members.get("__init__")
        if init is not None and init.is_function:
            for parameter in init.parameters:
                variadic = parameter.kind.value in ("variadic positional", "variadic keyword")
                named = parameter.name not in ("self", *documented)
                if named and not variadic and not parameter.name.startswith("_"):
                    yield f"{obj.path}({parameter.name}): parameter not in its docstring"
    elif obj.is_function:
        for parameter in obj.parameters:
            if parameter.name not in ("self", "cls") and parameter.annotation is None:
                yield f"{obj.path}({parameter.name}): parameter without a type"


def test_every_public_field_and_parameter_is_documented_with_a_type() -> None:
    problems = [problem for obj in _public_objects() for problem in _undocumented(obj)]
    assert problems == []


@pytest.mark.slow
def test_no_docstring_in_the_package_holds_rest_markup() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "markdown_docstrings.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs site, built once per test process by `mkdocs build --strict`."""
    pytest.importorskip("mkdocs")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
        cwd=ROOT,
        env=env,
        check=True,
    )
    return out


@pytest.fixture
def site(request: pytest.FixtureRequest) -> Path:
    """The built site; building it takes seconds, so only for tests marked slow."""
    slow_only(request, "the built docs site (mkdocs build takes seconds)")
    built: Path = request.getfixturevalue("built_site")
    return built


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


@pytest.mark.slow
def test_the_built_reference_shows_no_literal_rest_roles(site: Path) -> None:
    text = _text((site / "reference" / "index.html").read_text(encoding="utf-8"))
    assert ROLE.findall(text) == []
    assert "``" not in text


@pytest.mark.slow
def test_the_built_reference_shows_each_field_of_gallery_image_with_type_and_default(
    site: Path,
) -> None:
    html = (site / "reference" / "index.html").read_text(encoding="utf-8")
    text = re.sub(r"\s+", " ", _text(html))
    for shown in ("likes: int = 0", "media_urls: tuple[str, ...] = ()", "max_retries: int = 3"):
        assert shown in text


@pytest.mark.slow
def test_the_built_reference_links_its_cross_references(site: Path) -> None:
    html = (site / "reference" / "index.html").read_text(encoding="utf-8")
    # The bots module's summary names GalleryImage: a link to its entry, not plain text.
    assert re.search(r'<a [^>]*href="#meigen_async\.GalleryImage"', html)
