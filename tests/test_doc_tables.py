"""The tables of the docs that mirror code, read from the Markdown and compared with it.

The constructor's parameters and defaults come from `inspect.signature`, the session's methods
from the class, the fields of `SessionStats` and `GalleryImage` from `attrs.fields`, the errors
from the classes (docs/index.md), the modules from the package's files (docs/architecture.md):
a parameter, method, field, error or module added without its row fails here.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import attrs

import meigen_async
from meigen_async import GalleryImage, GallerySession, MediaError, MeigenError, SessionStats

DOCS = Path(__file__).resolve().parent.parent / "docs"
INDEX = DOCS / "index.md"
ARCHITECTURE = DOCS / "architecture.md"
CODE = re.compile(r"`([^`]+)`")
UNESCAPED_BAR = re.compile(r"(?<!\\)\|")


def section(heading: str, page: Path = INDEX) -> str:
    """The text of `page` under `## heading`, up to the next heading of that level."""
    text = page.read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def table(heading: str, number: int = 0, page: Path = INDEX) -> list[list[str]]:
    """The rows of a table under `## heading` (the first, or the `number`th from 0), as cells.

    The header and the `|---|` rule are left out, and escaped bars (`\\|`) unescaped.
    """
    tables = re.findall(r"(?:^\|.*\n)+", section(heading, page), re.M)
    lines = tables[number].splitlines()[2:]
    return [
        [cell.strip().replace("\\|", "|") for cell in UNESCAPED_BAR.split(line)[1:-1]]
        for line in lines
    ]


def names_in(cell: str) -> list[str]:
    """The identifiers a cell names in code spans: "`likes`, `views`" is both."""
    return [span for span in CODE.findall(cell) if span.isidentifier()]


def value_of(written: str) -> Any:
    """A default as a table writes it: a Python literal, or a public name of the package."""
    try:
        return ast.literal_eval(written)
    except (ValueError, SyntaxError):
        pass
    for module in (meigen_async, meigen_async.media, meigen_async.session):
        if written in getattr(module, "__all__", ()):
            return getattr(module, written)
    raise AssertionError(f"{written!r} is neither a literal nor a public name")


# -- The constructor ------------------------------------------------------------------------------


def test_the_constructor_table_lists_every_parameter_in_order_with_its_default() -> None:
    parameters = list(inspect.signature(GallerySession.__init__).parameters.values())[1:]
    rows = table("Constructor parameters")
    shown = [(names_in(name)[0], value_of(CODE.findall(default)[0])) for name, default, _ in rows]
    assert shown == [(p.name, p.default) for p in parameters]


# -- The methods ---------------------------------------------------------------------------------


def _public_methods() -> dict[str, inspect.Signature | None]:
    """Each public method of the class with its signature; None for a property."""
    found: dict[str, inspect.Signature | None] = {}
    for name, member in inspect.getmembers(GallerySession):
        if name.startswith("_"):
            continue
        static = inspect.getattr_static(GallerySession, name)
        found[name] = None if isinstance(static, property) else inspect.signature(member)
    return found


def _shown_calls() -> dict[str, list[tuple[str, Any]] | None]:
    """Each method the table shows, with its parameters as written; None for a property."""
    shown: dict[str, list[tuple[str, Any]] | None] = {}
    for row in table("The session's methods"):
        for span in CODE.findall(row[0]):
            call = span.removeprefix("await ")
            name = call.split("(")[0]
            assert name not in shown, f"{name} has two rows"
            if "(" not in call:
                shown[name] = None
                continue
            # "get_images(ids, *, return_exceptions=False)" reads as the parameters of a def.
            args = ast.parse(f"def {call}: pass").body[0].args  # type: ignore[attr-defined]
            positional = [a.arg for a in args.args]
            defaults = [ast.literal_eval(d) for d in args.defaults]
            written = [(n, inspect.Parameter.empty) for n in positional]
            for index, default in enumerate(defaults, len(positional) - len(defaults)):
                written[index] = (positional[index], default)
            for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
                written.append(
                    (
                        arg.arg,
                        inspect.Parameter.empty if default is None else ast.literal_eval(default),
                    )
                )
            shown[name] = written
    return shown


def test_the_method_table_has_a_row_for_each_public_method_and_property() -> None:
    assert sorted(_shown_calls()) == sorted(_public_methods())


def test_the_method_table_shows_each_methods_parameters_and_defaults() -> None:
    methods = _public_methods()
    for name, written in _shown_calls().items():
        signature = methods.get(name)
        expected = (
            None
            if signature is None
            else [(p.name, p.default) for p in signature.parameters.values() if p.name != "self"]
        )
        assert written == expected, name


async def test_the_attribute_table_has_a_row_for_each_public_attribute_of_a_session() -> None:
    async with GallerySession() as session:
        attributes = [name for name in vars(session) if not name.startswith("_")]
    shown = [names_in(row[0])[0] for row in table("The session's methods", 1)]
    assert sorted(shown) == sorted(attributes)


# -- The results ---------------------------------------------------------------------------------


def test_the_session_stats_table_lists_every_field_in_order() -> None:
    shown = [name for row in table("SessionStats") for name in names_in(row[0])]
    assert shown == [field.name for field in attrs.fields(SessionStats)]


def _type_name(annotation: object) -> str:
    """A type as the table writes it: `tuple[PromptSegment, ...] | None`, no module paths."""
    written = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", written)


def test_the_gallery_image_table_lists_every_field_with_its_type_and_default() -> None:
    shown = []
    for names, kind, _ in table("GalleryImage"):
        type_, *default = CODE.findall(kind)
        for name in names_in(names):
            shown.append((name, type_, value_of(default[0]) if default else attrs.NOTHING))
    fields = [(f.name, _type_name(f.type), f.default) for f in attrs.fields(GalleryImage)]
    assert shown == fields


# -- The errors ----------------------------------------------------------------------------------


def test_the_error_table_lists_every_error_but_the_kinds_of_media_error() -> None:
    # The kinds of MediaError are listed on media.md, where downloads are explained.
    shown = [names_in(row[0])[0] for row in table("Errors")]
    public = [getattr(meigen_async, name) for name in meigen_async.__all__]
    errors = [
        error.__name__
        for error in public
        if isinstance(error, type) and issubclass(error, MeigenError)
        if error is MediaError or not issubclass(error, MediaError)
    ]
    assert sorted(shown) == sorted(errors)
    assert shown[0] == "MeigenError"


# -- The modules ---------------------------------------------------------------------------------


def test_the_architecture_table_has_a_row_for_each_module_of_the_package() -> None:
    package = Path(meigen_async.__file__).parent
    modules = [path.relative_to(package).as_posix() for path in package.rglob("*.py")]
    shown = [CODE.findall(row[0])[0] for row in table("The pieces", page=ARCHITECTURE)]
    assert sorted(shown) == sorted(modules)
