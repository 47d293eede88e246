"""Turn a [`GalleryImage`][meigen_async.GalleryImage] into a Discord embed or a Telegram caption.

No bot library is imported: [`discord_embed`][meigen_async.bots.discord_embed] returns a plain dict
for
`discord.Embed.from_dict`, [`telegram_caption`][meigen_async.bots.telegram_caption] a string for
`parse_mode="HTML"` or
`"MarkdownV2"`. Both stay within the platform's limits whatever any field holds (the prompt,
the names, the counts, the id, the URLs), cutting long text with an ellipsis at a character
boundary (never inside a combining sequence, an emoji sequence, an HTML entity or a Markdown
escape), closing any code block they opened, and leaving out a URL Discord would refuse.

    async with GallerySession() as gallery:
        image = await gallery.get_image(image_id)
    await channel.send(embed=discord.Embed.from_dict(discord_embed(image)))
    await message.answer_photo(image.media_urls[0], caption=telegram_caption(image),
                               parse_mode="HTML")
"""

from __future__ import annotations

import html
import json
import random
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from ._protocol import MAX_ID_LENGTH
from .models import GalleryImage, SearchHit
from .prompt import Prompt, PromptKind

__all__ = [
    "ELLIPSIS",
    "MODEL_NAMES",
    "discord_embed",
    "model_name",
    "pick_inspiration",
    "telegram_caption",
    "truncate",
]

ELLIPSIS = "…"
"""What a cut text ends with: one character, U+2026."""

# Discord counts code points (its API is Python; see discord-api-docs issue #1315).
_TITLE = 256
_DESCRIPTION = 4096
_FIELD_NAME = 256
_FIELD_VALUE = 1024
_FOOTER = 2048
_AUTHOR_NAME = 256
_EMBED_TOTAL = 6000
# Discord documents no limit on a URL; it refuses one that is not http(s). Longer than this is
# no real image's URL either, and left out.
_URL = 2048
_URL_SCHEMES = ("http://", "https://")
# A space or a control character (C0, DEL, C1) has no place in a URL that is sent on.
_NOT_IN_URL = re.compile(r"[\x00-\x20\x7f-\x9f]")

# Telegram counts UTF-16 code units of the text left after entity parsing.
_CAPTION = 1024
# A display name or a username longer than this is cut, so that the prompt keeps most of the
# caption; and the whole line under the prompt is never longer than _CAPTION_FOOTER.
_CAPTION_NAME = 64
_CAPTION_FOOTER = 256

# A count past this is shown as it, with a "+": no post has a quadrillion likes, and a
# 4,000-digit one would fill any caption (past 4,300 digits `str` even refuses it).
_LARGEST_NUMBER = 10**15 - 1

_FENCE = "```"
# A zero-width space after each backtick followed by another: the text looks the same, but no
# run of backticks is left to close the code block early.
_BACKTICK_RUN = re.compile(r"`(?=`)")
_MARKDOWN_V2_SPECIAL = frozenset("_*[]()~`>#+-=|{}.!\\")

MODEL_NAMES: Mapping[str, str] = {
    "nanobanana": "Nano Banana",
    "gptimage": "GPT Image",
    "midjourney": "Midjourney",
    "flux2-klein": "FLUX.2 [klein]",
    "seedream-4.5": "Seedream 4.5",
}
"""Display names of the `model` values known here: the family names and a few exact ids.

`model` is an open vocabulary that grows (docs/search.md): a value not listed is shown as it
is; `model_name` reads this.
"""


# -- Cutting text --------------------------------------------------------------------------------


def _code_points(char: str) -> int:
    return 1


def _utf16_units(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _extends_previous(char: str) -> bool:
    """Whether `char` belongs to the cluster of the character before it."""
    code = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Me", "Mc")
        or code == 0x200D  # zero-width joiner
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0x1F3FB <= code <= 0x1F3FF  # skin tone modifiers
        or 0xE0020 <= code <= 0xE007F  # emoji tag sequences
        or 0xE0100 <= code <= 0xE01EF  # variation selectors supplement
    )


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _cluster_start(text: str, cut: int) -> int:
    """Move `cut` left until it does not split a character cluster of `text`."""
    while 0 < cut < len(text) and (
        _extends_previous(text[cut])
        or text[cut - 1] == "\u200d"
        or (text[cut - 1] == "\r" and text[cut] == "\n")
    ):
        cut -= 1
    if 0 < cut < len(text) and _is_regional_indicator(text[cut]):
        # Flags are pairs of regional indicators: cut between pairs, never inside one.
        run = cut
        while run > 0 and _is_regional_indicator(text[run - 1]):
            run -= 1
        cut -= (cut - run) % 2
    return cut


