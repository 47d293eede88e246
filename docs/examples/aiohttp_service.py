"""An aiohttp.web service on the gallery: one `GallerySession` per process, in `cleanup_ctx`.

Run it with `python aiohttp_service.py`; `MEIGEN_BASE_URL` points it at another gallery.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from aiohttp import web

from meigen_async import GallerySession, ImageNotFound, MeigenError

GALLERY = web.AppKey("gallery", GallerySession)


def create_app(base_url: str | None = None) -> web.Application:
    """The app; its session is opened at startup and closed at cleanup."""

    async def gallery_session(app: web.Application) -> AsyncIterator[None]:
        url = base_url or os.environ.get("MEIGEN_BASE_URL", "https://www.meigen.ai")
        async with GallerySession(url, telemetry_name="aiohttp") as session:
            app[GALLERY] = session
            yield  # the app serves here; leaving closes the session

    async def image(request: web.Request) -> web.Response:
        try:
            found = await request.app[GALLERY].get_image(request.match_info["image_id"])
        except ImageNotFound:
            raise web.HTTPNotFound(text="no such image") from None
        except MeigenError as error:  # InvalidImageId, RateLimited, TransportError, ...
            raise web.HTTPBadGateway(text=str(error)) from error
        return web.json_response({"id": found.id, "prompt": found.text})

    async def health(request: web.Request) -> web.Response:
        # No I/O: the session's counters, and (`?id=`) whether an id is cached, by `peek`.
        gallery = request.app[GALLERY]
        stats = gallery.stats
        looked = stats.cache_hits + stats.cache_misses
        wanted = request.query.get("id")
        return web.json_response(
            {
                "open": not gallery.closed,
                "hit_ratio": stats.cache_hits / looked if looked else None,
                "errors": stats.errors,
                "requests": stats.requests,
                "cached": None if wanted is None else gallery.peek(wanted) is not None,
            }
        )

    app = web.Application()
    app.cleanup_ctx.append(gallery_session)
    app.router.add_get("/images/{image_id}", image)
    app.router.add_get("/health", health)
    return app


if __name__ == "__main__":
    web.run_app(create_app(), host="127.0.0.1", port=8080)
