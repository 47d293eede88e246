"""The data: attrs classes for what the endpoint returns, and the one converter that builds them.

Structuring is forward compatible: unknown fields are ignored, nulls and missing optional
fields take their defaults, and only a value of the wrong type is an error.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import cattrs

from ._text import printable, replace_surrogates
from .errors import InvalidResponse, MeigenError
from .prompt import Prompt, parse_prompt

__all__ = [
    "GalleryImage",
    "ImageResult",
    "PromptSegment",
    "SearchHit",
    "SessionStats",
    "structure_image",
    "structure_search_hit",
    "unstructure_image",
    "unstructure_search_hit",
]


@attrs.frozen
class PromptSegment:
    """One labelled part of a multi-part prompt."""

    label: str
    """The part's name, as the gallery labels it ("Prompt", "Negative prompt", ...)."""
    text: str
    """The part's text."""


@attrs.frozen
class GalleryImage:
    """A curated gallery image, every documented field under its documented name."""

    id: str
    """The gallery id, the one asked for."""
    text: str = ""
    """The prompt as posted; parsed in `prompt`."""
    prompt_ready: bool | None = None
    """Whether the gallery marks the prompt as ready to reuse; None when it does not say."""
    prompt_segments: tuple[PromptSegment, ...] | None = None
    """The labelled parts of a multi-part prompt, or None."""
    media_urls: tuple[str, ...] = ()
    """The image (and any variant) URLs, in the gallery's order."""
    thumbnail_url: str | None = None
    """A small preview's URL, or None."""
    image_width: int | None = None
    """Width in pixels, or None when unknown."""
    image_height: int | None = None
    """Height in pixels, or None when unknown."""
    model: str | None = None
    """The generator that made it, or None: an open vocabulary, family names ("nanobanana",
    "gptimage", "midjourney", "other") and exact model ids ("flux2-klein", "seedream-4.5",
    ...), growing. For filtering and display (`meigen_async.bots.model_name`), not as a
    model id to generate with."""
    sref: str | None = None
    """The Midjourney style reference code, or None."""
    profile: str | None = None
    """The Midjourney personalization (`--profile`) code, or None."""
    created_at: datetime | None = None
    """When it was posted, timezone-aware (UTC), or None."""
    likes: int = 0
    """Likes on the original post."""
    views: int = 0
    """Views of the original post."""
    retweets: int = 0
    """Reposts of the original post."""
    author_username: str | None = None
    """The author's handle, without the `@`, or None."""
    author_display_name: str | None = None
    """The author's display name, or None."""
    author_avatar_url: str | None = None
    """The author's avatar URL, or None."""

    @functools.cached_property
    def prompt(self) -> Prompt:
        """The text, parsed: plain or JSON, its data, placeholders and parameters.

        Computed on first access and kept: later accesses return the same object.
        """
        return parse_prompt(self.text)


@attrs.frozen
class SearchHit:
    """One result of the gallery's search: a summary of an image, not the full image.

    The fields the search answers with, under the names and with the types and null-tolerance
    of `GalleryImage`. Fetch the full image with `GallerySession.get_image(hit.id)`; a hit is
    never stored as an image.
    """

    id: str
    """The gallery id, always a valid one (a search skips results with another): give it to
    `GallerySession.get_image` for the full image."""
    text: str = ""
    """The prompt as posted; parsed in `prompt`."""
    prompt_ready: bool | None = None
    """Whether the gallery marks the prompt as ready to reuse; None when it does not say."""
    media_urls: tuple[str, ...] = ()
    """The image (and any variant) URLs, in the gallery's order."""
    thumbnail_url: str | None = None
    """A small preview's URL, or None."""
    image_width: int | None = None
    """Width in pixels, or None when unknown."""
    image_height: int | None = None
    """Height in pixels, or None when unknown."""
    model: str | None = None
    """The generator that made it, or None: an open vocabulary, as `GalleryImage.model`."""
    likes: int = 0
    """Likes on the original post."""
    views: int = 0
    """Views of the original post."""
    author_username: str | None = None
    """The author's handle, without the `@`, or None."""
    author_display_name: str | None = None
    """The author's display name, or None."""
    rank: float | None = None
    """The service's relevance score for this hit, or None: the pages come in its order, so
    compare hits by it, but do not read it as a position."""
    matched_media_index: int | None = None
    """The index in `media_urls` of the picture that matched the query, or None when the
    service did not say (see `matched_media_url`)."""

    @functools.cached_property
    def prompt(self) -> Prompt:
        """The text, parsed as `GalleryImage.prompt` parses it; computed once and kept."""
        return parse_prompt(self.text)

    @property
    def matched_media_url(self) -> str | None:
        """The picture that matched (`media_urls[matched_media_index]`), else the first one.

        The first when the service named none, or an index outside `media_urls`; None when
        the hit has no media URL.
        """
        index = self.matched_media_index
        if index is not None and 0 <= index < len(self.media_urls):
            return self.media_urls[index]
        return self.media_urls[0] if self.media_urls else None


