"""The service recipes of docs/service.md (docs/examples), against a FakeGallery.

Each opens one session at startup, serves images and a health check without I/O from it, and
closes it at shutdown.
"""

from __future__ import annotations

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers import load_example

from meigen_async.testing import FakeGallery


@pytest.mark.slow
async def test_the_fastapi_recipe_serves_from_one_session_closed_at_shutdown(
    gallery: FakeGallery,
):
    app = load_example("fastapi_service", "fastapi").create_app(gallery.url)
    image_id = gallery.ids[0]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            first = await client.get(f"/images/{image_id}")
            again = await client.get(f"/images/{image_id}")
            missing = await client.get("/images/1999999999999999999")
            health = await client.get("/health", params={"id": image_id})
        session = app.state.gallery
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == image_id
    assert missing.status_code == 404
    assert gallery.requests[image_id] == 1  # the second answered by the session's cache
    assert health.json()["cached"] is True
    assert health.json()["hit_ratio"] > 0
    assert session.closed


async def test_the_aiohttp_recipe_serves_from_one_session_closed_at_cleanup(
    gallery: FakeGallery,
):
    recipe = load_example("aiohttp_service", "aiohttp")
    app = recipe.create_app(gallery.url)
    image_id = gallery.ids[0]
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        first = await client.get(f"/images/{image_id}")
        again = await client.get(f"/images/{image_id}")
        missing = await client.get("/images/1999999999999999999")
        health = await (await client.get("/health", params={"id": image_id})).json()
        session = app[recipe.GALLERY]
        statuses = (first.status, again.status, missing.status)
    assert statuses == (200, 200, 404)
    assert gallery.requests[image_id] == 1
    assert health["cached"] is True
    assert session.closed
