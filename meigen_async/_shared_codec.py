"""Shared-cache entries as stored text, and the one check of what comes back (pure).

Every shared cache holds the same things: an image with its expiry and validators, or a
remembered 404, each under a key that names the gallery and the id, and leases. The rules
for them live here once, so that no backend can keep a copy that drifts:

- [`shared_key`][meigen_async._shared_codec.shared_key]: the key of an id in one gallery;
- [`stored_image`][meigen_async._shared_codec.stored_image] and
  [`stored_missing`][meigen_async._shared_codec.stored_missing]: what a backend stores, as
  opaque text, and until when;
- [`decode`][meigen_async._shared_codec.decode]: that text back into a `SharedEntry`;
- [`check`][meigen_async._shared_codec.check]: run by the shared tier on every entry any
  `SharedCache` hands back, decoded here or built by a user's own cache;
- [`lease_in_force`][meigen_async._shared_codec.lease_in_force] and
  [`lease_pid`][meigen_async._shared_codec.lease_pid]: whether a lease record read back holds.

Nothing here raises but [`BadEntry`][meigen_async._shared_codec.BadEntry], whatever it is
given: a bad entry is a miss, never a crash.
"""

from __future__ import annotations

import json
from typing import Any, cast

import attrs
from yarl import URL

from ._protocol import usable_validators
from ._text import printable
from .cache import CachePolicy
from .errors import InvalidResponse
from .models import GalleryImage, structure_image, unstructure_image
from .shared import SharedEntry, SharedImage, SharedMissing

__all__ = [
    "CLOCK_SKEW",
    "FORMAT",
    "LEASE_SLACK",
    "VALIDATOR_KEEP",
    "BadEntry",
    "Checked",
    "Stored",
    "check",
    "decode",
    "encode",
    "gallery_of",
    "lease_in_force",
    "lease_pid",
    "shared_key",
    "stored_image",
    "stored_missing",
]

FORMAT = 2
"""The `"v"` of every stored value. A value without it (written before keys named their
gallery) or with another is refused, never misread."""

CLOCK_SKEW = 60.0
"""Seconds a shared entry's expiry may lie beyond the longest lifetime this session gives.

Another host's clock may run ahead of ours: an entry it has just written for `max_ttl` seconds
then looks a little longer-lived here. Past this allowance it cannot be right.
"""

VALIDATOR_KEEP = 3600.0
"""Seconds an image with validators is kept past its stale window, to be revalidated.

An expired entry is worth keeping only while a conditional request may still find it
unchanged, and an hour bounds what it costs.
"""

LEASE_SLACK = 1.0
"""Seconds a lease's expiry may lie beyond the lease time: the rounding of its milliseconds
and a wall clock stepped by NTP. Further ahead, no process with these settings wrote it."""

_LATEST = 253_402_300_800.0
"""The year 10000, in seconds since the epoch: no expiry this library writes comes near."""

_MAX_PID = 2**31 - 1
"""The largest process id there is (a C `int`); `os.kill` overflows past it."""


class BadEntry(ValueError):
    """A stored value or an entry read back that cannot be right: a miss, to be deleted.

    Its message says why in plain words, for the warning that drops the entry.
    """


# -- Keys ----------------------------------------------------------------------------------------


def gallery_of(base: URL) -> str:
    """The gallery a session's parsed `base_url` names: its origin and path, and nothing else.

    Written one way for one gallery (host in lower case, the default port left out, no
    trailing slash), and without user name or password, which must not end up in a key.
    """
    return f"{base.origin()}{base.raw_path.rstrip('/')}"


def shared_key(gallery: str, image_id: str) -> str:
    """The key of image `image_id` of `gallery` in every shared cache: its URL.

    Two galleries never share a key, and an entry written before keys named their gallery
    (keyed by the id alone) is never looked up.
    """
    return f"{gallery}/api/images/{image_id}"


# -- Values --------------------------------------------------------------------------------------


@attrs.frozen
class Stored:
    """What a backend stores for an entry: opaque text, and when it may forget it."""

    kind: str
    """"image" or "missing", for a backend that keeps them apart (the text says it too)."""
    value: str
    """The entry, as [`encode`][meigen_async._shared_codec.encode] writes it."""
    until: float
    """Seconds since the epoch after which nobody needs the entry any more."""


def encode(entry: SharedEntry) -> str:
    """The JSON text stored for `entry`; the image as the endpoint's `data` object."""
    value: dict[str, Any]
    if isinstance(entry, SharedImage):
        value = {
            "v": FORMAT,
            "kind": "image",
            "fresh_until": entry.fresh_until,
            "image": unstructure_image(entry.image),
        }
        if entry.etag is not None:
            value["etag"] = entry.etag
        if entry.last_modified is not None:
            value["last_modified"] = entry.last_modified
    else:
        value = {"v": FORMAT, "kind": "missing", "until": entry.until}
    return json.dumps(value)


def stored_image(
    image: GalleryImage,
    ttl: float,
    stale_window: float,
    *,
    now: float,
    etag: str | None = None,
    last_modified: str | None = None,
) -> Stored | None:
    """An image fresh for `ttl` seconds from `now`, kept `stale_window` seconds longer.

    With validators it is kept `VALIDATOR_KEEP` seconds longer still, to be revalidated.
    None when `ttl` is not positive: nothing to store.
    """
    if not ttl > 0:
        return None
    fresh_until = now + ttl
    keep = max(stale_window, 0.0)
    if etag is not None or last_modified is not None:
        keep += VALIDATOR_KEEP
    entry = SharedImage(
        image=image, fresh_until=fresh_until, etag=etag, last_modified=last_modified
    )
    return Stored(kind="image", value=encode(entry), until=fresh_until + keep)


