"""Async client for MeiGen's public gallery endpoint `GET /api/images/:id`."""

from ._protocol import Validators
from ._version import __version__
from .cache import CachePolicy, MemoryCache
from .errors import (
    ApiError,
    DailyLimitReached,
    ExportError,
    ImageNotFound,
    InvalidImageId,
    InvalidQuery,
    InvalidResponse,
    MediaDecompressionBomb,
    MediaError,
    MediaHTTPError,
    MediaNotAllowed,
    MediaNotAnImage,
    MediaRateLimited,
    MediaServerError,
    MediaTooLarge,
    MediaTooManyFiles,
    MediaTransportError,
    MediaWriteError,
    MeigenError,
    RateLimited,
    ServerError,
    TransportError,
    UpstreamUnreachable,
)
from .export import ExportProgress, ExportSummary
from .limits import LocalRateLimiter, Pacer, RateLimiter
from .media import MediaFile, MediaResult
from .models import GalleryImage, ImageResult, PromptSegment, SearchHit, SessionStats
from .prompt import Prompt, PromptKind, parse_prompt
from .retry import RetryPolicy
from .session import GallerySession
from .shared import SharedCache, SharedEntry, SharedImage, SharedMissing

__all__ = [
    "ApiError",
    "CachePolicy",
    "DailyLimitReached",
    "ExportError",
    "ExportProgress",
    "ExportSummary",
    "GalleryImage",
    "GallerySession",
    "ImageNotFound",
    "ImageResult",
    "InvalidImageId",
    "InvalidQuery",
    "InvalidResponse",
    "LocalRateLimiter",
    "MediaDecompressionBomb",
    "MediaError",
    "MediaFile",
    "MediaHTTPError",
    "MediaNotAllowed",
    "MediaNotAnImage",
    "MediaRateLimited",
    "MediaResult",
    "MediaServerError",
    "MediaTooLarge",
    "MediaTooManyFiles",
    "MediaTransportError",
    "MediaWriteError",
    "MeigenError",
    "MemoryCache",
    "Pacer",
    "Prompt",
    "PromptKind",
    "PromptSegment",
    "RateLimited",
    "RateLimiter",
    "RetryPolicy",
    "SearchHit",
    "ServerError",
    "SessionStats",
    "SharedCache",
    "SharedEntry",
    "SharedImage",
    "SharedMissing",
    "TransportError",
    "UpstreamUnreachable",
    "Validators",
    "__version__",
    "parse_prompt",
]
