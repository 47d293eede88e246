r"""Help texts laid out for the terminal's width (pure: the width is given).

argparse fills a command's options to the width (`COLUMNS`, else the terminal's, less 2), but
breaks their words at hyphens (`$XDG_CACHE_HOME/meigen-` then `async/gallery.sqlite`), and its
description and epilog are either filled into one paragraph (examples run together) or, with
`RawDescriptionHelpFormatter`, printed as written: lines longer than the terminal then broke
mid-word where the terminal wrapped them. Here prose is filled to the width and the examples
(indented lines) keep their lines; a command longer than the width is continued on the next
line with ` \`, as a shell reads it.
"""

from __future__ import annotations

import argparse
import re
import textwrap

__all__ = ["HelpFormatter", "fill_help"]

_CONTINUED = "    "
"""The extra indent of a command's continuation lines."""

# A quoted argument ("neon city"): never broken, since a break inside quotes is not a
# continuation. U+00A0 stands in for its spaces: textwrap breaks at ASCII whitespace only.
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_KEEP = "\u00a0"


def fill_help(text: str, width: int) -> str:
    r"""`text` laid out in lines of at most `width` columns where its words allow.

    Unindented lines are prose: each run of them (up to a blank or an indented line) is one
    paragraph, filled to `width`. Indented lines are examples, kept as written; one longer
    than `width` is broken between arguments with a trailing ` \` (not one with a `#`
    comment, which a backslash does not continue). A word longer than `width` is never cut.
    """
    lines: list[str] = []
    prose: list[str] = []

    def end_paragraph() -> None:
        if prose:
            lines.extend(_wrap(" ".join(prose), width))
            prose.clear()

    for line in text.splitlines():
        if not line.strip():
            end_paragraph()
            lines.append("")
        elif line[0].isspace():
            end_paragraph()
            lines.extend(_command_lines(line.rstrip(), width))
        else:
            prose.append(line.strip())
    end_paragraph()
    return "\n".join(lines)


def _wrap(text: str, width: int, first: str = "", rest: str = "") -> list[str]:
    return textwrap.wrap(
        text,
        max(width, len(rest) + 1),
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _command_lines(line: str, width: int) -> list[str]:
    if len(line) <= width or "#" in line:
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    kept = _QUOTED.sub(lambda quoted: quoted.group().replace(" ", _KEEP), line.strip())
    # Two columns kept for the " \" that ends every line but the last.
    parts = _wrap(kept, width - 2, indent, indent + _CONTINUED)
    return [
        part.replace(_KEEP, " ") + (" \\" if n < len(parts) - 1 else "")
        for n, part in enumerate(parts)
    ]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's layout, with descriptions and epilogs laid out by `fill_help`.

    An option's help is filled as argparse fills it, but never broken at a hyphen.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.indent(fill_help(text, width - len(indent)), indent)

    def _split_lines(self, text: str, width: int) -> list[str]:
        # argparse's own breaks at hyphens: '$XDG_CACHE_HOME/meigen-' then 'async/...'.
        return _wrap(" ".join(text.split()), width)
