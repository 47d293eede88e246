"""A FastAPI service on the gallery: one `GallerySession` per process, opened in the lifespan.

Run it with `uvicorn fastapi_service:app` (FastAPI and uvicorn installed); `MEIGEN_BASE_URL`
points it at another gallery, such as `meigen-async serve` on your machine.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from meigen_async import GallerySession, ImageNotFound, MeigenError


def create_app(base_url: str | None = None) -> FastAPI:
    """The app; its session is opened at startup and closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = base_url or os.environ.get("MEIGEN_BASE_URL", "https://www.meigen.ai")
        async with GallerySession(url, telemetry_name="fastapi") as session:
            app.state.gallery = session
            yield  # the app serves here; leaving closes the session

    app = FastAPI(lifespan=lifespan)

    @app.get("/images/{image_id}")
    async def image(image_id: str, request: Request) -> dict[str, Any]:
        gallery: GallerySession = request.app.state.gallery
        try:
            found = await gallery.get_image(image_id)
        except ImageNotFound as error:
            raise HTTPException(404, "no such image") from error
        except MeigenError as error:  # InvalidImageId, RateLimited, TransportError, ...
            raise HTTPException(502, str(error)) from error
        return {"id": found.id, "prompt": found.text, "media": list(found.media_urls)}

    @app.get("/health")
    async def health(request: Request, id: str | None = None) -> dict[str, Any]:
        # No I/O: the session's counters, and (`?id=`) whether an id is cached, by `peek`.
        gallery: GallerySession = request.app.state.gallery
        stats = gallery.stats
        looked = stats.cache_hits + stats.cache_misses
        return {
            "open": not gallery.closed,
            "hit_ratio": stats.cache_hits / looked if looked else None,
            "errors": stats.errors,
            "requests": stats.requests,
            "cached": None if id is None else gallery.peek(id) is not None,
        }

    return app


app = create_app()
