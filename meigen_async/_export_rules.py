"""Dataset exports decided with plain values: no asyncio, no aiohttp, no files.

What a sample is keyed (`sample_key`), what its row holds (`sample_rows`), what a failure's
status is (`status_of`), and the one typed row schema every format writes (`COLUMNS`, with
`json_row` and `hf_features` for the readers). Which shard a post goes to, and what OUT's files
say, is `_export_shards`. The shell, `_export` and `_export_files`, asks these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Final, Literal, TypeAlias

import attrs

from ._protocol import validate_image_id
from ._text import replace_surrogates
from .errors import (
    ImageNotFound,
    InvalidImageId,
    InvalidResponse,
    MediaHTTPError,
    MediaNotAllowed,
    MediaNotAnImage,
    MediaTooLarge,
    MediaTooManyFiles,
    MeigenError,
)
from .media import MediaFile
from .models import GalleryImage

__all__ = [
    "COLUMNS",
    "DEFAULT_SHARD_SIZE",
    "FORMATS",
    "MAX_SHARD_SIZE",
    "STATUSES",
    "WEBDATASET_IMAGE_FIELD",
    "ExportFormat",
    "Sample",
    "hf_features",
    "input_id",
    "json_row",
    "sample_key",
    "sample_rows",
    "status_of",
    "utc_text",
]

ExportFormat: TypeAlias = Literal["imagefolder", "webdataset", "parquet"]
"""The layouts an export writes; see docs/datasets.md."""

FORMATS: Final[tuple[ExportFormat, ...]] = ("imagefolder", "webdataset", "parquet")

STATUSES: Final = ("success", "not_found", "failed_to_download", "refused", "opted_out")
"""A sample's status, as img2dataset's status tables name them (plus `refused`, `opted_out`)."""

MAX_SHARD_SIZE: Final = 10_000
"""The most samples a shard holds: the Hugging Face Hub takes at most 10,000 files a folder,
and an imagefolder shard is one folder."""

DEFAULT_SHARD_SIZE: Final = 1000

WEBDATASET_IMAGE_FIELD: Final = "jpg"
"""The one field name every WebDataset sample's picture has, whatever its type (see
docs/datasets.md: the loaders infer fields from the first samples, and decode by content)."""

_ID_KEPT = 256  # characters of an input that is no gallery id kept in its status row
_INT = "int64"
_STR = "string"

COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("key", _STR),
    ("id", _STR),
    ("image_index", _INT),
    ("text", _STR),
    ("prompt_kind", _STR),
    ("model", _STR),
    ("width", _INT),
    ("height", _INT),
    ("likes", _INT),
    ("views", _INT),
    ("retweets", _INT),
    ("author_username", _STR),
    ("author_display_name", _STR),
    ("created_at", _STR),
    ("sref", _STR),
    ("profile", _STR),
    ("source_url", _STR),
    ("sha256", _STR),
    ("status", _STR),
    ("error_message", _STR),
)
"""Every sample's metadata, in order, with its Arrow / Hugging Face type (`string`, `int64`)."""


# -- One post's samples ---------------------------------------------------------------------------


def sample_key(image_id: str, index: int) -> str:
    """The key of picture `index` of gallery post `image_id`: `{id}_{index}`.

    A gallery id holds only `[A-Za-z0-9_-]`, so a key has no dot (WebDataset splits a member's
    name at its first dot) and names no path; and as the index follows the last `_`, no two
    (id, index) pairs make one key.
    """
    return f"{image_id}_{index}"


def input_id(item: str | GalleryImage) -> str:
    """What a status row names an input by: its id, surrogate-free and at most 256 characters."""
    text = item.id if isinstance(item, GalleryImage) else str(item)
    text = replace_surrogates(text)
    return text if len(text) <= _ID_KEPT else text[:_ID_KEPT] + "..."


def status_of(error: MeigenError) -> str:
    """The status of a sample that failed with `error`.

    `not_found`: no such post, no such picture (404, 410), or no gallery id at all;
    `refused`: the picture's host, type, size or pixels (`MediaDecompressionBomb`, a
    `MediaTooLarge`) were refused before it was kept, or it was past `max_media_files`;
    `failed_to_download`: anything else (the network, a 5xx, a 429 past every retry, a disk,
    the gallery's data for the post invalid: the closest of img2dataset's statuses).
    """
    if isinstance(error, (ImageNotFound, InvalidImageId)):
        return "not_found"
    if isinstance(error, MediaHTTPError) and error.status in (404, 410):
        return "not_found"
    if isinstance(error, (MediaNotAllowed, MediaNotAnImage, MediaTooLarge, MediaTooManyFiles)):
        return "refused"
    return "failed_to_download"


def error_text(error: MeigenError) -> str:
    """What a status row says of `error`: its message, saying so when the gallery's data was bad."""
    if isinstance(error, InvalidResponse):
        return f"the gallery's data for this post is invalid: {error.message}"
    return error.message


