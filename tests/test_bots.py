"""Discord embeds and Telegram captions: content, escaping and the platforms' limits."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any, Literal

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meigen_async.bots import ELLIPSIS, discord_embed, model_name, telegram_caption, truncate
from meigen_async.models import GalleryImage

# -- Building images -----------------------------------------------------------------------------

BASE = GalleryImage(
    id="2009629483448627597",
    text="A serene Japanese garden with cherry blossoms",
    media_urls=(
        "https://images.meigen.ai/tweets/2009629483448627597/0.jpg",
        "https://images.meigen.ai/tweets/2009629483448627597/1.jpg",
    ),
    thumbnail_url="https://images.meigen.ai/tweets/2009629483448627597/thumb.jpg",
    image_width=1650,
    image_height=2048,
    model="midjourney",
    created_at=datetime(2026, 1, 9, 14, 13, tzinfo=UTC),
    likes=1113,
    views=9266,
    retweets=8,
    author_username="creator",
    author_display_name="Creator Name",
    author_avatar_url="https://pbs.twimg.com/profile_images/1/normal.jpg",
)

JSON_PROMPT = {"subject": "a red fox", "style": "watercolor", "lighting": "dawn"}


def image(**changes: Any) -> GalleryImage:
    return attrs.evolve(BASE, **changes)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# Text that stresses the cutting and the escaping: every MarkdownV2 special, HTML's specials,
# entity-like text, combining marks, ZWJ emoji, flags, skin tones, astral characters, and
# control characters (C0, escape sequences, DEL, C1, line breaks, bidi overrides).
CONTROLS = ["\x00", "\x1b[2J", "\x1b]0;title\x07", "\r", "\r\n", "\t", "\x7f", "\x85", "\u202e"]
TRICKY = [
    *"_*[]()~`>#+-=|{}.!\\<>&\"'",
    "&amp;",
    "```",
    "\u0301",
    "\u200d",
    "👍🏽",
    "🇫🇷",
    "👩‍👩‍👧",
    *CONTROLS,
]
tricky_text = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(TRICKY)), max_size=60).map(
    "".join
)
# Long text made cheaply: a random piece repeated, up to tens of thousands of characters.
huge_text = st.one_of(
    st.builds(lambda piece, times: piece * times, tricky_text, st.integers(1, 60)),
    st.builds(
        lambda piece, times: piece * times,
        st.one_of(st.sampled_from(TRICKY), st.text(min_size=1, max_size=8)),
        st.integers(500, 2500),
    ),
)
any_text = st.one_of(tricky_text, huge_text)
json_prompt_text = st.builds(
    lambda data, indent: json.dumps(data, ensure_ascii=False, indent=indent),
    st.dictionaries(st.text(max_size=20), any_text, min_size=1, max_size=4),
    st.sampled_from([None, 2]),
)
prompt_text = st.one_of(any_text, json_prompt_text)
# Every other field: shorter pieces, repeated up to thousands of times (drawing the values is
# where these tests spend their time).
field_piece = st.lists(st.one_of(st.text(max_size=6), st.sampled_from(TRICKY)), max_size=8).map(
    "".join
)
field_text = st.one_of(
    field_piece, st.builds(lambda piece, times: piece * times, field_piece, st.integers(1, 2500))
)
# Counts of any size: past 4,300 digits, `str` refuses to print an int at all.
hostile_int = st.one_of(
    st.integers(),
    st.integers(0, 6000).map(lambda digits: 10**digits - 1),
    st.integers(0, 6000).map(lambda digits: -(10**digits)),
)
hostile_url = st.one_of(
    field_text,
    st.builds("https://images.meigen.ai/{}".format, field_text),
    st.sampled_from(["javascript:alert(1)", "https://a.b/c d", "https://a.b/\x1b[2J", "ftp://a.b"]),
)
images = st.builds(
    image,
    id=st.one_of(st.just(BASE.id), field_text),
    text=prompt_text,
    media_urls=st.lists(hostile_url, max_size=2).map(tuple),
    thumbnail_url=st.one_of(st.none(), hostile_url),
    image_width=st.one_of(st.none(), hostile_int),
    image_height=st.one_of(st.none(), hostile_int),
    author_display_name=st.one_of(st.none(), field_text),
    author_username=st.one_of(st.none(), field_text),
    author_avatar_url=st.one_of(st.none(), hostile_url),
    model=st.one_of(st.none(), st.sampled_from(["midjourney", "nanobanana"]), field_text),
    sref=st.one_of(st.none(), field_text),
    created_at=st.sampled_from(
        [None, datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)]
    ),
    likes=hostile_int,
    views=hostile_int,
    retweets=hostile_int,
)
property_settings = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# -- truncate ------------------------------------------------------------------------------------


def test_truncate_returns_text_that_fits_unchanged() -> None:
    assert truncate("cherry blossoms", 15) == "cherry blossoms"


def test_truncate_ends_cut_text_with_an_ellipsis_within_the_limit() -> None:
    cut = truncate("cherry blossoms at dawn", 10)
    assert cut == "cherry bl" + ELLIPSIS
    assert len(cut) == 10


def test_truncate_never_separates_a_letter_from_its_combining_accent() -> None:
    # "cafés" with the accent as a combining mark: a cut after the "e" would lose the accent.
    assert truncate("cafe\u0301s", 5) == "caf" + ELLIPSIS


def test_truncate_never_splits_an_emoji_zwj_sequence() -> None:
    family = "👩\u200d👩\u200d👧"
    for limit in range(1, 12):
        cut = truncate(family * 3, limit)
        assert cut.removesuffix(ELLIPSIS).replace(family, "") == ""


def test_truncate_never_splits_a_flag() -> None:
    for limit in range(2, 9):
        cut = truncate("🇫🇷🇯🇵🇩🇪🇮🇹", limit)
        assert len(cut.removesuffix(ELLIPSIS)) % 2 == 0


def test_truncate_keeps_a_skin_tone_with_its_emoji() -> None:
    cut = truncate("👍🏽👍🏽👍🏽", 4)
    assert cut == "👍🏽" + ELLIPSIS


def test_truncate_counts_utf16_code_units_when_asked() -> None:
    text = "😀" * 10  # each is two UTF-16 code units
    cut = truncate(text, 7, utf16=True)
    assert cut == "😀" * 3 + ELLIPSIS
    assert utf16_len(cut) == 7


# -- Discord -------------------------------------------------------------------------------------


def embed_texts(embed: dict[str, Any]) -> list[str]:
    texts = [embed.get("title", ""), embed.get("description", "")]
    texts.append(embed.get("author", {}).get("name", ""))
    texts.append(embed.get("footer", {}).get("text", ""))
    for field in embed.get("fields", []):
        texts += [field["name"], field["value"]]
    return texts


def embed_urls(embed: dict[str, Any]) -> list[str]:
    urls = [embed.get("url"), embed.get("image", {}).get("url")]
    urls.append(embed.get("author", {}).get("icon_url"))
    return [url for url in urls if url is not None]


@pytest.mark.slow
@given(images)
@property_settings
def test_embed_stays_within_every_discord_limit(gallery_image: GalleryImage) -> None:
    embed = discord_embed(gallery_image)
    assert len(embed.get("title", "")) <= 256
    assert len(embed.get("description", "")) <= 4096
    assert len(embed.get("author", {}).get("name", "")) <= 256
    assert len(embed["footer"]["text"]) <= 2048
    assert len(embed["fields"]) <= 25
    for field in embed["fields"]:
        assert 0 < len(field["name"].strip()) <= len(field["name"]) <= 256
        assert 0 < len(field["value"].strip()) <= len(field["value"]) <= 1024
    assert sum(map(len, embed_texts(embed))) <= 6000
    for url in embed_urls(embed):
        assert len(url) <= 2048
        assert url.lower().startswith(("http://", "https://"))
        assert not re.search(r"[\x00-\x20\x7f-\x9f]", url)


@pytest.mark.slow
@given(images)
@property_settings
def test_embed_never_leaves_a_code_fence_open(gallery_image: GalleryImage) -> None:
    embed = discord_embed(gallery_image)
    assert embed.get("description", "").count("```") % 2 == 0


def test_embed_cuts_a_huge_prompt_to_4096_characters_with_an_ellipsis() -> None:
    embed = discord_embed(image(text="blossom " * 2000))
    assert len(embed["description"]) <= 4096
    assert embed["description"].endswith(ELLIPSIS)


def test_embed_puts_a_json_prompt_in_a_json_code_block_pretty_printed() -> None:
    embed = discord_embed(image(text=json.dumps(JSON_PROMPT)))
    description = embed["description"]
    assert description.startswith("```json\n")
    assert description.endswith("\n```")
    assert json.loads(description.removeprefix("```json\n").removesuffix("\n```")) == JSON_PROMPT
    assert '\n  "subject": "a red fox",\n' in description


def test_embed_closes_the_json_code_block_when_the_prompt_is_cut() -> None:
    big = {f"key{i}": "watercolor fox " * 20 for i in range(100)}
    description = discord_embed(image(text=json.dumps(big)))["description"]
    assert len(description) <= 4096
    assert description.endswith(ELLIPSIS + "\n```")


def test_embed_defuses_a_code_fence_inside_a_json_prompt() -> None:
    description = discord_embed(image(text=json.dumps({"note": "use ``` here"})))["description"]
    assert description.count("```") == 2


def test_embed_closes_a_code_fence_that_cutting_a_plain_prompt_left_open() -> None:
    text = "Prompt below\n```\n" + "a fox in the snow, " * 400
    description = discord_embed(image(text=text))["description"]
    assert len(description) <= 4096
    assert description.endswith("\n```")


def test_embed_shows_a_plain_prompt_as_its_description() -> None:
    assert discord_embed(BASE)["description"] == BASE.text


def test_embed_credits_the_author_by_name_and_username_with_the_avatar() -> None:
    assert discord_embed(BASE)["author"] == {
        "name": "Creator Name (@creator)",
        "icon_url": "https://pbs.twimg.com/profile_images/1/normal.jpg",
    }


def test_embed_credits_the_username_alone_when_there_is_no_display_name() -> None:
    embed = discord_embed(image(author_display_name=None, author_avatar_url=None))
    assert embed["author"] == {"name": "@creator"}


def test_embed_titles_the_model_and_the_author() -> None:
    assert discord_embed(BASE)["title"] == "Midjourney by @creator"


@pytest.mark.parametrize(
    ("model", "shown"),
    [
        ("nanobanana", "Nano Banana"),
        ("gptimage", "GPT Image"),
        ("seedream-4.5", "Seedream 4.5"),
        ("flux2-klein", "FLUX.2 [klein]"),
        (" flux3-pro ", "flux3-pro"),
    ],
)
def test_a_model_is_shown_by_its_display_name_when_known_else_as_it_is(
    model: str, shown: str
) -> None:
    assert model_name(model) == shown
    assert discord_embed(image(model=model))["title"] == f"{shown} by @creator"


@pytest.mark.parametrize("model", ["other", "  ", None])
def test_the_family_other_or_no_model_names_no_model(model: str | None) -> None:
    assert model_name(model) is None
    assert discord_embed(image(model=model, text="A fox"))["title"] == "A fox"


def test_embed_shows_a_midjourney_profile_code_in_a_field() -> None:
    fields = {
        field["name"]: field["value"] for field in discord_embed(image(profile="m7xyz"))["fields"]
    }
    assert fields["Profile"] == "m7xyz"
    assert "Profile" not in {field["name"] for field in discord_embed(BASE)["fields"]}


def test_embed_titles_the_start_of_the_prompt_when_there_is_no_model() -> None:
    embed = discord_embed(image(model=None, text="A fox\nin the snow"))
    assert embed["title"] == "A fox"


def test_embed_shows_the_first_media_url_as_its_image_and_link() -> None:
    embed = discord_embed(BASE)
    assert embed["image"] == {"url": BASE.media_urls[0]}
    assert embed["url"] == BASE.media_urls[0]


def test_embed_shows_likes_and_views_in_fields() -> None:
    fields = {field["name"]: field["value"] for field in discord_embed(BASE)["fields"]}
    assert fields["Likes"] == "1,113"
    assert fields["Views"] == "9,266"


def test_embed_timestamp_is_the_creation_time_in_iso_format() -> None:
    timestamp = discord_embed(BASE)["timestamp"]
    assert datetime.fromisoformat(timestamp) == BASE.created_at


# -- Telegram: reading what Telegram would show --------------------------------------------------


class CaptionHTML(HTMLParser):
    """Collects the visible text and checks that tags are known and balanced."""

    ALLOWED = frozenset({"b", "i", "u", "s", "a", "code", "pre", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in self.ALLOWED, tag
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open, tag
        assert self.open[-1] == tag, (self.open, tag)
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def visible_html(caption: str) -> str:
    # Only &amp; &lt; &gt; (and &quot;) are entities Telegram knows; a cut one would show.
    assert re.fullmatch(r"([^&]|&(amp|lt|gt|quot);)*", caption, re.DOTALL)
    parser = CaptionHTML()
    parser.feed(caption)
    parser.close()
    assert parser.open == []
    return "".join(parser.text)


MARKDOWN_V2_SPECIAL = set("_*[]()~`>#+-=|{}.!\\")


def visible_markdown_v2(caption: str) -> str:
    """The text Telegram shows, asserting every special character is escaped where it must be."""
    shown: list[str] = []
    i = 0
    in_pre = False
    while i < len(caption):
        if caption.startswith("```", i):
            if not in_pre:
                end = caption.index("\n", i)  # the language line
                assert caption[i + 3 : end] == "json"
                i = end + 1
            else:
                i += 3
            in_pre = not in_pre
            continue
        char = caption[i]
        if char == "\\":
            escaped = caption[i + 1]
            assert not in_pre or escaped in "`\\", escaped
            shown.append(escaped)
            i += 2
            continue
        if in_pre:
            assert char != "`", "an unescaped backtick inside a code block"
        else:
            assert char not in MARKDOWN_V2_SPECIAL, f"unescaped {char!r} at {i}"
        shown.append(char)
        i += 1
    assert not in_pre, "a code block left open"
    return "".join(shown)


# -- Telegram ------------------------------------------------------------------------------------


@pytest.mark.slow
@given(images)
@property_settings
def test_html_caption_is_well_formed_and_shows_at_most_1024_characters(
    gallery_image: GalleryImage,
) -> None:
    assert utf16_len(visible_html(telegram_caption(gallery_image, "HTML"))) <= 1024


@pytest.mark.slow
@given(images)
@property_settings
def test_markdown_v2_caption_is_escaped_and_shows_at_most_1024_characters(
    gallery_image: GalleryImage,
) -> None:
    assert utf16_len(visible_markdown_v2(telegram_caption(gallery_image, "MarkdownV2"))) <= 1024


def test_caption_is_html_by_default() -> None:
    assert telegram_caption(BASE) == telegram_caption(BASE, "HTML")


def test_html_caption_shows_a_plain_prompt_in_italics_escaped() -> None:
    caption = telegram_caption(image(text="Fish & chips <3"))
    assert caption.startswith("<i>Fish &amp; chips &lt;3</i>\n\n")


def test_html_caption_puts_a_json_prompt_in_a_json_pre_block() -> None:
    caption = telegram_caption(image(text=json.dumps({**JSON_PROMPT, "tag": "<b>"})))
    match = re.fullmatch(
        r'<pre><code class="language-json">(.*)</code></pre>\n\n.*', caption, re.DOTALL
    )
    assert match is not None
    assert json.loads(visible_html(match.group(1))) == {**JSON_PROMPT, "tag": "<b>"}


def test_markdown_v2_caption_puts_a_json_prompt_in_a_json_code_block() -> None:
    caption = telegram_caption(image(text=json.dumps(JSON_PROMPT)), "MarkdownV2")
    assert caption.startswith('```json\n{\n  "subject": "a red fox",')
    assert "\n```\n\n" in caption


def test_markdown_v2_caption_escapes_special_characters_of_a_plain_prompt() -> None:
    caption = telegram_caption(image(text="a_b *c* [d](e) 1.5!"), "MarkdownV2")
    assert caption.startswith(r"a\_b \*c\* \[d\]\(e\) 1\.5\!" + "\n\n")


def test_caption_credits_the_author_and_shows_the_likes() -> None:
    assert telegram_caption(BASE).endswith("\n\n— Creator Name (@creator) · ♥ 1,113")


def test_markdown_v2_caption_credits_the_author_escaped() -> None:
    caption = telegram_caption(BASE, "MarkdownV2")
    assert caption.endswith(r"— Creator Name \(@creator\) · ♥ 1,113")


def test_caption_cuts_a_huge_prompt_and_keeps_the_attribution() -> None:
    caption = telegram_caption(image(text="blossom & petal " * 500))
    shown = visible_html(caption)
    assert utf16_len(shown) <= 1024
    assert ELLIPSIS + "</i>" in caption
    assert shown.endswith("— Creator Name (@creator) · ♥ 1,113")


def test_caption_cuts_a_huge_display_name_so_that_the_prompt_stays() -> None:
    caption = telegram_caption(image(author_display_name="Name " * 1000))
    assert caption.startswith(f"<i>{BASE.text}</i>")


@pytest.mark.parametrize("parse_mode", ["HTML", "MarkdownV2"])
def test_caption_of_a_2000_character_username_shows_at_most_1024_characters(
    parse_mode: Literal["HTML", "MarkdownV2"],
) -> None:
    caption = telegram_caption(image(author_username="_" * 2000), parse_mode)
    shown = visible_html(caption) if parse_mode == "HTML" else visible_markdown_v2(caption)
    assert utf16_len(shown) <= 1024
    assert shown.startswith(BASE.text)


def test_caption_of_a_4000_digit_likes_count_shows_the_bound_and_a_plus() -> None:
    shown = visible_html(telegram_caption(image(likes=10**4000 - 1)))
    assert shown.endswith("♥ 999,999,999,999,999+")
    assert shown.startswith(BASE.text)


def test_a_count_too_long_for_str_is_shown_as_the_bound_in_the_embed() -> None:
    embed = discord_embed(image(likes=10**5000, image_width=10**5000, image_height=-(10**5000)))
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Likes"] == "999,999,999,999,999+"
    assert fields["Size"] == "999999999999999+x-999999999999999+"


def test_embed_leaves_out_urls_discord_would_refuse() -> None:
    embed = discord_embed(
        image(
            media_urls=("javascript:alert(1)",),
            author_avatar_url="https://pbs.twimg.com/a b.jpg",
        )
    )
    assert "url" not in embed
    assert "image" not in embed
    assert embed["author"] == {"name": "Creator Name (@creator)"}


def test_caption_refuses_another_parse_mode() -> None:
    with pytest.raises(ValueError, match="parse_mode"):
        telegram_caption(BASE, "Markdown")  # type: ignore[arg-type]


# -- pick_inspiration ----------------------------------------------------------------------------


def test_pick_inspiration_picks_among_the_best_liked_hits() -> None:
    import random

    from meigen_async import SearchHit
    from meigen_async.bots import pick_inspiration

    hits = [SearchHit(id=f"{n}", likes=n) for n in (5, 50, 1, 40, 30, 2)]
    picks = {pick_inspiration(hits, top=3, rng=random.Random(seed)).id for seed in range(50)}  # type: ignore[union-attr]
    assert picks == {"50", "40", "30"}


def test_pick_inspiration_of_no_hits_is_none() -> None:
    from meigen_async.bots import pick_inspiration

    assert pick_inspiration([]) is None
