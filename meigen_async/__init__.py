"""Async client for MeiGen's public gallery endpoint `GET /api/images/:id`."""

from ._version import __version__
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
from .limits import LocalRateLimiter, RateLimiter
from .media import MediaFile, MediaResult
from .models import GalleryImage, ImageResult, PromptSegment, SearchHit, SessionStats
from .prompt import Prompt, PromptKind, parse_prompt
from .retry import RetryPolicy
from .session import GallerySession

__all__ = [
    "ApiError",
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
    "Prompt",
    "PromptKind",
    "PromptSegment",
    "RateLimited",
    "RateLimiter",
    "RetryPolicy",
    "SearchHit",
    "ServerError",
    "SessionStats",
    "TransportError",
    "UpstreamUnreachable",
    "__version__",
    "parse_prompt",
]
