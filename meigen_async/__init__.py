"""Async client for MeiGen's public gallery endpoint `GET /api/images/:id`."""

from ._version import __version__
from .errors import (
    ApiError,
    ImageNotFound,
    InvalidImageId,
    InvalidResponse,
    MeigenError,
    RateLimited,
    ServerError,
    TransportError,
)
from .models import GalleryImage, ImageResult, PromptSegment, SessionStats
from .prompt import Prompt, PromptKind, parse_prompt
from .retry import RetryPolicy
from .session import GallerySession

__all__ = [
    "ApiError",
    "GalleryImage",
    "GallerySession",
    "ImageNotFound",
    "ImageResult",
    "InvalidImageId",
    "InvalidResponse",
    "MeigenError",
    "Prompt",
    "PromptKind",
    "PromptSegment",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "SessionStats",
    "TransportError",
    "__version__",
    "parse_prompt",
]
