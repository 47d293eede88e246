"""`Cache-Control`, `Expires`, `Date`, `Age` and `Vary`, read as RFC 9111 says (pure).

What `CachePolicy` (in `meigen_async.cache`, which names the two public functions here too)
decides lifetimes from. Responses of one service repeat the same few header values, so the
readings of a value are kept (`lru_cache`).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Mapping

from ._headers import CASE_INSENSITIVE, header_list, parse_http_date

__all__ = [
    "CASE_INSENSITIVE",
    "cache_control_of",
    "control",
    "expires_lifetime",
    "parse_cache_control",
    "revalidate_seconds",
    "seconds",
    "server_lifetime",
    "varies_on_everything",
]

# One list member: anything up to a comma, a quoted-string (which may hold commas, and may be
# left open at the end) counting as one piece. Linear: each alternative starts on its own char.
_MEMBER = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*"?)+')
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_QUOTED_PAIR = re.compile(r"\\(.)")
# RFC 9111 section 1.2.2: a delta-seconds too large to hold is read as 2**31.
_DELTA_MAX = 2.0**31

_CacheDirectives = tuple[tuple[str, str | None], ...]


def _directives(value: str | None) -> _CacheDirectives:
    r"""Every directive of a `Cache-Control` value in order, repeats kept, names lower-cased.

    Arguments are unquoted (`"60"` reads `60`, `\"` reads `"`); a quoted-string left
    open is kept as it came, opening quote included, so that it reads as no valid number.
    """
    if not value:
        return ()
    found: list[tuple[str, str | None]] = []
    for member in _MEMBER.findall(value):
        name, sep, argument = member.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        if not sep:
            found.append((name, None))
            continue
        argument = argument.strip()
        quoted = _QUOTED.fullmatch(argument)
        if quoted is not None:
            argument = _QUOTED_PAIR.sub(r"\1", quoted.group(1))
        found.append((name, argument))
    return tuple(found)


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """Split a `Cache-Control` value into lower-cased directives and their arguments.

    Commas inside a quoted argument (`ext="a, b"`) do not split it, and quoted arguments are
    unquoted. A directive given more than once keeps its first argument here; when it is a
    lifetime, `server_lifetime` reads two different arguments as "stale".
    """
    directives: dict[str, str | None] = {}
    for name, argument in _directives(value):
        directives.setdefault(name, argument)
    return directives


def seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _delta_seconds(argument: str | None) -> float | None:
    # RFC 9111 section 1.2.2: ASCII digits only; "1.5", "-1", "" and "²" are not delta-seconds.
    if argument is None or not (argument.isascii() and argument.isdigit()):
        return None
    return min(float(argument), _DELTA_MAX)


def _lifetime_directive(directives: _CacheDirectives, wanted: str) -> float:
    """The one lifetime `wanted` gives; 0 (stale) if invalid or given twice differently."""
    values = {_delta_seconds(argument) for name, argument in directives if name == wanted}
    # RFC 9111 section 4.2.1: conflicting lifetimes may be read as stale; so is an invalid one.
    if len(values) != 1 or None in values:
        return 0.0
    (value,) = values
    return value if value is not None else 0.0


# Responses of one service repeat the same few Cache-Control values: read each one once.
def cache_control_of(headers: Mapping[str, str]) -> str | None:
    """Every `Cache-Control` line of `headers` as one list (RFC 9110 section 5.3)."""
    if isinstance(headers, CASE_INSENSITIVE):
        lines = headers.getall("Cache-Control", ())
        return lines[0] if len(lines) == 1 else ", ".join(lines) or None
    return header_list(headers, "Cache-Control")


# Responses of one service repeat the same few header values: each is read once.
@functools.lru_cache(maxsize=256)
def revalidate_seconds(cache_control: str | None) -> float | None:
    """The `stale-while-revalidate` seconds of a `Cache-Control` value (RFC 5861), or None."""
    for name, argument in _directives(cache_control):
        if name == "stale-while-revalidate":
            return _delta_seconds(argument)
    return None


@functools.lru_cache(maxsize=256)
def control(cache_control: str | None, shared: bool) -> tuple[bool, float | None]:
    """Whether `Cache-Control` lets a cache store, and the lifetime it gives (None: none)."""
    directives = _directives(cache_control)
    names = {name for name, _ in directives}
    # no-cache allows storing only to revalidate before each use, which this library never
    # does; private is for private caches (the in-process one) only.
    if "no-store" in names or "no-cache" in names or (shared and "private" in names):
        return False, None
    if shared and "s-maxage" in names:
        return True, _lifetime_directive(directives, "s-maxage")
    if "max-age" in names:
        return True, _lifetime_directive(directives, "max-age")
    return True, None


# Keyed on both strings: a lifetime from Expires is counted from Date.
@functools.lru_cache(maxsize=256)
def _expires_from_date(expires: str, date: str | None) -> float | None:
    """`Expires` less `Date`; 0 (stale) for an invalid Expires; None without a valid Date."""
    expires_at = parse_http_date(expires)
    if expires_at is None:
        # RFC 9111 section 5.3: an invalid date, "0" among them, means already expired.
        return 0.0
    date_at = parse_http_date(date)
    return None if date_at is None else expires_at - date_at


def expires_lifetime(expires: str, date: str | None, now: float | None) -> float:
    lifetime = _expires_from_date(expires, date)
    if lifetime is None:
        expires_at = parse_http_date(expires)
        assert expires_at is not None  # an invalid Expires gave 0.0
        lifetime = expires_at - (time.time() if now is None else now)
    return lifetime


def server_lifetime(
    cache_control: str | None,
    age: str | None,
    expires: str | None = None,
    date: str | None = None,
    *,
    shared: bool = False,
    now: float | None = None,
) -> tuple[bool, float | None]:
    """Whether the server lets a cache store a response, and for how many seconds more.

    The lifetime (RFC 9111 section 4.2.1) is `max-age`, or for a `shared` cache
    `s-maxage` first; without either, `Expires` less `Date` (or less `now`, the
    receive time in seconds since the epoch, when `Date` is absent or invalid). `Age` is
    subtracted. The seconds are None when no lifetime is given, zero or less when the
    response is stale: a lifetime given twice differently, an invalid one, an invalid or past
    `Expires`. `no-store` and `no-cache` forbid storing; `private` forbids it to a
    `shared` cache only.
    """
    storable, lifetime = control(cache_control, shared)
    if not storable:
        return False, None
    if lifetime is None and expires is not None:
        lifetime = expires_lifetime(expires, date, now)
    if lifetime is None:
        return True, None
    return True, lifetime - (seconds(age) or 0.0)


def varies_on_everything(vary: str | None) -> bool:
    return vary is not None and "*" in vary and any(m.strip() == "*" for m in vary.split(","))
