r"""Making untrusted strings safe to print: lone surrogates become U+FFFD.

JSON lets a body spell a lone surrogate (a `\ud800` escape), and CESU-8 bytes decoded with
`surrogatepass` give them too. Python holds them in a `str` without complaint, but encoding
it as UTF-8 (printing, logging, writing a file, sending it to Discord) then raises
`UnicodeEncodeError`, far from where the string came in.
"""

from __future__ import annotations

import re

__all__ = ["printable", "replace_surrogates"]

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
    """A quoted, shortened, surrogate-free rendering of untrusted `text` for an error message."""
    shown = replace_surrogates(text)
    if len(shown) > limit:
        shown = shown[:limit] + "..."
    return repr(shown)
