"""A Telegram bot (aiogram 3) answering `/image <id>` and `/inspire [words]` with images.

It needs the `bots` extra (`pip install '.[bots]'` in a clone of meigen-async). Run it with:

    TELEGRAM_TOKEN=... python telegram_bot.py

`MEIGEN_BASE_URL` points the bot at another gallery, such as `meigen-async serve`.

The dispatcher holds one `GallerySession`, opened by its startup hook and closed by
its shutdown hook; aiogram hands it to every handler as the `gallery` argument. The reply
is built by `image_reply`, which needs no Telegram connection, so it can be tested
against a `FakeGallery`.
"""

from __future__ import annotations

import asyncio
import html
import os
from typing import NamedTuple

from aiogram import Bot, Dispatcher, Router
from aiogram.enums import ParseMode
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from meigen_async import (
    DailyLimitReached,
    GalleryImage,
    GallerySession,
    ImageNotFound,
    InvalidImageId,
    InvalidQuery,
    MeigenError,
    RateLimited,
)
from meigen_async.bots import pick_inspiration, telegram_caption
from meigen_async.session import DEFAULT_BASE_URL


class Reply(NamedTuple):
    """What to send: a photo with an HTML caption, or (photo None) an HTML text message."""

    photo: str | None
    text: str


USAGE = Reply(
    None, "Send <code>/image &lt;id&gt;</code>, e.g. <code>/image 2009629483448627597</code>."
)


async def image_reply(gallery: GallerySession, image_id: str | None) -> Reply:
    """What the bot answers to `/image <id>`: the photo and its caption, or why not."""
    if not image_id or not image_id.strip():
        return USAGE
    image_id = image_id.strip()
    try:
        image = await gallery.get_image(image_id)
    except InvalidImageId:
        return Reply(None, "That is not a gallery id: ids are letters, digits, _ and -.")
    except ImageNotFound:
        return Reply(None, f"The gallery has no image <code>{image_id}</code>.")
    except MeigenError:
        return Reply(None, "The gallery is not answering right now; please try again in a minute.")
    return photo_reply(image)


async def inspire_reply(gallery: GallerySession, words: str | None) -> Reply:
    """What the bot answers to `/inspire [words]`: one of the best-liked matches, or why not.

    Without words, one of the best-liked of the newest posts. The two limits on searches are
    told apart: the bot's daily quota (with an API key) is spent until a time it can say,
    the per-address limit is over in about a minute.
    """
    words = (words or "").strip()
    try:
        hits = await gallery.search(words)
    except InvalidQuery:
        return Reply(None, "That search is too long: at most 200 characters.")
    except DailyLimitReached as error:
        when = f"{error.resets_at:%H:%M} UTC"
        return Reply(None, f"I have used up today's searches; ask again after {when}.")
    except RateLimited:
        return Reply(None, "Too many searches right now; please try again in a minute.")
    except MeigenError:
        return Reply(None, "The gallery is not answering right now; please try again in a minute.")
    hit = pick_inspiration(hits)
    if hit is None:
        if not words:
            return Reply(None, "The gallery has nothing to show right now.")
        return Reply(None, f"Nothing in the gallery matches <i>{html.escape(words)}</i>.")
    return await image_reply(gallery, hit.id)


def photo_reply(image: GalleryImage) -> Reply:
    """The photo of `image` with its HTML caption."""
    photo = image.media_urls[0] if image.media_urls else image.thumbnail_url
    return Reply(photo, telegram_caption(image, parse_mode="HTML"))


async def image_command(message: Message, command: CommandObject, gallery: GallerySession) -> None:
    """`/image <id>`: reply with the photo and its caption."""
    reply = await image_reply(gallery, command.args)
    if reply.photo is not None:
        await message.answer_photo(reply.photo, caption=reply.text, parse_mode=ParseMode.HTML)
    else:
        await message.answer(reply.text, parse_mode=ParseMode.HTML)


async def inspire_command(
    message: Message, command: CommandObject, gallery: GallerySession
) -> None:
    """`/inspire [words]`: reply with one of the best-liked matches."""
    reply = await inspire_reply(gallery, command.args)
    if reply.photo is not None:
        await message.answer_photo(reply.photo, caption=reply.text, parse_mode=ParseMode.HTML)
    else:
        await message.answer(reply.text, parse_mode=ParseMode.HTML)


async def open_gallery(dispatcher: Dispatcher) -> None:
    """Startup hook: open the session every handler shares (its API key from $MEIGEN_API_KEY)."""
    dispatcher["gallery"] = GallerySession(dispatcher["base_url"])


async def close_gallery(dispatcher: Dispatcher) -> None:
    """Shutdown hook: close the shared session."""
    gallery: GallerySession | None = dispatcher.workflow_data.pop("gallery", None)
    if gallery is not None:
        await gallery.close()


def build_dispatcher(base_url: str = DEFAULT_BASE_URL) -> Dispatcher:
    """A dispatcher with the `/image` handler and the session's lifecycle hooks."""
    router = Router(name="meigen-gallery")
    router.message.register(image_command, Command("image"))
    router.message.register(inspire_command, Command("inspire"))
    dispatcher = Dispatcher(base_url=base_url)
    dispatcher.include_router(router)
    dispatcher.startup.register(open_gallery)
    dispatcher.shutdown.register(close_gallery)
    return dispatcher


async def main() -> None:
    """Poll Telegram with the token from `TELEGRAM_TOKEN` until interrupted."""
    token = os.environ.get("TELEGRAM_TOKEN")
    if not token:
        raise SystemExit("Set TELEGRAM_TOKEN to your bot's token.")
    dispatcher = build_dispatcher(os.environ.get("MEIGEN_BASE_URL") or DEFAULT_BASE_URL)
    await dispatcher.start_polling(Bot(token))


if __name__ == "__main__":
    asyncio.run(main())
