"""Who may search, and when: the API key a session sends, and an API key's daily quota.

With an API key (`Authorization: Bearer meigen_sk_...`, on search requests only) the service
counts searches against the key's own daily quota rather than the per-address limit; when it
is spent it answers `429 {"success": false, "error": "Daily search limit reached", "code":
"DAILY_LIMIT_REACHED"}` until 00:00 UTC. Plain functions and values: `_searcher` asks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from ._core import retold
from ._protocol import header, parse_retry_after
from .errors import DailyLimitReached, MeigenError

__all__ = [
    "API_KEY_ENV",
    "SearchQuota",
    "api_key_from",
    "daily_limit",
    "next_utc_midnight",
    "without_secret",
]

API_KEY_ENV = "MEIGEN_API_KEY"
"""The environment variable a session reads its API key from when given none."""


def api_key_from(api_key: object, environ: Mapping[str, str]) -> str | None:
    """The API key a session sends: `api_key`, else `$MEIGEN_API_KEY`; None for none.

    None reads the environment; an empty string (given, or the variable's value) is no key.

    Raises:
        ValueError: the key is not a string, or holds whitespace, control characters or
            anything but visible ASCII. The message never quotes the key.

    """
    source = "api_key"
    if api_key is None:
        api_key, source = environ.get(API_KEY_ENV), f"${API_KEY_ENV}"
    if api_key is None or api_key == "":
        return None
    if not isinstance(api_key, str):
        raise ValueError(f"{source} must be a string, got {type(api_key).__name__}")
    if not all("!" <= char <= "~" for char in api_key):
        raise ValueError(
            f"{source} holds whitespace, control characters or non-ASCII characters: an API "
            "key is one token of visible ASCII characters, such as meigen_sk_... (the value "
            "is not shown, being a secret)"
        )
    return api_key


def without_secret(error: MeigenError, secret: str | None) -> MeigenError:
    """`error` itself, or a copy whose message shows `secret` as `[API key]` where it held it.

    A server echoing the request (a debugging proxy, say) could otherwise put the key into an
    error message, and from there into a log or onto a terminal.
    """
    if not secret or secret not in error.message:
        return error
    return retold(error, error.message.replace(secret, "[API key]"))


def next_utc_midnight(now: datetime) -> datetime:
    """The first 00:00 UTC after `now` (an aware datetime): when daily quotas reset."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=1)


def daily_limit(message: str, headers: Mapping[str, str], now: datetime) -> DailyLimitReached:
    """The `DailyLimitReached` of a daily-limit 429 answered at `now`.

    It resets at `now` plus the `Retry-After` (seconds or an HTTP-date) when the service sent
    one, else at the next 00:00 UTC, which is when the service says quotas reset.
    """
    wait = parse_retry_after(header(headers, "Retry-After"), now=now)
    resets_at = now + timedelta(seconds=wait) if wait is not None else next_utc_midnight(now)
    return DailyLimitReached(
        f"{message} (the API key's daily search quota is spent until {_when(resets_at)}; "
        "searches are refused until then, images are not affected)",
        resets_at=resets_at,
        retry_after=(resets_at - now).total_seconds(),
    )


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


class SearchQuota:
    """Whether searches may be sent: not between a daily limit and its reset.

    The session keeps one. After a `DailyLimitReached`, every search that would send a
    request is refused at once, with no request, until `resets_at`: the service would only
    answer 429 again, and each refused request could count against the key.
    """

    def __init__(self) -> None:
        self.resets_at: datetime | None = None

    def spent(self, error: DailyLimitReached) -> None:
        """Note a daily limit: no search before its `resets_at`."""
        if self.resets_at is None or error.resets_at > self.resets_at:
            self.resets_at = error.resets_at

    def refusal(self, now: datetime, what: str) -> DailyLimitReached | None:
        """The error refusing a search of `what` (a page's `subject`) at `now`, or None."""
        resets_at = self.resets_at
        if resets_at is None:
            return None
        if now >= resets_at:
            self.resets_at = None
            return None
        return DailyLimitReached(
            f"{what}: not sent: the API key's daily search quota is spent until "
            f"{_when(resets_at)} (HTTP 429 earlier in this session); searches are refused "
            "until then, images are not affected",
            resets_at=resets_at,
            retry_after=(resets_at - now).total_seconds(),
        )