def stored_missing(ttl: float, *, now: float) -> Stored | None:
    """A 404 remembered for `ttl` seconds from `now`; None when `ttl` is not positive."""
    if not ttl > 0:
        return None
    until = now + ttl
    return Stored(kind="missing", value=encode(SharedMissing(until=until)), until=until)


def decode(raw: object) -> SharedEntry:
    """The entry [`encode`][meigen_async._shared_codec.encode] wrote as `raw` (text or bytes).

    Only the layout is read here: the values' types and ranges are
    [`check`][meigen_async._shared_codec.check]'s, which runs on every entry read back.

    Raises:
        BadEntry: `raw` is not such a value (not JSON, nested too deeply, another format or
            an older one, an image that is not image data).

    """
    if not isinstance(raw, (str, bytes)):
        raise BadEntry(f"the value is a {type(raw).__name__}, not text")
    try:
        value = json.loads(raw)
    # ValueError: not JSON, not UTF-8, or an integer of more digits than Python converts.
    except (ValueError, RecursionError) as error:
        raise BadEntry("the value is not JSON") from error
    if not isinstance(value, dict) or value.get("v") != FORMAT:
        raise BadEntry("the value is not an entry of this version")
    kind = value.get("kind")
    # The expiries as found, whatever their type: check() is where types are checked.
    if kind == "missing":
        return SharedMissing(until=cast(float, value.get("until")))
    if kind != "image":
        raise BadEntry("the value is neither an image nor a 404")
    try:
        # Without image_id: check() compares the id, in words that fit a stored value.
        image = structure_image(value.get("image"))
    except (InvalidResponse, RecursionError) as error:
        raise BadEntry(f"its image does not read: {error}") from error
    return SharedImage(
        image=image,
        fresh_until=cast(float, value.get("fresh_until")),
        etag=value.get("etag"),
        last_modified=value.get("last_modified"),
    )


# -- The check -----------------------------------------------------------------------------------


@attrs.frozen
class Checked:
    """An entry read back that may be used, and the seconds of freshness it has left."""

    entry: SharedEntry
    """The entry, its expiry a float and its validators only those that may be sent."""
    left: float
    """Seconds of freshness left, capped as the session caps its own; 0 or less: expired."""

    @property
    def fresh(self) -> bool:
        """Whether the entry is still fresh: then it answers the call."""
        return self.left > 0


def check(entry: object, image_id: str, *, policy: CachePolicy, now: float) -> Checked:
    """What the shared tier may use of `entry`, read back for `image_id` at `now`.

    Run on every entry any `SharedCache` hands back. An image must be a `GalleryImage` of the
    id asked for; an expiry a finite number of seconds since the epoch (an int too large for
    a float, NaN, a string, a bool are not), no further ahead than the session keeps such an
    entry (`policy.longest_ttl` for an image, `policy.negative_ttl` for a 404) plus
    `CLOCK_SKEW`. An `ETag` or `Last-Modified` that may not be sent back as a header is
    dropped, and the image kept without it.

    Raises:
        BadEntry: the entry cannot be right; the caller treats it as a miss and deletes it.

    """
    if isinstance(entry, SharedImage):
        image = entry.image
        if not isinstance(image, GalleryImage):
            raise BadEntry(f"it holds a {type(image).__name__}, not an image")
        if image.id != image_id:
            shown = printable(image.id, 40) if isinstance(image.id, str) else "another"
            raise BadEntry(f"it holds image {shown}")
        until, cap = _time(entry.fresh_until), policy.longest_ttl
        validators = usable_validators(entry.etag, entry.last_modified)
        checked: SharedEntry = SharedImage(
            image=image,
            fresh_until=until,
            etag=None if validators is None else validators.etag,
            last_modified=None if validators is None else validators.last_modified,
        )
    elif isinstance(entry, SharedMissing):
        until, cap = _time(entry.until), policy.negative_ttl
        checked = SharedMissing(until=until)
    else:
        raise BadEntry(f"it is a {type(entry).__name__}, not a shared entry")
    left = until - now
    if left > cap + CLOCK_SKEW:
        raise BadEntry(f"it claims {left:.0f} s of life, more than the {cap:g} s allowed")
    return Checked(entry=checked, left=min(left, cap))


def _time(value: object) -> float:
    """`value` as a time since the epoch, or BadEntry (never its digits: they may be many)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadEntry(f"its expiry is a {type(value).__name__}, not a time")
    try:
        seconds = float(value)
    except OverflowError:  # an int past what a float holds
        raise BadEntry("its expiry is no time (a number too large)") from None
    # "not 0 < x < y" is also true for nan.
    if not 0 < seconds < _LATEST:
        raise BadEntry("its expiry is not a time since the epoch")
    return seconds


# -- Leases --------------------------------------------------------------------------------------


def lease_in_force(until: object, *, now: float, ms: float | None) -> bool:
    """Whether a lease record expiring at `until` (seconds since the epoch) holds at `now`.

    It must be a finite number after `now`, and no further ahead than a lease of `ms`
    milliseconds (the lease time, when known) plus `LEASE_SLACK`: a record that claims more
    was not written by a process with these settings and is treated as absent, as is any
    other value. Never raises.
    """
    try:
        seconds = _time(until)
    except BadEntry:
        return False
    if ms is not None and seconds - now > ms / 1000 + LEASE_SLACK:
        return False
    return seconds > now


def lease_pid(value: object) -> int | None:
    """The process id a lease record names, or None when it is none (then the record is absent).

    A process id is a whole number from 1 to 2**31 - 1: 0 and negative numbers name process
    groups, and larger ones overflow `os.kill`.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_PID:
        return None
    return value