def truncate(text: str, limit: int, *, utf16: bool = False) -> str:
    """`text` if it fits in `limit` characters, else its start and `ELLIPSIS`.

    The cut never splits a character cluster that is cheap to recognise: a base and its
    combining marks, an emoji ZWJ sequence or modifier, a flag, CR LF. Trailing whitespace
    before the ellipsis is dropped. With `utf16` the limit counts UTF-16 code units (what
    Telegram counts) instead of code points (what Discord and Python's `len` count).
    """
    size = _utf16_len if utf16 else len
    if size(text) <= limit:
        return text
    if limit < 1:
        return ""
    units = _utf16_units if utf16 else _code_points
    budget = limit - 1  # the ellipsis is one unit either way
    cut = 0
    for char in text:
        budget -= units(char)
        if budget < 0:
            break
        cut += 1
    return text[: _cluster_start(text, cut)].rstrip() + ELLIPSIS


# -- What both platforms show --------------------------------------------------------------------


def _number(value: int, spec: str = ",") -> str:
    """`value` formatted by `spec`, or the bound (and "+") for one no real count reaches."""
    if -_LARGEST_NUMBER <= value <= _LARGEST_NUMBER:
        return format(value, spec)
    return f"{'-' if value < 0 else ''}{_LARGEST_NUMBER:{spec}}+"


def _shown_id(image: GalleryImage) -> str:
    """The id, cut to the longest a gallery id can be."""
    return truncate(image.id, MAX_ID_LENGTH)


def _url(value: str | None) -> str | None:
    """`value` when Discord would take it as a URL: http(s), no spaces or controls, not huge."""
    if (
        not value
        or len(value) > _URL
        or not value[:8].lower().startswith(_URL_SCHEMES)
        or _NOT_IN_URL.search(value)
    ):
        return None
    return value


def _attribution(image: GalleryImage, *, name_limit: int | None = None) -> str:
    name = (image.author_display_name or "").strip()
    username = (image.author_username or "").strip()
    if name_limit is not None:
        name, username = truncate(name, name_limit), truncate(username, name_limit)
    if name and username:
        return f"{name} (@{username})"
    return name or (f"@{username}" if username else "")


def model_name(model: str | None) -> str | None:
    """How to show a `model` value: its display name when known, else the value as it is.

    `"midjourney"` is "Midjourney", `"seedream-4.5"` "Seedream 4.5", and an id not known here
    (`"flux3-pro"`) is shown as given, stripped. None for no model, a blank one, and the
    family `"other"`, which says only that the model is none of the families.
    """
    raw = (model or "").strip()
    if raw.lower() == "other":
        return None
    return MODEL_NAMES.get(raw.lower(), raw) or None


def _media_url(image: GalleryImage) -> str | None:
    return _url(image.media_urls[0] if image.media_urls else image.thumbnail_url)


def _json_body(prompt: Prompt, raw: str) -> str:
    """A JSON prompt pretty-printed when it parsed, else as written."""
    if prompt.data is not None:
        return json.dumps(prompt.data, indent=2, ensure_ascii=False)
    return raw.strip()


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


# -- Discord -------------------------------------------------------------------------------------


def _discord_title(image: GalleryImage) -> str:
    model, username = model_name(image.model), (image.author_username or "").strip()
    if model and username:
        return f"{model} by @{username}"
    if model:
        return model
    if image.prompt.kind is PromptKind.PLAIN and _first_line(image.text):
        return _first_line(image.text)
    return f"Gallery image {_shown_id(image)}"


def _close_fences(text: str, limit: int) -> str:
    """`text` cut to `limit` with any code fence it leaves open closed."""
    cut = truncate(text, limit)
    if cut.count(_FENCE) % 2 == 0:
        return cut
    cut = truncate(text, limit - len(_FENCE) - 1)
    return cut if cut.count(_FENCE) % 2 == 0 else f"{cut}\n{_FENCE}"


def _discord_description(image: GalleryImage, limit: int) -> str:
    prompt = image.prompt
    if prompt.kind is not PromptKind.JSON:
        return _close_fences(image.text.strip(), limit)
    opening, closing = f"{_FENCE}json\n", f"\n{_FENCE}"
    if limit <= len(opening) + len(closing):
        return ""  # no room for an empty block, let alone a prompt
    body = _BACKTICK_RUN.sub("`\u200b", _json_body(prompt, image.text))
    return opening + truncate(body, limit - len(opening) - len(closing)) + closing


def _field(name: str, value: str) -> dict[str, Any]:
    return {
        "name": truncate(name, _FIELD_NAME),
        "value": truncate(value, _FIELD_VALUE),
        "inline": True,
    }


