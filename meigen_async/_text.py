r"""Making untrusted strings safe to print: lone surrogates, and what a terminal would obey.

JSON lets a body spell a lone surrogate (a `\ud800` escape), and CESU-8 bytes decoded with
`surrogatepass` give them too. Python holds them in a `str` without complaint, but encoding
it as UTF-8 (printing, logging, writing a file, sending it to Discord) then raises
`UnicodeEncodeError`, far from where the string came in.

A string from a server or a cache can also hold what a terminal acts on rather than shows:
an ESC starting a sequence (clear the screen, set the window title, write the clipboard
with OSC 52, plant an OSC 8 link), a C1 control (U+009B is CSI on its own), a carriage
return that writes over a line, or a bidi override that shows text in another order than
it is read. `terminal_safe` shows all of these escaped.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["printable", "replace_surrogates", "terminal_safe"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_surrogates(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD; `text` itself when it has none.

    On the hot path of every string field: ASCII (most values) costs one `str.isascii`, other
    valid text one UTF-8 encoding attempt (measured: faster than a regex search), and only a
    string that holds a surrogate pays for the substitution.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def printable(text: str, limit: int) -> str:
    """A quoted, shortened, surrogate-free rendering of untrusted `text` for an error message.

    `repr` escapes every character that is not printable (a superset of what
    `terminal_safe` escapes), and quotes and backslashes too: the result is terminal-safe.
    """
    shown = replace_surrogates(text)
    if len(shown) > limit:
        shown = shown[:limit] + "..."
    return repr(shown)


# Controls (C0, DEL, C1), format characters (bidi embeddings, overrides, isolates and marks,
# zero-width and invisible characters, tag characters), the line and paragraph separators,
# and lone surrogates. Private-use and unassigned code points, and the spaces, are shown.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# Format characters that scripts (Persian, the Indic ones) and emoji sequences need: they
# join or part their neighbours, and neither move nor hide text.
_JOINERS = frozenset({"\u200c", "\u200d"})


class _Escapes(dict[int, "str | int"]):
    """A `str.translate` table that decides each code point once, when first seen."""

    def __init__(self, keep: str) -> None:
        super().__init__((ord(char), ord(char)) for char in keep)

    def __missing__(self, code: int) -> str | int:
        char = chr(code)
        hidden = unicodedata.category(char) in _HIDDEN and char not in _JOINERS
        shown: str | int = char.encode("unicode_escape").decode("ascii") if hidden else code
        self[code] = shown
        return shown


_ESCAPES = _Escapes("")
_ESCAPES_BUT_NEWLINES = _Escapes("\n")


def terminal_safe(text: str, *, newlines: bool = False) -> str:
    r"""`text` as a terminal shows it, whatever it holds: every control shown escaped.

    C0 and C1 controls (ESC, so every escape sequence), DEL, bidi overrides, isolates and
    marks, other invisible format characters, line and paragraph separators and lone
    surrogates are written as Python escapes (`\x1b`, `\r`, `\u202e`); with `newlines`,
    a `\n` is kept (a layout whose lines are the text's own). The zero-width joiner and
    non-joiner, which emoji and some scripts need, are kept. Printable text comes back
    unchanged (one `str.isprintable`); a backslash is not escaped, so the result reads as
    the text, not as a Python literal.
    """
    if text.isprintable():
        return text
    return text.translate(_ESCAPES_BUT_NEWLINES if newlines else _ESCAPES)
