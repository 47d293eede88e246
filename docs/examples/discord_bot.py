"""A Discord bot that answers `/image <id>` and `/inspire [words]` with gallery embeds.

It needs the `bots` extra (`pip install '.[bots]'` in a clone of meigen-async). Run it with:

    DISCORD_TOKEN=... python discord_bot.py

`DISCORD_GUILD_ID` makes the slash command appear in one server at once (a global command
can take a while to show up); `MEIGEN_BASE_URL` points the bot at another gallery, such as
`meigen-async serve` on your machine.

The bot holds one `GallerySession`, opened in `setup_hook` and closed in `close`:
every command shares its cache, its request coalescing and its concurrency limit. The reply
is built by `image_reply`, which needs no Discord connection, so it can be tested
against a `FakeGallery`.
"""

from __future__ import annotations

import os

import discord
from discord import app_commands

from meigen_async import (
    DailyLimitReached,
    GallerySession,
    ImageNotFound,
    InvalidImageId,
    InvalidQuery,
    MeigenError,
    RateLimited,
)
from meigen_async.bots import discord_embed, pick_inspiration
from meigen_async.session import DEFAULT_BASE_URL


async def image_reply(gallery: GallerySession, image_id: str) -> discord.Embed | str:
    """What the bot answers to `/image <id>`: the image's embed, or a message saying why not."""
    image_id = image_id.strip()
    try:
        image = await gallery.get_image(image_id)
    except InvalidImageId:
        return "That is not a gallery id: ids are letters, digits, '_' and '-'."
    except ImageNotFound:
        return f"The gallery has no image {image_id}."
    except MeigenError:
        return "The gallery is not answering right now; please try again in a minute."
    return discord.Embed.from_dict(discord_embed(image))


async def inspire_reply(gallery: GallerySession, words: str = "") -> discord.Embed | str:
    """What the bot answers to `/inspire [words]`: one of the best-liked matches, or why not.

    Without words, one of the best-liked of the newest posts. The two limits on searches are
    told apart: the bot's daily quota (with an API key) is spent until a time it can say,
    the per-address limit is over in about a minute.
    """
    try:
        hits = await gallery.search(words)
    except InvalidQuery:
        return "That search is too long: at most 200 characters."
    except DailyLimitReached as error:
        return f"I have used up today's searches; ask again after {error.resets_at:%H:%M} UTC."
    except RateLimited:
        return "Too many searches right now; please try again in a minute."
    except MeigenError:
        return "The gallery is not answering right now; please try again in a minute."
    hit = pick_inspiration(hits)
    if hit is None:
        return (
            f"Nothing in the gallery matches {words.strip()!r}."
            if words.strip()
            else ("The gallery has nothing to show right now.")
        )
    return await image_reply(gallery, hit.id)


class GalleryBot(discord.Client):
    """A client with a slash-command tree and one gallery session for all its commands."""

    def __init__(self, *, base_url: str = DEFAULT_BASE_URL, guild_id: int | None = None):
        super().__init__(intents=discord.Intents.default())
        self.tree = app_commands.CommandTree(self)
        self.base_url = base_url
        self.guild = discord.Object(guild_id) if guild_id is not None else None
        self._gallery: GallerySession | None = None

    @property
    def gallery(self) -> GallerySession:
        """The session shared by every command; open between `setup_hook` and `close`."""
        if self._gallery is None:
            raise RuntimeError("the gallery session opens in setup_hook")
        return self._gallery

    async def setup_hook(self) -> None:
        """Open the gallery session and register the commands before connecting."""
        # The API key, if any, comes from $MEIGEN_API_KEY: searches count against its daily
        # quota rather than the per-address limit this bot would share with its neighbours.
        self._gallery = GallerySession(self.base_url)
        self.tree.add_command(image_command, guild=self.guild)
        self.tree.add_command(inspire_command, guild=self.guild)
        await self.tree.sync(guild=self.guild)

    async def close(self) -> None:
        """Disconnect, then close the gallery session."""
        try:
            await super().close()
        finally:
            if self._gallery is not None:
                await self._gallery.close()


@app_commands.command(name="image", description="Show a MeiGen gallery image by its id.")
@app_commands.describe(image_id="The gallery image id, e.g. 2009629483448627597")
async def image_command(interaction: discord.Interaction[GalleryBot], image_id: str) -> None:
    """`/image <id>`: reply with the image's embed."""
    # Discord wants an answer within 3 seconds: acknowledge now, send the result when it comes.
    await interaction.response.defer(thinking=True)
    reply = await image_reply(interaction.client.gallery, image_id)
    if isinstance(reply, discord.Embed):
        await interaction.followup.send(embed=reply)
    else:
        await interaction.followup.send(reply)


@app_commands.command(name="inspire", description="Show a well-liked gallery image about a theme.")
@app_commands.describe(words="What to look for, e.g. cherry blossom; none for the newest posts")
async def inspire_command(interaction: discord.Interaction[GalleryBot], words: str = "") -> None:
    """`/inspire [words]`: reply with the embed of one of the best-liked matches."""
    await interaction.response.defer(thinking=True)
    reply = await inspire_reply(interaction.client.gallery, words)
    if isinstance(reply, discord.Embed):
        await interaction.followup.send(embed=reply)
    else:
        await interaction.followup.send(reply)


def main() -> None:
    """Run the bot with the token from `DISCORD_TOKEN`."""
    token = os.environ.get("DISCORD_TOKEN")
    if not token:
        raise SystemExit("Set DISCORD_TOKEN to your bot's token.")
    guild = os.environ.get("DISCORD_GUILD_ID")
    bot = GalleryBot(
        base_url=os.environ.get("MEIGEN_BASE_URL") or DEFAULT_BASE_URL,
        guild_id=int(guild) if guild else None,
    )
    bot.run(token)


if __name__ == "__main__":
    main()