def discord_embed(image: GalleryImage) -> dict[str, Any]:
    """An embed for `discord.Embed.from_dict`: the prompt, the picture and its author.

    The title names the model and the author (or starts the prompt), the description is the
    prompt (a fenced `json` code block for a JSON prompt, pretty-printed when it parsed), the image
    is the first media URL, the author block credits the original poster, the fields hold
    likes, views, size and style reference, the footer the gallery id. Every part is cut to
    Discord's limit (title 256, description 4096, field 256/1024, footer 2048, author 256,
    6000 in all), counted in code points as Discord does; a count past 999 trillion is shown
    as that bound and "+", the id is cut to 128 characters, and a URL that is not http(s),
    holds a space or a control character, or is longer than 2,048 characters is left out.
    """
    embed: dict[str, Any] = {"type": "rich", "title": truncate(_discord_title(image), _TITLE)}
    media = _media_url(image)
    if media:
        embed["url"] = media
        embed["image"] = {"url": media}
    author = _attribution(image)
    if author:
        embed["author"] = {"name": truncate(author, _AUTHOR_NAME)}
        avatar = _url(image.author_avatar_url)
        if avatar:
            embed["author"]["icon_url"] = avatar
    fields = [_field("Likes", _number(image.likes)), _field("Views", _number(image.views))]
    width, height = image.image_width, image.image_height
    if width is not None and height is not None:
        fields.append(_field("Size", f"{_number(width, 'd')}x{_number(height, 'd')}"))
    if image.sref and image.sref.strip():
        fields.append(_field("Style reference", image.sref.strip()))
    if image.profile and image.profile.strip():
        fields.append(_field("Profile", image.profile.strip()))
    embed["fields"] = fields
    embed["footer"] = {"text": truncate(f"MeiGen gallery · {_shown_id(image)}", _FOOTER)}
    if image.created_at is not None:
        embed["timestamp"] = image.created_at.isoformat()
    used = _embed_size(embed)
    description = _discord_description(image, min(_DESCRIPTION, _EMBED_TOTAL - used))
    if description:
        embed["description"] = description
    return embed


def _embed_size(embed: dict[str, Any]) -> int:
    """The characters Discord counts towards an embed's 6000."""
    texts = [
        embed.get("title", ""),
        embed.get("description", ""),
        embed.get("author", {}).get("name", ""),
        embed.get("footer", {}).get("text", ""),
    ]
    for field in embed.get("fields", []):
        texts += [field["name"], field["value"]]
    return sum(len(text) for text in texts)


# -- Telegram ------------------------------------------------------------------------------------


def _escape_markdown_v2(text: str) -> str:
    return "".join(f"\\{char}" if char in _MARKDOWN_V2_SPECIAL else char for char in text)


def _escape_markdown_v2_code(text: str) -> str:
    return text.replace("\\", "\\\\").replace("`", "\\`")


def _html(text: str) -> str:
    return html.escape(text, quote=False)


def telegram_caption(
    image: GalleryImage, parse_mode: Literal["HTML", "MarkdownV2"] = "HTML"
) -> str:
    """A photo caption for Telegram's `parse_mode`: the prompt, the author and the likes.

    A JSON prompt goes in a `json` code block (pretty-printed when it parsed), a plain one in
    italics (HTML) or as text (MarkdownV2). Everything is escaped for `parse_mode`, and the
    caption shows at most 1,024 characters once Telegram has parsed it (counted in UTF-16
    code units, as Telegram does), whatever any field holds: the display name and the username
    are cut to 64 characters each, a count past 999 trillion is shown as that bound and "+",
    the prompt is cut to fit, never inside an entity or an escape, and any block opened is
    closed.

    Raises:
        ValueError: `parse_mode` is neither `"HTML"` nor `"MarkdownV2"`.

    """
    if parse_mode not in ("HTML", "MarkdownV2"):
        raise ValueError(f"parse_mode must be 'HTML' or 'MarkdownV2', got {parse_mode!r}")
    markdown = parse_mode == "MarkdownV2"
    escape: Callable[[str], str] = _escape_markdown_v2 if markdown else _html
    attribution = _attribution(image, name_limit=_CAPTION_NAME)
    footer = " · ".join(
        part
        for part in (f"— {attribution}" if attribution else "", f"♥ {_number(image.likes)}")
        if part
    )
    # Cut before escaping, so never inside an escape; its parts are bounded already.
    footer = truncate(footer, _CAPTION_FOOTER, utf16=True)
    separator = "\n\n"
    budget = _CAPTION - _utf16_len(footer) - _utf16_len(separator)
    prompt = image.prompt
    if prompt.kind is PromptKind.JSON:
        # The newline before a MarkdownV2 closing fence may count: leave room for it.
        text = truncate(_json_body(prompt, image.text), budget - markdown, utf16=True)
        if markdown:
            body = f"{_FENCE}json\n{_escape_markdown_v2_code(text)}\n{_FENCE}"
        else:
            body = f'<pre><code class="language-json">{_html(text)}</code></pre>'
    else:
        text = truncate(image.text.strip(), budget, utf16=True)
        body = escape(text) if markdown or not text else f"<i>{_html(text)}</i>"
    return f"{body}{separator}{escape(footer)}" if body else escape(footer)


# -- Choosing from a search ----------------------------------------------------------------------


def pick_inspiration(
    hits: Sequence[SearchHit], *, top: int = 3, rng: random.Random | None = None
) -> SearchHit | None:
    """One of the `top` best-liked `hits`, at random (`rng`, or the module's); None if none.

    What an `/inspire <words>` command shows: a well-liked image, not always the same one.

        hit = pick_inspiration(await gallery.search("cherry blossom"))
        image = await gallery.get_image(hit.id)
    """
    if not hits:
        return None
    best = sorted(hits, key=lambda hit: hit.likes, reverse=True)[: max(top, 1)]
    return (rng or random).choice(best)
