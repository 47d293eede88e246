"""HTTP headers read as plain values: a header by name, list-valued headers, dates, `Retry-After`.

No asyncio, no aiohttp: every surface (`_protocol`, `_status`, `cache`, `_media_rules`) reads
headers through these, in any mapping (aiohttp's case-insensitive one, or a plain dict in tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "CASE_INSENSITIVE",
    "header",
    "header_lines",
    "header_list",
    "parse_http_date",
    "parse_retry_after",
]

# What aiohttp hands over: a miss there is final, no need to scan for another spelling.
CASE_INSENSITIVE = (CIMultiDict, CIMultiDictProxy)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Look a header up by name, ignoring case, in any mapping."""
    value = headers.get(name)
    if value is not None or isinstance(headers, CASE_INSENSITIVE):
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def header_list(headers: Mapping[str, str], name: str) -> str | None:
    """All lines of a list-valued header as one value, ignoring case, in any mapping.

    Several lines of one header are one comma-separated list (RFC 9110 section 5.3): aiohttp
    keeps each line, and `Cache-Control: max-age=60` followed by `Cache-Control: no-store`
    reads as `"max-age=60, no-store"`. In a plain mapping each spelling of the name counts
    as a line. None when the header is absent.
    """
    lines = header_lines(headers, name)
    if not lines:
        return None
    return lines[0] if len(lines) == 1 else ", ".join(lines)


def header_lines(headers: Mapping[str, str], name: str) -> list[str]:
    """Each line of a header, in order, ignoring case, in any mapping; [] when it is absent.

    For headers whose lines are read one by one (`X-Robots-Tag`: a line may name a crawler).
    In a plain mapping each spelling of the name counts as a line.
    """
    if isinstance(headers, CASE_INSENSITIVE):
        return headers.getall(name, [])
    lowered = name.lower()
    return [value for key, value in headers.items() if key.lower() == lowered]


def parse_http_date(value: str | None) -> float | None:
    """An HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`) in seconds since the epoch, or None.

    None for an absent or unreadable value; a date without a zone is read as UTC.
    """
    if value is None:
        return None
    try:
        when = parsedate_to_datetime(value.strip())
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value: delta-seconds or an HTTP-date.

    Returns None when the value is absent or unreadable; a date in the past gives 0.
    """
    if value is None:
        return None
    value = value.strip()
    # RFC 9110 delta-seconds are ASCII digits; str.isdigit alone also takes "²" and "١٢".
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())
