"""Reading `Cache-Control` (`_cache_control`): directives, quoted strings, repeats."""

from __future__ import annotations

import pytest

from meigen_async.cache import parse_cache_control

# -- parse_cache_control ------------------------------------------------------------------------


def test_parse_cache_control_lowercases_names_and_keeps_arguments() -> None:
    parsed = parse_cache_control('Public, Max-Age=60, S-MAXAGE="120", no-transform')

    assert parsed == {"public": None, "max-age": "60", "s-maxage": "120", "no-transform": None}


@pytest.mark.parametrize("value", [None, "", " , ,"])
def test_parse_cache_control_of_nothing_is_empty(value: str | None) -> None:
    assert parse_cache_control(value) == {}


def test_parse_cache_control_keeps_a_garbage_argument_as_text() -> None:
    assert parse_cache_control("max-age=soon") == {"max-age": "soon"}


def test_parse_cache_control_does_not_split_a_quoted_string_at_its_commas() -> None:
    parsed = parse_cache_control('ext="a, max-age=3600", public')

    assert parsed == {"ext": "a, max-age=3600", "public": None}


def test_parse_cache_control_unescapes_quoted_pairs() -> None:
    assert parse_cache_control(r'ext="say \"hi\", ok"') == {"ext": 'say "hi", ok'}


def test_parse_cache_control_keeps_the_first_of_a_repeated_directive() -> None:
    assert parse_cache_control("max-age=0, max-age=60") == {"max-age": "0"}