@attrs.frozen
class Sample:
    """One row of a status table; `picture` is the file to write, for a success only."""

    row: Mapping[str, Any]
    """A value for every column of `COLUMNS`, None where there is none."""
    picture: MediaFile | None = None
    """The verified file on disk, when the sample is written."""

    @property
    def key(self) -> str | None:
        """The sample's key; None for a row that stands for a post with no sample."""
        key: str | None = self.row["key"]
        return key

    @property
    def ext(self) -> str:
        """The picture's own extension, dot included (`.png`); "" without a picture."""
        return PurePosixPath(self.picture.path.name).suffix if self.picture else ""


def utc_text(when: datetime | None) -> str | None:
    """`when` in ISO 8601, in UTC, ending in `Z`; None for None."""
    if when is None:
        return None
    text = when.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _post_fields(image: GalleryImage) -> dict[str, Any]:
    prompt = image.prompt
    return {
        "text": image.text,
        "prompt_kind": prompt.kind.value,
        "model": image.model,
        "likes": image.likes,
        "views": image.views,
        "retweets": image.retweets,
        "author_username": image.author_username,
        "author_display_name": image.author_display_name,
        "created_at": utc_text(image.created_at),
        "sref": image.sref or prompt.params.get("sref") or None,
        "profile": prompt.params.get("profile") or None,
    }


def _row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(name for name, _ in COLUMNS)
    row.update(values)
    return row


_OPT_OUT_MESSAGE = "the picture's host sent X-Robots-Tag: noai or noimageai"


def sample_rows(
    item: str | GalleryImage,
    image: GalleryImage | None,
    files: Sequence[MediaFile],
    error: MeigenError | None,
    *,
    ignore_opt_out: bool = False,
) -> list[Sample]:
    """The samples of one input: a row per picture of its post, or one for a post with none.

    `image` is the post (None when it could not be had: `error` says why), `files` the
    pictures on disk, `error` the first failure. A picture missing from `files` takes the
    status of `error`. A picture whose host opted out is `opted_out` and not written, unless
    `ignore_opt_out`.
    """
    if image is not None and not _is_gallery_id(image.id):
        # No key, and no path, is ever made of an id that is not a gallery id.
        image, files, error = None, (), InvalidImageId(f"{input_id(item)!r} is not a gallery id")
    if image is None:
        return [
            Sample(
                _row(
                    id=input_id(item),
                    status=status_of(error) if error is not None else "failed_to_download",
                    error_message=error_text(error) if error is not None else "no post was given",
                )
            )
        ]
    post = _post_fields(image)
    urls = image.media_urls
    if not urls:
        return [
            Sample(_row(id=image.id, status="not_found", error_message="the post has no pictures"))
        ]
    on_disk = {_index(media): media for media in files}
    samples = []
    for index, url in enumerate(urls):
        media = on_disk.get(index)
        key = sample_key(image.id, index)
        if media is not None and (ignore_opt_out or not media.opted_out):
            row = _row(
                key=key,
                id=image.id,
                image_index=index,
                width=media.width,
                height=media.height,
                source_url=url,
                sha256=media.sha256,
                status="success",
                **post,
            )
            samples.append(Sample(row, media))
            continue
        if media is not None:
            status, message = "opted_out", _OPT_OUT_MESSAGE
        elif error is not None:
            status, message = status_of(error), error_text(error)
        else:  # not written, and nothing said why: not expected of the download path
            status, message = "failed_to_download", "the picture was not written"
        row = _row(
            key=key,
            id=image.id,
            image_index=index,
            source_url=url,
            status=status,
            error_message=message,
            **post,
        )
        samples.append(Sample(row))
    return samples


def _is_gallery_id(image_id: str) -> bool:
    try:
        validate_image_id(image_id)
    except InvalidImageId:
        return False
    return True


def _index(media: MediaFile) -> int:
    # The download path names file number i `{i}{ext}`; anything else is no index of ours.
    stem = media.path.name.partition(".")[0]
    return int(stem) if stem.isascii() and stem.isdigit() else -1


# -- Types for the readers ------------------------------------------------------------------------


def json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """`row` with one type a field, for a WebDataset `.json`: "" or 0 where it holds None.

    The Hub's loader infers each field's type from the first samples, and refuses or nulls a
    later sample whose field has another (a null first, a string later).
    """
    return {
        name: (row[name] if row[name] is not None else ("" if kind == _STR else 0))
        for name, kind in COLUMNS
    }


def hf_features(columns: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Hugging Face `Features` of typed columns, as a Parquet file's metadata holds them.

    A column typed `image` is the Hub's Image feature (a struct of `bytes` and `path`).
    """
    return {
        name: {"_type": "Image"} if kind == "image" else {"dtype": kind, "_type": "Value"}
        for name, kind in columns
    }
