"""The bot examples in docs/examples, against a FakeGallery and without any network.

They need the ``bots`` extra (discord.py, aiogram); without it these tests are skipped.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from types import ModuleType, SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock

import pytest
from helpers import load_example, slow_only

from meigen_async import GalleryImage, GallerySession, RetryPolicy
from meigen_async.bots import discord_embed, telegram_caption
from meigen_async.testing import Answer, FakeGallery

# In one worker: importing aiogram takes about 3 s, and split across workers it was paid twice.
pytestmark = pytest.mark.xdist_group("bot_examples")

PLAIN_ID = "2013572250852104677"
MISSING = "1999999999999999999"


@pytest.fixture(scope="module")
def discord_bot() -> ModuleType:
    return load_example("discord_bot", "discord")


@pytest.fixture(scope="module")
def telegram_module() -> ModuleType:
    return load_example("telegram_bot", "aiogram")


@pytest.fixture
def telegram_bot(request: pytest.FixtureRequest) -> ModuleType:
    """The Telegram example; importing aiogram takes seconds, so only for tests marked slow."""
    slow_only(request, "the Telegram example (importing aiogram takes seconds)")
    module: ModuleType = request.getfixturevalue("telegram_module")
    return module


@pytest.fixture
async def unreachable() -> AsyncIterator[GallerySession]:
    """A session on a gallery that has stopped, retrying nothing."""
    async with FakeGallery() as stopped:
        url = stopped.url
    async with GallerySession(url, retry=RetryPolicy(max_retries=0)) as session:
        yield session


# -- Discord -------------------------------------------------------------------------------------


async def test_discord_reply_is_the_embed_of_the_image(
    discord_bot: ModuleType, session: GallerySession
) -> None:
    reply = await discord_bot.image_reply(session, f" {PLAIN_ID} ")
    expected = discord_embed(await session.get_image(PLAIN_ID))
    assert isinstance(reply, discord_bot.discord.Embed)
    assert reply.title == expected["title"]
    assert reply.description == expected["description"]
    assert reply.image.url == expected["image"]["url"]
    assert reply.author.name == expected["author"]["name"]


def test_discord_py_counts_a_huge_embed_within_6000_characters(
    discord_bot: ModuleType,
) -> None:
    huge = GalleryImage(id=PLAIN_ID, text="🌸 blossom " * 3000, author_display_name="N" * 900)
    embed = discord_bot.discord.Embed.from_dict(discord_embed(huge))
    assert len(embed) <= 6000
    assert embed.description.endswith("…")


async def test_discord_reply_says_when_the_gallery_has_no_such_image(
    discord_bot: ModuleType, session: GallerySession
) -> None:
    assert await discord_bot.image_reply(session, MISSING) == f"The gallery has no image {MISSING}."


async def test_discord_reply_says_when_the_id_is_not_a_gallery_id(
    discord_bot: ModuleType, gallery: FakeGallery, session: GallerySession
) -> None:
    reply = await discord_bot.image_reply(session, "../etc/passwd")
    assert reply.startswith("That is not a gallery id")
    assert gallery.total_requests == 0


async def test_discord_reply_says_when_the_gallery_is_unreachable(
    discord_bot: ModuleType, unreachable: GallerySession
) -> None:
    reply = await discord_bot.image_reply(unreachable, PLAIN_ID)
    assert reply.startswith("The gallery is not answering")


async def test_discord_command_defers_then_sends_the_embed(
    discord_bot: ModuleType, session: GallerySession
) -> None:
    interaction = SimpleNamespace(
        client=SimpleNamespace(gallery=session),
        response=SimpleNamespace(defer=AsyncMock()),
        followup=SimpleNamespace(send=AsyncMock()),
    )
    await discord_bot.image_command.callback(interaction, image_id=PLAIN_ID)
    interaction.response.defer.assert_awaited_once()
    sent = interaction.followup.send.await_args
    assert sent.kwargs["embed"].title == discord_embed(await session.get_image(PLAIN_ID))["title"]


async def test_discord_bot_opens_its_session_in_setup_hook_and_closes_it_in_close(
    discord_bot: ModuleType, gallery: FakeGallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = discord_bot.GalleryBot(base_url=gallery.url)
    monkeypatch.setattr(bot.tree, "sync", AsyncMock())  # no Discord to sync with
    await bot.setup_hook()
    shared = bot.gallery
    assert not shared.closed
    assert shared.base_url == gallery.url
    assert [command.name for command in bot.tree.get_commands()] == ["image", "inspire"]
    await bot.close()
    assert shared.closed


def test_discord_example_refuses_to_start_without_a_token(
    discord_bot: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    with pytest.raises(SystemExit, match="DISCORD_TOKEN"):
        discord_bot.main()


# -- Telegram ------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_telegram_reply_is_the_photo_with_its_html_caption(
    telegram_bot: ModuleType, session: GallerySession
) -> None:
    image = await session.get_image(PLAIN_ID)
    reply = await telegram_bot.image_reply(session, PLAIN_ID)
    assert reply == telegram_bot.Reply(image.media_urls[0], telegram_caption(image, "HTML"))


@pytest.mark.slow
async def test_telegram_reply_explains_the_command_when_the_id_is_missing(
    telegram_bot: ModuleType, session: GallerySession
) -> None:
    assert await telegram_bot.image_reply(session, None) == telegram_bot.USAGE
    assert await telegram_bot.image_reply(session, "   ") == telegram_bot.USAGE


@pytest.mark.slow
async def test_telegram_reply_says_when_the_gallery_has_no_such_image(
    telegram_bot: ModuleType, session: GallerySession
) -> None:
    reply = await telegram_bot.image_reply(session, MISSING)
    assert reply == telegram_bot.Reply(None, f"The gallery has no image <code>{MISSING}</code>.")


@pytest.mark.slow
async def test_telegram_reply_says_when_the_id_is_not_a_gallery_id(
    telegram_bot: ModuleType, gallery: FakeGallery, session: GallerySession
) -> None:
    reply = await telegram_bot.image_reply(session, "<b>hi</b>")
    assert reply.photo is None
    assert reply.text.startswith("That is not a gallery id")
    assert gallery.total_requests == 0


@pytest.mark.slow
async def test_telegram_reply_says_when_the_gallery_is_unreachable(
    telegram_bot: ModuleType, unreachable: GallerySession
) -> None:
    reply = await telegram_bot.image_reply(unreachable, PLAIN_ID)
    assert reply.text.startswith("The gallery is not answering")


@pytest.mark.slow
async def test_telegram_dispatcher_opens_the_session_at_startup_and_closes_it_at_shutdown(
    telegram_bot: ModuleType, gallery: FakeGallery
) -> None:
    dispatcher = telegram_bot.build_dispatcher(gallery.url)
    await dispatcher.emit_startup(dispatcher=dispatcher)
    shared = dispatcher["gallery"]
    assert isinstance(shared, GallerySession)
    assert shared.base_url == gallery.url
    await dispatcher.emit_shutdown(dispatcher=dispatcher)
    assert shared.closed


def recording_bot() -> tuple[Any, list[Any]]:
    """An aiogram Bot whose API calls are recorded instead of sent."""
    from aiogram import Bot
    from aiogram.client.session.base import BaseSession
    from aiogram.types import Chat, Message

    calls: list[Any] = []

    class RecordingSession(BaseSession):
        async def make_request(
            self,
            bot: Any,
            method: Any,
            timeout: int | None = None,  # noqa: ASYNC109 - aiogram's signature
        ) -> Any:
            calls.append(method)
            chat = Chat(id=1, type="private")
            return Message(message_id=2, date=datetime.now(UTC), chat=chat)

        async def close(self) -> None:
            pass

        async def stream_content(self, *args: Any, **kwargs: Any) -> AsyncGenerator[bytes, None]:
            yield b""

    return Bot("123456:TEST-TOKEN", session=RecordingSession()), calls


@pytest.mark.slow
async def test_telegram_image_command_sends_the_photo_through_the_dispatcher(
    telegram_bot: ModuleType, gallery: FakeGallery
) -> None:
    from aiogram.types import Update

    bot, calls = recording_bot()
    text = f"/image {PLAIN_ID}"
    update = Update.model_validate(
        {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": 1, "type": "private"},
                "from": {"id": 7, "is_bot": False, "first_name": "Ann"},
                "text": text,
                "entities": [{"type": "bot_command", "offset": 0, "length": len("/image")}],
            },
        },
        context={"bot": bot},
    )
    dispatcher = telegram_bot.build_dispatcher(gallery.url)
    await dispatcher.emit_startup(dispatcher=dispatcher)
    try:
        await dispatcher.feed_update(bot, update)
        image = await dispatcher["gallery"].get_image(PLAIN_ID)
    finally:
        await dispatcher.emit_shutdown(dispatcher=dispatcher)
    [sent] = calls
    assert type(sent).__name__ == "SendPhoto"
    assert sent.photo == image.media_urls[0]
    assert sent.caption == telegram_caption(image, "HTML")
    assert sent.parse_mode == "HTML"
    assert gallery.requests[PLAIN_ID] == 1


@pytest.mark.slow
def test_telegram_example_refuses_to_start_without_a_token(
    telegram_bot: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TELEGRAM_TOKEN", raising=False)
    with pytest.raises(SystemExit, match="TELEGRAM_TOKEN"):
        telegram_bot.asyncio.run(telegram_bot.main())


# -- /inspire ------------------------------------------------------------------------------------


async def best_liked(session: GallerySession, words: str, top: int = 3) -> list[str]:
    hits = await session.search(words)
    return [hit.id for hit in sorted(hits, key=lambda hit: hit.likes, reverse=True)[:top]]


async def test_discord_inspire_shows_one_of_the_best_liked_matches(
    discord_bot: ModuleType, gallery: FakeGallery, session: GallerySession
) -> None:
    reply = await discord_bot.inspire_reply(session, "studio")
    best = await best_liked(session, "studio")
    [image_id] = [i for i in best if gallery.requests[i] == 1]
    assert reply.title == discord_embed(await session.get_image(image_id))["title"]
    assert len(gallery.searches) == 1


async def test_discord_inspire_says_when_nothing_matches(
    discord_bot: ModuleType, session: GallerySession
) -> None:
    assert await discord_bot.inspire_reply(session, "zebra") == (
        "Nothing in the gallery matches 'zebra'."
    )


async def test_discord_inspire_without_words_shows_one_of_the_best_liked_newest_posts(
    discord_bot: ModuleType, gallery: FakeGallery, session: GallerySession
) -> None:
    reply = await discord_bot.inspire_reply(session, "  ")
    assert isinstance(reply, discord_bot.discord.Embed)
    assert gallery.searches == [("", 20, 0)]


@pytest.mark.parametrize("bot", ["discord", pytest.param("telegram", marks=pytest.mark.slow)])
async def test_inspire_tells_the_daily_quota_from_the_per_address_limit(
    bot: str, request: pytest.FixtureRequest, gallery: FakeGallery
) -> None:
    module: ModuleType = request.getfixturevalue(f"{bot}_bot")
    gallery.script_search(Answer.rate_limited(), Answer.daily_limit_reached())
    async with GallerySession(gallery.url, retry=RetryPolicy(max_retries=0)) as session:
        busy = await module.inspire_reply(session, "studio")
        spent = await module.inspire_reply(session, "studio")
    texts = [reply if isinstance(reply, str) else reply.text for reply in (busy, spent)]
    assert texts == [
        "Too many searches right now; please try again in a minute.",
        "I have used up today's searches; ask again after 00:00 UTC.",
    ]


async def test_discord_inspire_says_when_the_gallery_is_unreachable(
    discord_bot: ModuleType, unreachable: GallerySession
) -> None:
    reply = await discord_bot.inspire_reply(unreachable, "studio")
    assert reply.startswith("The gallery is not answering")


async def test_discord_inspire_command_defers_then_sends_the_embed(
    discord_bot: ModuleType, session: GallerySession
) -> None:
    interaction = SimpleNamespace(
        client=SimpleNamespace(gallery=session),
        response=SimpleNamespace(defer=AsyncMock()),
        followup=SimpleNamespace(send=AsyncMock()),
    )
    await discord_bot.inspire_command.callback(interaction, words="studio")
    interaction.response.defer.assert_awaited_once()
    assert isinstance(
        interaction.followup.send.await_args.kwargs["embed"], discord_bot.discord.Embed
    )


@pytest.mark.slow
async def test_telegram_inspire_is_the_photo_of_one_of_the_best_liked_matches(
    telegram_bot: ModuleType, gallery: FakeGallery, session: GallerySession
) -> None:
    reply = await telegram_bot.inspire_reply(session, "studio")
    best = await best_liked(session, "studio")
    [image_id] = [i for i in best if gallery.requests[i] == 1]
    image = await session.get_image(image_id)
    assert reply == telegram_bot.Reply(image.media_urls[0], telegram_caption(image, "HTML"))


@pytest.mark.slow
async def test_telegram_inspire_without_words_is_a_photo_of_the_newest_posts(
    telegram_bot: ModuleType, gallery: FakeGallery, session: GallerySession
) -> None:
    assert (await telegram_bot.inspire_reply(session, None)).photo is not None
    assert (await telegram_bot.inspire_reply(session, "  ")).photo is not None
    assert gallery.searches == [("", 20, 0)]  # the second answered from the kept page


@pytest.mark.slow
async def test_telegram_inspire_escapes_the_words_when_nothing_matches(
    telegram_bot: ModuleType, session: GallerySession
) -> None:
    reply = await telegram_bot.inspire_reply(session, "<b>zebra</b>")
    assert reply == telegram_bot.Reply(
        None, "Nothing in the gallery matches <i>&lt;b&gt;zebra&lt;/b&gt;</i>."
    )


@pytest.mark.slow
async def test_telegram_inspire_refuses_a_search_over_200_characters_without_a_request(
    telegram_bot: ModuleType, gallery: FakeGallery, session: GallerySession
) -> None:
    reply = await telegram_bot.inspire_reply(session, "x" * 201)
    assert reply.text.startswith("That search is too long")
    assert gallery.total_requests == 0


@pytest.mark.slow
async def test_telegram_dispatcher_routes_inspire(
    telegram_bot: ModuleType, gallery: FakeGallery
) -> None:
    from aiogram.types import Update

    bot, calls = recording_bot()
    text = "/inspire studio"
    update = Update.model_validate(
        {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": 1, "type": "private"},
                "from": {"id": 7, "is_bot": False, "first_name": "Ann"},
                "text": text,
                "entities": [{"type": "bot_command", "offset": 0, "length": len("/inspire")}],
            },
        },
        context={"bot": bot},
    )
    dispatcher = telegram_bot.build_dispatcher(gallery.url)
    await dispatcher.emit_startup(dispatcher=dispatcher)
    try:
        await dispatcher.feed_update(bot, update)
    finally:
        await dispatcher.emit_shutdown(dispatcher=dispatcher)
    [sent] = calls
    assert type(sent).__name__ == "SendPhoto"
    assert gallery.searches == [("studio", 20, 0)]
