"""The API reference: every public name once, each field and parameter documented, no reST."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import slow_only

from meigen_async import MeigenError

griffe = pytest.importorskip("griffe")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from public_names import documented_names, load_package, public_modules  # noqa: E402

# One worker loads the package with griffe (a second) and builds the site, not both.
pytestmark = pytest.mark.xdist_group("docs")

REFERENCE = ROOT / "docs" / "reference.md"
ROLE = re.compile(r":(?:py:)?(?:class|meth|func|data|attr|mod|exc|obj):`")
ENTRY = re.compile(r"^::: (\S+)$", re.M)
TREE_ITEM = re.compile(r"^( *)- \[`(\w+)`\]\[([\w.]+)\](?:, also an? (.+))?$")


@pytest.fixture(scope="module")
def package() -> griffe.Module:
    return load_package()


def _public_objects(package: griffe.Module) -> Iterator[griffe.Object]:
    for path in documented_names(package):
        yield package.modules_collection[path]


def _imported(name: str) -> object:
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


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


@pytest.mark.slow
def test_every_public_field_and_parameter_is_documented_with_a_type(
    package: griffe.Module,
) -> None:
    problems = [problem for obj in _public_objects(package) for problem in _undocumented(obj)]
    assert problems == []


@pytest.mark.slow
def test_every_public_module_says_what_is_public_in_its_all(package: griffe.Module) -> None:
    assert [m.path for m in public_modules(package) if m.exports is None] == []


def test_every_public_name_has_one_entry_in_the_reference_under_its_import_name(
    package: griffe.Module,
) -> None:
    wanted = Counter(documented_names(package).values())
    entries = Counter(ENTRY.findall(REFERENCE.read_text(encoding="utf-8")))
    missing, extra = wanted - entries, entries - wanted
    assert (sorted(missing), sorted(extra)) == ([], []), (
        "docs/reference.md: add a `::: name` entry for each missing name, and remove each "
        "extra one (a name documented twice, under another name, or no longer public)"
    )


def _error_tree() -> list[tuple[str, str | None, list[str]]]:
    """Each class of the reference's error tree: its entry, its parent's, its other bases."""
    text = REFERENCE.read_text(encoding="utf-8")
    section = text[text.index("## Errors") :]
    section = section[: section.index("\n## ", 1)]
    # A long item goes on in a line of its own, indented: one item a logical line.
    section = re.sub(r"\n {3,}(?![ -])", " ", section)
    tree: list[tuple[str, str | None, list[str]]] = []
    parents: dict[int, str] = {}
    for line in section.splitlines():
        item = TREE_ITEM.match(line)
        if item is None:
            continue
        indent, shown, name, also = item.groups()
        assert name.rsplit(".", 1)[1] == shown, line
        depth = len(indent) // 4
        parents[depth] = name
        others = re.findall(r"`(\w+)`", also or "")
        tree.append((name, parents.get(depth - 1) if depth else None, others))
    return tree


def test_the_references_error_tree_holds_every_error_under_its_own_bases(
    package: griffe.Module,
) -> None:
    tree = _error_tree()
    shown = {name: (_imported(name), parent, others) for name, parent, others in tree}
    for name, (error, parent, others) in shown.items():
        assert isinstance(error, type)
        first, *rest = error.__bases__
        expected_parent = None if first is Exception else first
        assert (parent and _imported(parent), others) == (
            expected_parent,
            [base.__name__ for base in rest],
        ), name
    errors = {
        name
        for name in documented_names(package).values()
        if isinstance(c := _imported(name), type) and issubclass(c, MeigenError)
    }
    assert sorted(shown) == sorted(errors)
    assert len(tree) == len(shown)


@pytest.mark.slow
def test_no_docstring_in_the_package_or_the_examples_holds_rest_markup() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "markdown_docstrings.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs site, built once per test process by `mkdocs build --strict`.

    `make test` builds it first, strictly, and names it in `$MEIGEN_BUILT_SITE`: that one is
    read rather than built again (seconds of a worker's time).
    """
    given = os.environ.get("MEIGEN_BUILT_SITE")
    if given:
        return Path(given)
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
def test_the_built_reference_has_one_heading_for_each_public_name(
    site: Path, package: griffe.Module
) -> None:
    html = (site / "reference" / "index.html").read_text(encoding="utf-8")
    counts = {name: html.count(f'id="{name}"') for name in documented_names(package).values()}
    assert {name: n for name, n in counts.items() if n != 1} == {}


@pytest.mark.slow
def test_the_built_reference_shows_defaults_beside_descriptions_not_in_a_fourth_column(
    site: Path,
) -> None:
    html = (site / "reference" / "index.html").read_text(encoding="utf-8")
    # A table with a column of defaults runs past the content's width, and the rest is cut.
    assert "<th>Default</th>" not in html
    assert "DEFAULT:" in _text(html)


@pytest.mark.slow
def test_the_built_reference_links_its_cross_references(site: Path) -> None:
    html = (site / "reference" / "index.html").read_text(encoding="utf-8")
    # The bots module's summary names GalleryImage: a link to its entry, not plain text.
    assert re.search(r'<a [^>]*href="#meigen_async\.GalleryImage"', html)
