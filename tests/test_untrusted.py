"""Bodies and answers not to be trusted, over loopback: redirects, foreign ids, deep nesting.

The shared-cache side of the same (nothing written to Redis, a deep value a miss) is in
``test_redis_cache.py``, next to its Redis fixtures.

Each test asserts what the servers saw: a redirect target that must never be reached counts its
requests, and a second call for the same id proves by a second request that nothing was cached.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from meigen_async import (
    ApiError,
    GalleryImage,
    GallerySession,
    ImageNotFound,
    InvalidResponse,
    MeigenError,
    ServerError,
)
from meigen_async.retry import RetryPolicy
from meigen_async.testing import Answer, FakeGallery

REDIRECTS = [301, 302, 303, 307, 308]
NO_RETRY = RetryPolicy(max_retries=0)
ONE_QUICK_RETRY = RetryPolicy(max_retries=1, backoff_base=0.001, backoff_max=0.001)
DEEP = b"[" * 5000
FOREIGN = b"<html>a page of another site, never to be quoted</html>"


class Target:
    """A second aiohttp server on loopback, where redirects point: it counts what reaches it."""

    def __init__(self) -> None:
        self.paths: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _serve(self, request: web.Request) -> web.Response:
        self.paths[request.path] += 1
        data = {"id": request.path.rsplit("/", 1)[-1], "text": "the foreign answer"}
        return web.json_response({"success": True, "data": data})

    async def __aenter__(self) -> Target:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    async with Target() as server:
        yield server


def redirect(status: int, location: str) -> Answer:
    return Answer(status=status, headers={"Location": location}, body=FOREIGN)


async def two_gets(session: GallerySession, image_id: str) -> list[ApiError]:
    """Ask for ``image_id`` twice; both calls must fail with ApiError."""
    errors = []
    for _ in range(2):
        with pytest.raises(ApiError) as caught:
            await session.get_image(image_id)
        errors.append(caught.value)
    return errors


# -- Redirects ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", REDIRECTS)
async def test_a_redirect_to_another_host_is_not_followed_nor_cached(
    gallery: FakeGallery, target: Target, status: int
) -> None:
    image_id = gallery.ids[0]
    location = f"{target.url}/api/images/{image_id}"
    gallery.script(image_id, redirect(status, location), redirect(status, location))
    async with GallerySession(gallery.url, retry=RetryPolicy()) as session:
        errors = await two_gets(session, image_id)
    assert sum(target.paths.values()) == 0
    assert gallery.requests[image_id] == 2
    assert all(error.status == status for error in errors)
    assert all(location in str(error) for error in errors)
    assert all("set base_url" in str(error) for error in errors)
    assert all("another site" not in str(error) for error in errors)


@pytest.mark.parametrize("status", REDIRECTS)
async def test_a_redirect_to_another_path_of_the_gallery_is_not_followed(
    gallery: FakeGallery, status: int
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, redirect(status, f"/elsewhere/{image_id}"))
    async with GallerySession(gallery.url) as session:
        with pytest.raises(ApiError) as caught:
            await session.get_image(image_id)
    assert gallery.paths == [f"/api/images/{image_id}"]
    assert caught.value.status == status


@pytest.mark.parametrize("status", REDIRECTS)
async def test_a_callers_own_aiohttp_session_does_not_follow_redirects_either(
    gallery: FakeGallery, target: Target, status: int
) -> None:
    image_id = gallery.ids[0]
    location = f"{target.url}/api/images/{image_id}"
    gallery.script(image_id, redirect(status, location), redirect(status, location))
    async with (
        aiohttp.ClientSession() as http,
        GallerySession(gallery.url, session=http) as session,
    ):
        await two_gets(session, image_id)
    assert sum(target.paths.values()) == 0
    assert gallery.requests[image_id] == 2


async def test_a_redirect_in_a_bulk_fetch_is_that_ids_error_and_reaches_nobody(
    gallery: FakeGallery, target: Target
) -> None:
    moved, kept = gallery.ids[:2]
    gallery.script(moved, redirect(302, f"{target.url}/api/images/{moved}"))
    async with GallerySession(gallery.url) as session:
        results = await session.get_images([moved, kept], return_exceptions=True)
    assert isinstance(results[0], ApiError)
    assert isinstance(results[1], GalleryImage)
    assert sum(target.paths.values()) == 0


# -- The answer of another id ---------------------------------------------------------------------


def answer_as(data: dict[str, Any]) -> Answer:
    return Answer(body=json.dumps({"success": True, "data": data}).encode())


async def test_an_answer_for_another_id_is_invalid_and_not_cached(
    gallery: FakeGallery, images: list[dict[str, Any]]
) -> None:
    asked, answered = gallery.ids[:2]
    other = next(data for data in images if data["id"] == answered)
    gallery.script(asked, answer_as(other), answer_as(other))
    async with GallerySession(gallery.url) as session:
        for _ in range(2):
            with pytest.raises(InvalidResponse) as caught:
                await session.get_image(asked)
            assert asked in str(caught.value)
            assert answered in str(caught.value)
    assert gallery.requests[asked] == 2


# -- Deep nesting ---------------------------------------------------------------------------------

DEEP_CASES = [(200, InvalidResponse), (404, ImageNotFound), (503, ServerError)]


def deep(status: int) -> Answer:
    return Answer(status=status, body=DEEP)


@pytest.mark.parametrize(("status", "error_type"), DEEP_CASES)
async def test_a_deeply_nested_body_is_a_typed_error_from_get_image(
    gallery: FakeGallery, status: int, error_type: type[MeigenError]
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, deep(status))
    async with GallerySession(gallery.url, retry=NO_RETRY) as session:
        with pytest.raises(error_type) as caught:
            await session.get_image(image_id)
    assert caught.value.status in (status, None)
    assert gallery.requests[image_id] == 1


@pytest.mark.parametrize(("status", "error_type"), DEEP_CASES)
async def test_a_deeply_nested_body_is_a_typed_error_in_get_images_results(
    gallery: FakeGallery, status: int, error_type: type[MeigenError]
) -> None:
    nested, plain = gallery.ids[:2]
    gallery.script(nested, deep(status))
    async with GallerySession(gallery.url, retry=NO_RETRY) as session:
        results = await session.get_images([nested, plain], return_exceptions=True)
    assert type(results[0]) is error_type
    assert isinstance(results[1], GalleryImage)
    assert gallery.requests[nested] == 1


@pytest.mark.parametrize(("status", "error_type"), DEEP_CASES)
async def test_a_deeply_nested_body_is_a_typed_error_in_iter_images_results(
    gallery: FakeGallery, status: int, error_type: type[MeigenError]
) -> None:
    nested, plain = gallery.ids[:2]
    gallery.script(nested, deep(status))
    async with (
        GallerySession(gallery.url, retry=NO_RETRY) as session,
        aclosing(session.iter_images([nested, plain])) as results,
    ):
        outcomes = {result.id: result async for result in results}
    assert type(outcomes[nested].error) is error_type
    assert outcomes[plain].ok
    assert gallery.requests[nested] == 1


async def test_a_deeply_nested_503_is_retried_like_any_other(gallery: FakeGallery) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, deep(503))
    async with GallerySession(gallery.url, retry=ONE_QUICK_RETRY) as session:
        image = await session.get_image(image_id)
    assert image.id == image_id
    assert gallery.requests[image_id] == 2


# -- Lone surrogates ------------------------------------------------------------------------------


async def test_a_lone_surrogate_escape_arrives_as_a_replacement_character(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    body = b'{"success": true, "data": {"id": "%s", "text": "a\\ud800b"}}' % image_id.encode()
    gallery.script(image_id, Answer(body=body))
    async with GallerySession(gallery.url) as session:
        image = await session.get_image(image_id)
    assert image.text == "a\ufffdb"
    image.text.encode("utf-8")
