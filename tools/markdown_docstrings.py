"""Rewrite the reST markup left in docstrings as Markdown, in place: the package's, the examples'.

mkdocstrings renders docstrings as Markdown, where reST roles show up literally
(":class:`~meigen_async.cache.MemoryCache`"). This script turns

- a role (`:class:`, `:meth:`, `:func:`, `:data:`, `:attr:`, `:mod:`, `:exc:`, `:obj:`) naming
  an object the API reference documents into an autorefs link,
  `[MemoryCache][meigen_async.cache.MemoryCache]`;
- any other role (a private helper, the standard library) into a code span, `` `time.time` ``;
- a reST literal, two backticks either side, into a Markdown code span of one;
- the `::` that opens a reST literal block into a `:` (the indented block is code in Markdown).

The bot examples in docs/examples are shown on the site as they are, so their roles always
become code spans.

Only docstrings (bare string statements) are touched, never code. It is idempotent: a second
run changes nothing. Run it from the repository root:

    python tools/markdown_docstrings.py          # rewrite the files
    python tools/markdown_docstrings.py --check  # list what it would change, exit 1 if anything
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import griffe
from public_names import PACKAGE, ROOT, documented_names, final_target, load_package

ROLE = re.compile(r":(?:py:)?(class|meth|func|data|attr|mod|exc|obj):`(~?)([^`]+)`")
LITERAL = re.compile(r"(?<!`)``(?!`)([^`\n]+?)``(?!`)")
BLOCK_MARKER = re.compile(r"(?<=\S)::$")
LINE_LENGTH = 100
ITEM = re.compile(r"\s+[\w*]+(?: \([^)]*\))?: ")
SECTION = re.compile(r"\s*(?:Args|Arguments|Parameters|Attributes|Raises|Returns|Yields):\s*$")


def wrap_line(line: str, *, in_section: bool = False) -> list[str]:
    """`line` split at spaces to fit `LINE_LENGTH`, continuations indented as Markdown wants.

    A links makes a line longer than the role it replaces; the continuation of a Google-style
    section item ("name: ...") is indented four more, of a list item two more.
    """
    indent = line[: len(line) - len(line.lstrip())]
    if in_section and ITEM.match(line):
        more = indent + "    "
    elif line.lstrip().startswith("- "):
        more = indent + "  "
    else:
        more = indent
    lines: list[str] = []
    while len(line) > LINE_LENGTH:
        cut = line.rfind(" ", len(indent) + 1, LINE_LENGTH + 1)
        if cut == -1:
            break
        lines.append(line[:cut].rstrip())
        line, indent = more + line[cut + 1 :], more
    return [*lines, line]


def _lookup(package: griffe.Module, path: str) -> griffe.Object | griffe.Alias | None:
    if path == PACKAGE:
        return package
    if not path.startswith(PACKAGE + "."):
        return None
    try:
        return package[path[len(PACKAGE) + 1 :]]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


class Resolver:
    """Where on the site an object named in a docstring is documented, if it is."""

    def __init__(self, package: griffe.Module) -> None:
        self.package = package
        self.documented = documented_names(package)

    def anchor(self, obj: griffe.Object) -> str | None:
        """The reference's anchor for `obj`, or None when the reference does not show it."""
        if obj.path in self.documented:
            return self.documented[obj.path]
        parent = obj.parent
        if isinstance(parent, griffe.Class) and not obj.name.startswith("_"):
            owner = self.anchor(parent)
            return None if owner is None or not obj.docstring else f"{owner}.{obj.name}"
        return None

    def link(self, name: str, scopes: list[str]) -> str | None:
        """The anchor for `name` as written in a docstring within `scopes`, if documented."""
        if not scopes[0].startswith(PACKAGE):
            return None  # an example, shown on the site as code, where a link shows literally
        candidates = [name] if name.startswith(PACKAGE + ".") else [f"{s}.{name}" for s in scopes]
        candidates.append(f"{PACKAGE}.{name}")
        for path in candidates:
            found = _lookup(self.package, path)
            target = final_target(found) if found is not None else None
            if target is not None:
                return self.anchor(target)
        return None


def _docstrings(tree: ast.Module, module: str) -> Iterator[tuple[ast.Constant, list[str]]]:
    """Each bare string statement, with the scopes (innermost first) its names resolve in."""

    def walk(node: ast.AST, scopes: list[str]) -> Iterator[tuple[ast.Constant, list[str]]]:
        for child in ast.iter_child_nodes(node):
            if (
                isinstance(child, ast.Expr)
                and isinstance(child.value, ast.Constant)
                and isinstance(child.value.value, str)
            ):
                yield child.value, scopes
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, [f"{scopes[0]}.{child.name}", *scopes])
            else:
                yield from walk(child, scopes)

    yield from walk(tree, [module])


def convert_text(text: str, resolver: Resolver, scopes: list[str]) -> str:
    """`text` with its reST roles and literals written as Markdown, long lines wrapped.

    The summary line stays one line: where a link would not fit there, the role becomes a
    code span.
    """

    def convert(line: str, *, links: bool) -> str:
        def role(match: re.Match[str]) -> str:
            short, name = match.group(2) == "~", match.group(3)
            shown = name.rsplit(".", 1)[-1] if short else name
            anchor = resolver.link(name, scopes) if links else None
            return f"[`{shown}`][{anchor}]" if anchor else f"`{shown}`"

        return BLOCK_MARKER.sub(":", LITERAL.sub(lambda m: f"`{m.group(1)}`", ROLE.sub(role, line)))

    lines: list[str] = []
    in_section = False
    for number, line in enumerate(text.split("\n")):
        if SECTION.match(line):
            in_section = True
        elif not line.strip():
            in_section = False
        new = convert(line, links=True)
        if new == line:
            lines.append(line)
        elif number == 0:
            lines.append(new if len(new) <= LINE_LENGTH else convert(line, links=False))
        else:
            lines.extend(wrap_line(new, in_section=in_section))
    return "\n".join(lines)


def convert_file(path: Path, resolver: Resolver) -> str:
    """The source of `path` with every docstring converted."""
    source = path.read_text(encoding="utf-8")
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(lineno: int, col: int) -> int:
        # ast gives columns in UTF-8 bytes.
        line = lines[lineno - 1]
        return starts[lineno - 1] + len(line.encode("utf-8")[:col].decode("utf-8"))

    edits = []
    for node, scopes in _docstrings(ast.parse(source), ".".join(parts)):
        assert node.end_lineno is not None
        assert node.end_col_offset is not None
        begin = starts[node.lineno - 1]  # the indentation counts towards the line length
        end = offset(node.end_lineno, node.end_col_offset)
        old = source[begin:end]
        new = convert_text(old, resolver, scopes)
        if new != old:
            edits.append((begin, end, new))
    for begin, end, new in reversed(edits):
        source = source[:begin] + new + source[end:]
    return source


def main(argv: list[str] | None = None) -> int:
    """Convert every module of the package; with `--check`, only report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if needed")
    args = parser.parse_args(argv)
    resolver = Resolver(load_package())
    changed = []
    examples = sorted((ROOT / "docs" / "examples").glob("*.py"))
    for path in [*sorted((ROOT / PACKAGE).rglob("*.py")), *examples]:
        new = convert_file(path, resolver)
        if new != path.read_text(encoding="utf-8"):
            changed.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new, encoding="utf-8")
    for path in changed:
        print(f"{'would rewrite' if args.check else 'rewrote'} {path}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