@attrs.frozen
class ImageResult:
    """The outcome for one id of a bulk fetch: an image or the error that stopped it."""

    id: str
    """The id asked for."""
    image: GalleryImage | None = None
    """The image, when the fetch succeeded; else None."""
    error: MeigenError | None = None
    """What stopped the fetch, when it failed; else None."""

    @property
    def ok(self) -> bool:
        """True when the image was fetched."""
        return self.error is None


@attrs.frozen
class SessionStats:
    """A snapshot of a session's counters."""

    requests: int = 0
    """Upstream HTTP requests sent to the gallery (images, search), retries included."""
    cache_hits: int = 0
    """Calls answered from the cache, 404s remembered included."""
    cache_misses: int = 0
    """Calls the cache could not answer."""
    coalesced: int = 0
    """Calls that joined a request already in flight for the same id."""
    retries: int = 0
    """Requests sent again after a retryable failure."""
    errors: int = 0
    """Upstream fetches that ended in an error."""
    stale_served: int = 0
    """Expired entries served because the upstream failed."""
    revalidated: int = 0
    """Expired images a `304 Not Modified` renewed, with no body sent."""
    refreshed: int = 0
    """Background refreshes (stale-while-revalidate) that got their answer."""
    shared_hits: int = 0
    """Misses of the in-process cache that the shared cache answered (an image or a 404),
    with no upstream request; a miss shared by several callers counts once."""
    search_hits_skipped: int = 0
    """Search results left out because their id is not a gallery id."""
    media_requests: int = 0
    """Requests sent to media hosts, counting every attempt and every redirect followed."""
    media_retries: int = 0
    """Media downloads tried again after a retryable failure."""
    media_bytes: int = 0
    """Bytes of media bodies received, from every attempt (a file cut off and downloaded
    again counts twice)."""


# -- Structuring ---------------------------------------------------------------------------------


# The hooks compare exact types: json.loads makes no subclasses, and bool, an int subclass,
# must not pass for a count. Each also lets None through, so that the ``X | None`` fields
# use them directly rather than through cattrs' slower Optional dispatch.


def _expect(kind: type, name: str) -> Any:
    def check(value: Any, _: Any) -> Any:
        if type(value) is kind or value is None:
            return value
        raise TypeError(f"expected {name}, got {type(value).__name__}")

    return check


def _structure_str(value: Any, _: Any) -> str | None:
    # Every string field comes through here (the tuple and segment hooks call
    # replace_surrogates themselves): a lone surrogate would pass, and crash the first print.
    if type(value) is str:
        # isascii inlined: most fields are ASCII, and a call less for each counts here.
        return value if value.isascii() else replace_surrogates(value)
    if value is None:
        return None
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _structure_int(value: Any, _: Any) -> int | None:
    if type(value) is int or value is None:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    raise TypeError(f"expected an integer, got {type(value).__name__}")


def _structure_float(value: Any, _: Any) -> float | None:
    # A JSON number, whole or not; a bool is no number, and neither is NaN or an infinity
    # (Python's json reads `NaN` and `1e999`): a hit's rank must order.
    if type(value) is float or type(value) is int:
        number = float(value) if type(value) is float or abs(value) < 2**1023 else math.inf
        if math.isfinite(number):
            return number
        raise TypeError(f"expected a finite number, got {value!r:.40}")
    if value is None:
        return None
    raise TypeError(f"expected a number, got {type(value).__name__}")


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO 8601 timestamp; a naive one is taken as UTC."""
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _structure_datetime(value: Any, _: Any) -> datetime | None:
    if value is None:
        return None
    if type(value) is not str:
        raise TypeError(f"expected an ISO 8601 string, got {type(value).__name__}")
    return parse_timestamp(value)


def _segment(entry: Any) -> PromptSegment | None:
    if isinstance(entry, str):
        return PromptSegment(label="", text=replace_surrogates(entry))
    if not isinstance(entry, Mapping):
        return None
    label, text = entry.get("label"), entry.get("text")
    if not isinstance(text, str):
        return None
    return PromptSegment(
        label=replace_surrogates(label) if isinstance(label, str) else "",
        text=replace_surrogates(text),
    )


def _structure_segments(value: Any, _: Any) -> tuple[PromptSegment, ...] | None:
    # An odd entry is dropped rather than failing the whole image: segments are a nicety.
    if not isinstance(value, list):
        return None
    segments = tuple(s for s in map(_segment, value) if s is not None)
    return segments or None


def _structure_str_tuple(value: Any, _: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list of strings, got {type(value).__name__}")
    for item in value:
        if not isinstance(item, str):
            raise TypeError(f"expected a list of strings, got an item of {type(item).__name__}")
    return tuple(map(replace_surrogates, value))


def _unstructure_datetime(value: datetime) -> str:
    return value.isoformat()


def _is_optional(kind: type) -> Callable[[Any], bool]:
    optional = kind | None
    return lambda candidate: bool(candidate == optional)


def _build_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=False, detailed_validation=True)
    for kind, hook in (
        (str, _structure_str),
        (bool, _expect(bool, "a boolean")),
        (int, _structure_int),
        (float, _structure_float),
        (datetime, _structure_datetime),
    ):
        conv.register_structure_hook(kind, hook)
        conv.register_structure_hook_func(_is_optional(kind), hook)
    conv.register_structure_hook_func(lambda t: t == tuple[str, ...], _structure_str_tuple)
    conv.register_structure_hook_func(
        lambda t: t == (tuple[PromptSegment, ...] | None), _structure_segments
    )
    conv.register_unstructure_hook(datetime, _unstructure_datetime)
    return conv


_converter: cattrs.Converter = _build_converter()
"""The one converter, built at import and reused for every structure and unstructure call.

