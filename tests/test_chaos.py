"""Whatever the faults, every id ends as an image or a `MeigenError`: property-based fault
schedules and a chaos run of hundreds of ids, end to end against FakeGallery.

Both are marked slow: `make quick` leaves them out, `make test` runs them.
"""

from __future__ import annotations

import asyncio
import gc
import random
from contextlib import nullcontext
from typing import Any

import attrs
import pytest
from helpers import fast
from hypothesis import given, settings
from hypothesis import strategies as st

from meigen_async import (
    ApiError,
    GalleryImage,
    GallerySession,
    ImageNotFound,
    InvalidResponse,
    MeigenError,
    RateLimited,
    ServerError,
    TransportError,
)
from meigen_async.testing import Answer, FakeGallery, sample_images

# -- Property: whatever the faults, every id ends as an image or a MeigenError -------------------

SAMPLE = sample_images()
KNOWN_IDS = [data["id"] for data in SAMPLE[:6]]
UNKNOWN_IDS = ["unknown-1", "unknown-2"]
PROPERTY_TIMEOUT = 0.1
PROPERTY_BODY_LIMIT = 2048
PROPERTY_POLICY = fast(max_retries=2)


@attrs.frozen
class Fault:
    """A scripted answer, the error an attempt getting it fails with, and whether it is retried."""

    answer: Answer
    error: type[MeigenError]
    retried: bool


FAULTS = [
    *(Fault(Answer.error(status), ApiError, False) for status in (400, 403)),
    Fault(Answer.error(408), ApiError, True),
    Fault(Answer.error(429), RateLimited, True),
    *(Fault(Answer.error(status), ServerError, True) for status in (500, 502, 503, 504)),
    Fault(Answer.rate_limited(retry_after="0"), RateLimited, True),
    Fault(Answer.dropped(), TransportError, True),
    Fault(Answer.cut_off(), TransportError, True),
    Fault(Answer.truncated(), InvalidResponse, False),
    Fault(Answer.html(), InvalidResponse, False),
    Fault(Answer.oversized(PROPERTY_BODY_LIMIT * 2), InvalidResponse, False),
    Fault(Answer.oversized(PROPERTY_BODY_LIMIT * 2, chunked=True), InvalidResponse, False),
    Fault(Answer.slow(PROPERTY_TIMEOUT * 2.5), TransportError, True),
]


def expected_outcome(image_id: str, schedule: list[int]) -> type[GalleryImage | MeigenError]:
    """What the spec says a call ends in, given the faults scripted for its id."""
    queue = [FAULTS[i] for i in schedule]
    last: type[MeigenError] = MeigenError
    for _ in range(PROPERTY_POLICY.max_retries + 1):
        if not queue:
            return GalleryImage if image_id in KNOWN_IDS else ImageNotFound
        fault = queue.pop(0)
        if fault.answer == Answer.truncated() and image_id in UNKNOWN_IDS:
            return ImageNotFound  # a cut 404 body is still a 404
        if not fault.retried:
            return fault.error
        last = fault.error
    return last


async def run_scenario(ids: list[str], schedules: dict[str, list[int]], via: str) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    async with FakeGallery(SAMPLE) as fake:
        for image_id, schedule in schedules.items():
            fake.script(image_id, *(FAULTS[i].answer for i in schedule))
        async with GallerySession(
            fake.url,
            retry=PROPERTY_POLICY,
            timeout=PROPERTY_TIMEOUT,
            max_body_bytes=PROPERTY_BODY_LIMIT,
        ) as client:
            if via == "get_images":
                got = await client.get_images(ids, return_exceptions=True)
                outcomes = dict(zip(ids, got, strict=True))
            else:
                outcomes = {}
                async for result in client.iter_images(ids):
                    outcomes[result.id] = result.image if result.ok else result.error
            assert sorted(outcomes) == sorted(set(ids))

            for image_id, outcome in outcomes.items():
                assert isinstance(outcome, (GalleryImage, MeigenError)), repr(outcome)
                expected = expected_outcome(image_id, schedules.get(image_id, []))
                assert isinstance(outcome, expected), (image_id, outcome, expected)

            fake.scripts.clear()
            for image_id, outcome in outcomes.items():
                before = fake.requests[image_id]
                if isinstance(outcome, GalleryImage):
                    assert outcome.id == image_id
                    assert await client.get_image(image_id) is outcome
                    assert fake.requests[image_id] == before
                elif isinstance(outcome, ImageNotFound):
                    with pytest.raises(ImageNotFound):
                        await client.get_image(image_id)
                    assert fake.requests[image_id] == before  # the 404 is remembered
                else:
                    # Any other error was not cached: the next call asks again.
                    with pytest.raises(ImageNotFound) if image_id in UNKNOWN_IDS else nullcontext():
                        await client.get_image(image_id)
                    assert fake.requests[image_id] == before + 1
    gc.collect()
    assert not [c.get("message") for c in reported]


@st.composite
def fault_scenarios(draw: st.DrawFn) -> tuple[list[str], dict[str, list[int]], str]:
    ids = draw(st.lists(st.sampled_from(KNOWN_IDS + UNKNOWN_IDS), min_size=1, max_size=6))
    schedules = {
        image_id: draw(st.lists(st.integers(0, len(FAULTS) - 1), max_size=4))
        for image_id in dict.fromkeys(ids)
    }
    via = draw(st.sampled_from(["get_images", "iter_images"]))
    return ids, schedules, via


@pytest.mark.slow
@settings(
    max_examples=30,
    deadline=None,
)
@given(scenario=fault_scenarios())
def test_any_fault_schedule_ends_in_images_or_meigen_errors_and_caches_only_404s(
    scenario: tuple[list[str], dict[str, list[int]], str],
) -> None:
    asyncio.run(run_scenario(*scenario))


# -- Chaos: hundreds of ids, each failing transiently in its own way -----------------------------

TRANSIENT = [
    Answer.error(503),
    Answer.rate_limited(retry_after="0"),
    Answer.dropped(),
    Answer.cut_off(),
    Answer.html(502),
    Answer.slow(1.2),
]


@pytest.mark.slow
@pytest.mark.parametrize("via", ["get_images", "iter_images"])
async def test_hundreds_of_ids_failing_transiently_all_succeed(
    images: list[dict[str, Any]], via: str
) -> None:
    chooser = random.Random(20240611)
    many = [{**images[i % len(images)], "id": f"chaos-{i}"} for i in range(300)]
    failures: dict[str, int] = {}
    async with FakeGallery(many) as fake:
        for image_id in fake.ids:
            faults = chooser.choices(TRANSIENT, k=chooser.randint(0, 2))
            fake.script(image_id, *faults)
            failures[image_id] = len(faults)
        policy = fast(max_retries=3)
        # The timeout leaves room for a loaded loop: a spurious one would add a request.
        async with GallerySession(fake.url, retry=policy, timeout=0.6, concurrency=32) as client:
            if via == "get_images":
                got = await client.get_images(fake.ids)
                assert [image.id for image in got] == fake.ids
            else:
                results = [r async for r in client.iter_images(fake.ids)]
                assert [r.error for r in results if not r.ok] == []
                assert sorted(r.id for r in results) == sorted(fake.ids)
            assert client.stats.errors == 0
    assert {i: fake.requests[i] for i in fake.ids} == {i: n + 1 for i, n in failures.items()}
