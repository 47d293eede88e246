"""`terminal_safe` and `printable`: what a terminal is given of a string from a server."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meigen_async._text import printable, terminal_safe

# What a terminal acts on rather than shows: C0 (ESC, BEL, CR, ...), DEL and C1 (U+009B is
# CSI alone); bidi embeddings, overrides, isolates and marks, which reorder what is shown.
CONTROLS = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]}
BIDI = {*"\u061c\u200e\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))}
INVISIBLE = {"\u200b", "\u2060", "\ufeff", "\u00ad", "\U000e0041", "\u2028", "\u2029"}
HOSTILE = sorted(CONTROLS | BIDI | INVISIBLE)

# Hostile characters mixed into any text, so that every example holds some.
hostile_text = st.text(st.sampled_from(HOSTILE) | st.characters(), max_size=40)
# Text a terminal only shows: what Python calls printable, the joiners and a few scripts.
printable_text = st.text(st.characters(), max_size=40).filter(str.isprintable)


@given(hostile_text)
def test_terminal_safe_text_holds_no_control_bidi_or_invisible_character(text: str) -> None:
    shown = terminal_safe(text)
    assert set(shown).isdisjoint(CONTROLS | BIDI | INVISIBLE)


@given(hostile_text)
def test_terminal_safe_with_newlines_keeps_exactly_the_newlines_and_nothing_else(
    text: str,
) -> None:
    shown = terminal_safe(text, newlines=True)
    assert set(shown).isdisjoint((CONTROLS - {"\n"}) | BIDI | INVISIBLE)
    assert shown.split("\n") == [terminal_safe(line) for line in text.split("\n")]


@given(printable_text)
def test_terminal_safe_leaves_printable_text_unchanged(text: str) -> None:
    assert terminal_safe(text) == text


@given(hostile_text)
def test_terminal_safe_is_unchanged_by_a_second_pass(text: str) -> None:
    assert terminal_safe(terminal_safe(text)) == terminal_safe(text)


@given(hostile_text)
def test_a_printable_quote_of_hostile_text_is_already_terminal_safe(text: str) -> None:
    assert terminal_safe(printable(text, 100)) == printable(text, 100)


def test_escape_sequences_bidi_overrides_and_c1_controls_are_shown_as_python_escapes() -> None:
    shown = terminal_safe("\x1b]52;c;ZXZpbA==\x07 \x9b2J \u202eevil\r\n")
    assert shown == "\\x1b]52;c;ZXZpbA==\\x07 \\x9b2J \\u202eevil\\r\\n"


def test_emoji_and_script_joiners_and_wide_spaces_are_shown_as_they_are() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # an emoji joined by ZWJs
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # parted by a ZWNJ
    text = f"{family}, {persian}, \u6771\u4eac\u3000\u591c\u00a0"  # wide and no-break spaces
    assert terminal_safe(text) == text


def test_a_backslash_is_shown_as_it_is() -> None:
    assert terminal_safe("C:\\x1b\\path\n") == "C:\\x1b\\path\\n"