Private: the functions below are the way in and out (`unstructure_image`,
`unstructure_search_hit`), so that its hooks can change without breaking a caller."""


def __getattr__(name: str) -> Any:
    # The converter was public until this release: its old name works for one more, with a
    # warning.
    if name != "converter":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        "meigen_async.models.converter is deprecated and will be removed: use "
        "unstructure_image or unstructure_search_hit",
        DeprecationWarning,
        stacklevel=2,
    )
    return _converter


_ID_SHOWN = 140  # characters of a foreign id quoted: a valid id has at most 128

# The converter's own hook for the class, looked up once rather than dispatched per call.
_structure_gallery_image = _converter.get_structure_hook(GalleryImage)


# What structuring may raise for data of the wrong shape. RecursionError and OverflowError
# too: nothing the data holds may escape as a raw exception (the hooks do not recurse, but a
# cattrs version might).
_STRUCTURE_FAILURES = (
    cattrs.BaseValidationError,
    ValueError,
    TypeError,
    KeyError,
    RecursionError,
    OverflowError,
)


def structure_image(data: Any, *, image_id: str | None = None) -> GalleryImage:
    r"""Build a [`GalleryImage`][meigen_async.GalleryImage] from the envelope's `data` object.

    Every string field has its lone surrogates (a JSON `\ud800` escape, CESU-8 bytes) replaced
    by U+FFFD, so that every string of the image encodes as UTF-8.

    Raises [`InvalidResponse`][meigen_async.InvalidResponse], naming the field, when a field has the
    wrong type, and
    when `image_id` is given and the data's `id` is another one.
    """
    if not isinstance(data, dict):
        raise InvalidResponse(
            f"'data' should be an object, got {type(data).__name__}", image_id=image_id
        )
    # A null means "no value": the field's default applies, whatever its declared type.
    present = {key: value for key, value in data.items() if value is not None}
    try:
        image: GalleryImage = _structure_gallery_image(present, GalleryImage)
    except _STRUCTURE_FAILURES as exc:
        raise InvalidResponse(_describe(exc), image_id=image_id) from exc
    if image_id is not None and image.id != image_id:
        # Another image's data under this id would be cached as this one.
        raise InvalidResponse(
            f"the service answered a request for image {image_id} with the data of image "
            f"{printable(image.id, _ID_SHOWN)}",
            image_id=image_id,
        )
    return image


_structure_hit = _converter.get_structure_hook(SearchHit)


def structure_search_hit(data: Any) -> SearchHit:
    r"""Build a `SearchHit` from one item of a search page's `data` list.

    As `structure_image`: unknown fields are ignored, nulls take the defaults, and lone
    surrogates in strings become U+FFFD.

    Raises:
        InvalidResponse: the item is not an object, has no string `id`, or a field has the
            wrong type (named in the message).

    """
    if not isinstance(data, dict):
        raise InvalidResponse(f"a search result should be an object, got {type(data).__name__}")
    present = {key: value for key, value in data.items() if value is not None}
    try:
        hit: SearchHit = _structure_hit(present, SearchHit)
    except _STRUCTURE_FAILURES as exc:
        raise InvalidResponse(_describe(exc, "search result")) from exc
    return hit


def unstructure_image(image: GalleryImage) -> dict[str, Any]:
    """Turn an image back into the endpoint's `data` object (JSON-ready)."""
    data: dict[str, Any] = _converter.unstructure(image)
    return data


def unstructure_search_hit(hit: SearchHit) -> dict[str, Any]:
    """Turn a search hit back into a JSON-ready object, as `unstructure_image` does an image."""
    data: dict[str, Any] = _converter.unstructure(hit)
    return data


def _describe(exc: BaseException, what: str = "image data") -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        return f"invalid {what}: " + "; ".join(cattrs.transform_error(exc, path="data"))
    return f"invalid {what}: {exc}"
