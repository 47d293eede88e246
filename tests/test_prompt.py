"""Tests for meigen_async.prompt: plain or JSON, repair, placeholders, parameters, bounds."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meigen_async.models import GalleryImage, unstructure_image
from meigen_async.prompt import Prompt, PromptKind, parse_prompt

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "gallery-prompts.jsonl"

NBSP = "\u00a0"

# -- Fixtures: written for these tests, not taken from any corpus ----------------------------------

PLAIN_PROSE = (
    "A weathered lighthouse keeper repairing a brass lantern at dusk, warm tungsten glow, "
    "salt-streaked windows, 35mm film grain, shallow depth of field."
)
MULTI_LANGUAGE = [
    "夕暮れの商店街を歩く制服姿の少女、フィルム写真風、柔らかい逆光、8K",
    "一只戴着圆框眼镜的橘猫坐在旧书店的木质柜台上，午后阳光，胶片质感",  # noqa: RUF001
    "Un vieux pêcheur répare ses filets sur le quai, lumière dorée, grain argentique.",
    "Портрет пожилого часовщика за работой, тёплый свет лампы, макросъёмка",
]
BRAND_PROSE = (
    "[BRAND NAME] | [COLOR]\n\n"
    "Act as a senior art director. Build a poster where the [BRAND NAME] logo melts into "
    "a pool of [COLOR] paint, studio lighting, glossy reflections."
)
BRACES_PROSE = (
    "{\nA cinematic shot of a night market in the rain, neon reflections on wet asphalt,\n"
    "steam rising from food stalls, anamorphic lens flare.\n}"
)
QUOTED_SENTENCE = '"A paper boat drifting down a flooded street at golden hour, macro lens."'
SLOT_TEMPLATE = "{subject} in the style of {artist}, {medium}, dramatic lighting"

VALID_OBJECT = """{
  "subject": "an astronaut tending a greenhouse on Mars",
  "style": {"medium": "oil painting", "palette": ["rust", "teal", "cream"]},
  "aspect_ratio": "4:5",
  "seed": 42,
  "upscale": true
}"""
VALID_ARRAY = """[
  {"shot": 1, "description": "wide establishing shot of a snowy village"},
  {"shot": 2, "description": "close-up of a child pressing her face to a frosted window"}
]"""


def plain(text: str) -> Prompt:
    prompt = parse_prompt(text)
    assert prompt.kind is PromptKind.PLAIN
    return prompt


def json_prompt(text: str) -> Prompt:
    prompt = parse_prompt(text)
    assert prompt.kind is PromptKind.JSON
    return prompt


# -- The result type -------------------------------------------------------------------------------


def test_prompt_kind_values_are_plain_and_json() -> None:
    assert [kind.value for kind in PromptKind] == ["plain", "json"]


def test_text_is_kept_unchanged() -> None:
    text = f"  Prompt:\n{{\n{NBSP} “mood”: “quiet”,\n}}  "
    assert parse_prompt(text).text == text


def test_params_are_read_only() -> None:
    prompt = parse_prompt("a red kite over dunes --ar 3:2")
    with pytest.raises(TypeError):
        prompt.params["ar"] = "1:1"  # type: ignore[index]


def test_prompts_compare_by_value() -> None:
    assert parse_prompt(BRAND_PROSE) == parse_prompt(BRAND_PROSE)


# -- Plain prompts ---------------------------------------------------------------------------------


def test_prose_is_plain() -> None:
    plain(PLAIN_PROSE)


@pytest.mark.parametrize("text", MULTI_LANGUAGE)
def test_prose_in_other_languages_is_plain(text: str) -> None:
    plain(text)


def test_a_plain_prompt_has_no_data_preamble_or_repair() -> None:
    prompt = plain(PLAIN_PROSE)
    assert (prompt.data, prompt.preamble, prompt.repaired) == (None, "", False)


def test_prose_starting_with_a_bracketed_slot_is_plain() -> None:
    plain(BRAND_PROSE)


def test_prose_wrapped_in_braces_is_plain() -> None:
    plain(BRACES_PROSE)


def test_a_single_quoted_sentence_is_plain() -> None:
    plain(QUOTED_SENTENCE)


def test_a_quoted_sentence_wrapped_in_braces_is_plain() -> None:
    plain('{"A paper boat drifting down a flooded street at golden hour"}')


def test_a_slot_template_is_plain() -> None:
    plain(SLOT_TEMPLATE)


def test_a_double_brace_template_is_plain() -> None:
    plain("{{subject}} wearing {{outfit}}, editorial photo")


def test_a_bracketed_quote_inside_prose_is_plain() -> None:
    plain('Timeline of ships: [ "1500 AD" ]: [galleon], [ "1900 AD" ]: [steamer], marble plinth.')


def test_a_short_json_example_inside_long_prose_is_plain() -> None:
    plain(
        'Use the style {"look": "noir"} as a loose guide, then paint a rain-soaked detective '
        "office at midnight with venetian blind shadows and a ceiling fan turning slowly."
    )


def test_a_bracketed_list_inside_a_sentence_is_plain() -> None:
    plain('Soft pastel colours ["peach", "mint"] and a single {"mood"} tag.')


def test_json_after_a_label_followed_by_longer_prose_is_plain() -> None:
    plain(
        'Style: {"look": "noir"}, soft window light, rain on the glass, a detective asleep '
        "at his desk, 35mm film, heavy grain."
    )


def test_a_fragment_cut_off_mid_document_is_plain() -> None:
    plain(
        'with a red umbrella in the rain, cinematic.",\n  "lighting": {\n'
        '    "key": "neon sign",\n    "fill": "none"\n  }\n}'
    )


def test_a_code_fence_around_a_slot_is_plain() -> None:
    plain("Render this line as a huge poster headline:\n```\n[the sun waits at night's door]\n```")


# -- JSON prompts: valid -----------------------------------------------------------------------


def test_a_valid_object_parses_to_what_json_loads_gives() -> None:
    assert json_prompt(VALID_OBJECT).data == json.loads(VALID_OBJECT)


def test_a_valid_array_parses_to_what_json_loads_gives() -> None:
    assert json_prompt(VALID_ARRAY).data == json.loads(VALID_ARRAY)


def test_valid_json_has_no_preamble_and_is_not_repaired() -> None:
    prompt = json_prompt(VALID_OBJECT)
    assert (prompt.preamble, prompt.repaired) == ("", False)


def test_whitespace_around_valid_json_is_allowed() -> None:
    assert json_prompt(f"\n\n  {VALID_OBJECT}\n{NBSP}\n").data == json.loads(VALID_OBJECT)


def test_one_line_json_is_json() -> None:
    text = '{ "scene": "tea ceremony", "camera": { "lens": "50mm", "iso": 200 }, "mood": "calm" }'
    assert json_prompt(text).data == json.loads(text)


def test_code_fenced_json_is_json() -> None:
    text = f"```json\n{VALID_OBJECT}\n```"
    assert json_prompt(text).data == json.loads(VALID_OBJECT)


def test_text_before_a_code_fence_is_the_preamble() -> None:
    text = f"Greenhouse on Mars 🚀\n\n```json\n{VALID_OBJECT}\n```\nEnjoy!"
    assert json_prompt(text).preamble == "Greenhouse on Mars 🚀"


def test_json_in_a_fence_is_not_repaired_when_valid() -> None:
    assert json_prompt(f"```\n{VALID_ARRAY}\n```").repaired is False


@pytest.mark.parametrize(
    ("preamble", "separator"),
    [
        ("Nano Banana Pro\n\nPrompt:", "\n"),
        ("Snow day in the village ❄️🏡", "\n\n"),
        ("Gemini 2.5 Flash Image", "\n"),
        ("Prompt 👇", "\n\n"),
        ("Prompt:", " "),
        ("Prompt 👇", " "),
    ],
)
def test_json_after_a_short_preamble_is_json(preamble: str, separator: str) -> None:
    prompt = json_prompt(f"{preamble}{separator}{VALID_ARRAY}")
    assert (prompt.data, prompt.preamble) == (json.loads(VALID_ARRAY), preamble)


def test_json_after_a_preamble_is_not_repaired_when_valid() -> None:
    assert json_prompt(f"Nano Banana Pro\n\nPrompt:\n{VALID_OBJECT}").repaired is False


def test_words_after_a_document_are_ignored() -> None:
    prompt = json_prompt(f"{VALID_OBJECT}\n\nThanks for all the love 🙏")
    assert (prompt.data, prompt.repaired) == (json.loads(VALID_OBJECT), False)


# -- JSON prompts: malformed -----------------------------------------------------------------------


def test_trailing_commas_are_repaired() -> None:
    prompt = json_prompt('{\n  "subject": "koi pond",\n  "palette": ["gold", "ink",],\n}')
    assert (prompt.data, prompt.repaired) == (
        {"subject": "koi pond", "palette": ["gold", "ink"]},
        True,
    )


def test_missing_commas_are_repaired() -> None:
    prompt = json_prompt('{\n  "subject": "koi pond"\n  "lens": "macro"\n}')
    assert prompt.data == {"subject": "koi pond", "lens": "macro"}


def test_truncated_json_is_repaired() -> None:
    prompt = json_prompt('{\n  "subject": "koi pond",\n  "lighting": {\n    "key": "lantern gl')
    assert prompt.data == {"subject": "koi pond", "lighting": {"key": "lantern gl"}}


def test_smart_quotes_are_repaired() -> None:
    prompt = json_prompt("{\n“subject”: “koi pond”,\n“lens”: “macro”\n}")
    assert prompt.data == {"subject": "koi pond", "lens": "macro"}


def test_smart_quotes_inside_smart_quoted_values_are_kept() -> None:
    prompt = json_prompt("{\n“sign”: “a shop sign reading “OPEN” in neon”,\n“lens”: “35mm”\n}")
    assert prompt.data == {"sign": "a shop sign reading “OPEN” in neon", "lens": "35mm"}


def test_smart_quotes_inside_straight_quoted_values_are_kept() -> None:
    text = '{\n  "sign": "a shop sign reading “OPEN”",\n  "lens": "35mm",\n}'
    assert json_prompt(text).data == {"sign": "a shop sign reading “OPEN”", "lens": "35mm"}


def test_non_breaking_space_indentation_is_repaired() -> None:
    text = f'{{\n{NBSP} "subject": "koi pond",\n{NBSP}{NBSP} "lens": "macro"\n}}'
    prompt = json_prompt(text)
    assert (prompt.data, prompt.repaired) == ({"subject": "koi pond", "lens": "macro"}, True)


def test_raw_newlines_inside_strings_are_repaired() -> None:
    prompt = json_prompt('{"caption": "first line\nsecond line", "lens": "macro"}')
    assert (prompt.data, prompt.repaired) == (
        {"caption": "first line\nsecond line", "lens": "macro"},
        True,
    )


def test_two_documents_back_to_back_become_a_list_of_both() -> None:
    prompt = json_prompt('{"shot": "wide"}\n{"shot": "close-up"}')
    assert (prompt.data, prompt.repaired) == ([{"shot": "wide"}, {"shot": "close-up"}], True)


def test_two_malformed_documents_back_to_back_become_a_list_of_both() -> None:
    prompt = json_prompt('{"shot": "wide",}\n{"shot": "close-up",}')
    assert prompt.data == [{"shot": "wide"}, {"shot": "close-up"}]


def test_a_second_document_after_a_label_is_ignored() -> None:
    prompt = json_prompt('Left:\n{"shot": "wide"}\nRight:\n{"shot": "close-up"}')
    assert (prompt.data, prompt.preamble) == ({"shot": "wide"}, "Left:")


def test_an_object_closed_too_early_is_repaired() -> None:
    prompt = json_prompt('{\n  "subject": "koi pond"\n  },\n  "lens": "macro"\n}')
    assert prompt.repaired is True


def test_malformed_one_line_json_is_repaired() -> None:
    prompt = json_prompt('Prompt: { "scene": "tea ceremony", "mood": "calm", }')
    assert (prompt.data, prompt.preamble) == ({"scene": "tea ceremony", "mood": "calm"}, "Prompt:")


def test_a_document_that_lost_its_opening_brace_is_repaired() -> None:
    prompt = json_prompt('"scene": {\n  "place": "tea house",\n  "time": "dawn"\n}\n}')
    assert (prompt.data, prompt.repaired) == (
        {"scene": {"place": "tea house", "time": "dawn"}},
        True,
    )


# -- Placeholders ----------------------------------------------------------------------------------


def test_placeholders_come_in_order_of_first_appearance_without_repeats() -> None:
    assert plain(BRAND_PROSE).placeholders == ("BRAND NAME", "COLOR")


def test_brace_placeholders_are_found() -> None:
    assert plain(SLOT_TEMPLATE).placeholders == ("subject", "artist", "medium")


def test_placeholders_in_any_script_are_found() -> None:
    text = "【テーマ】\n{ここにテーマを入力}\n根据[主题]生成海报"
    assert plain(text).placeholders == ("ここにテーマを入力", "主题")


def test_double_brace_placeholders_are_found_once() -> None:
    assert plain("{{subject}} on {{subject}}'s birthday").placeholders == ("subject",)


def test_whitespace_inside_a_placeholder_is_stripped() -> None:
    assert plain("a portrait of [ PERSON NAME ] and [PERSON NAME]").placeholders == ("PERSON NAME",)


def test_empty_brackets_are_not_placeholders() -> None:
    assert plain("a checklist [ ] and a set {} of nothing").placeholders == ()


def test_long_bracketed_text_is_not_a_placeholder() -> None:
    text = "[describe the room exactly as it looks right now, every object included] at noon"
    assert plain(text).placeholders == ()


def test_bracketed_quotes_are_not_placeholders() -> None:
    assert plain('colours ["teal", "amber"] and {"mood"} only').placeholders == ()


def test_an_apostrophe_inside_a_placeholder_is_allowed() -> None:
    text = "a passport for [PERSON\u2019S FULL NAME] and [CHILD'S NAME]"
    assert plain(text).placeholders == ("PERSON\u2019S FULL NAME", "CHILD'S NAME")


def test_markdown_link_text_is_not_a_placeholder() -> None:
    assert plain("a [Porsche 911](https://example.com/911) on a wet road").placeholders == ()


def test_placeholders_in_json_values_are_found() -> None:
    text = '{"subject": "[PRODUCT] on a plinth", "details": {"label": "{brand} logo"}}'
    assert json_prompt(text).placeholders == ("PRODUCT", "brand")


def test_json_keys_are_not_placeholders() -> None:
    assert json_prompt('{"[SLOT]": "a plain value", "list": [["a"]]}').placeholders == ()


# -- Parameters ------------------------------------------------------------------------------------


def test_trailing_flags_are_params() -> None:
    assert plain("a red kite over dunes --ar 16:9 --v 7").params == {"ar": "16:9", "v": "7"}


def test_no_takes_everything_up_to_the_next_flag() -> None:
    params = plain("a red kite --no text, watermark, frame --seed 9").params
    assert params == {"no": "text, watermark, frame", "seed": "9"}


def test_flags_without_a_value_map_to_none() -> None:
    assert plain("seamless moss texture --tile --ar 1:1").params == {"tile": None, "ar": "1:1"}


def test_the_full_midjourney_example_is_read() -> None:
    text = "a red kite over dunes --ar 16:9 --v 7 --tile --no text, watermark --sref 123"
    assert plain(text).params == {
        "ar": "16:9",
        "v": "7",
        "tile": None,
        "no": "text, watermark",
        "sref": "123",
    }


def test_flags_followed_by_prose_are_not_params() -> None:
    assert plain("use --ar 16:9 for a wide frame, then add fog").params == {}


def test_only_the_trailing_run_of_flags_counts() -> None:
    assert plain("try --chaos 5 first. a red kite --ar 2:3").params == {"ar": "2:3"}


def test_a_flag_glued_to_a_word_is_not_a_flag() -> None:
    assert plain("a neon logo--v 7").params == {}


def test_a_prompt_quoted_as_a_whole_keeps_its_flags() -> None:
    assert plain('"a red kite over dunes --ar 3:4"').params == {"ar": "3:4"}


def test_a_prompt_without_flags_has_no_params() -> None:
    assert plain(PLAIN_PROSE).params == {}


def test_json_prompts_have_no_params() -> None:
    assert json_prompt('{"prompt": "a red kite", "parameters": "--ar 9:16"}').params == {}


# -- GalleryImage.prompt ---------------------------------------------------------------------------


def test_image_prompt_parses_the_image_text() -> None:
    image = GalleryImage(id="1", text=VALID_OBJECT)
    assert image.prompt == parse_prompt(VALID_OBJECT)


def test_image_prompt_is_computed_once() -> None:
    image = GalleryImage(id="1", text=BRAND_PROSE)
    assert image.prompt is image.prompt


def test_image_prompt_is_not_a_field() -> None:
    assert "prompt" not in unstructure_image(GalleryImage(id="1", text=BRAND_PROSE))


# -- Properties ------------------------------------------------------------------------------------

JSONISH = st.text(alphabet='{}[]":,“”„ \n\t\u00a0abc1-\\`', max_size=200)


@settings(deadline=None)
@given(st.one_of(st.text(), JSONISH))
def test_parse_prompt_never_raises(text: str) -> None:
    assert isinstance(parse_prompt(text), Prompt)


@settings(deadline=None)
@given(st.one_of(st.text(), JSONISH))
def test_text_is_preserved(text: str) -> None:
    assert parse_prompt(text).text == text


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)
json_documents = st.one_of(
    st.lists(json_values, min_size=1),
    st.dictionaries(st.text(), json_values, min_size=1),
)


@pytest.mark.slow
@settings(deadline=None)
@given(json_documents, st.sampled_from([None, 2]), st.booleans())
def test_valid_json_round_trips_to_json_loads(
    document: dict[str, Any] | list[Any], indent: int | None, ensure_ascii: bool
) -> None:
    text = json.dumps(document, indent=indent, ensure_ascii=ensure_ascii)
    prompt = parse_prompt(text)
    assert (prompt.kind, prompt.data, prompt.preamble, prompt.repaired) == (
        PromptKind.JSON,
        json.loads(text),
        "",
        False,
    )


# -- Hostile input ---------------------------------------------------------------------------------

TWO_MB = 2_000_000
HOSTILE = {
    "200,000 open braces": "{" * 200_000,
    "200,000 open brackets": "[" * 200_000,
    "arrays nested 100,000 deep": "[" * 100_000 + "]" * 100_000,
    "objects nested 100,000 deep, unclosed": '{"a": ' * 100_000,
    "arrays of objects nested 100,000 deep": '[{"a": ' * 100_000,
    "a 2 MB string": '{"caption": "' + "x" * TWO_MB + '"}',
    "a 2 MB unterminated string": '{"caption": "' + "x" * TWO_MB,
    "2 MB of open quotes": '{"' * (TWO_MB // 2),
    "2 MB of slots": "[SLOT] {slot} " * (TWO_MB // 14),
    "2 MB of flags": "--a b " * (TWO_MB // 6),
    "2 MB of whitespace around a brace": " " * TWO_MB + "{" + NBSP * TWO_MB,
    "2 MB of whitespace before a thousand starts": " " * TWO_MB + '{"a' * 1000,
    "200,000 documents back to back": '{"a": 1}\n' * 200_000,
}


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_input_returns_a_prompt(text: str) -> None:
    start = time.perf_counter()
    prompt = parse_prompt(text)
    assert isinstance(prompt, Prompt)
    assert time.perf_counter() - start < 5  # a sanity guard, not a benchmark


def test_a_2mb_valid_document_is_still_json() -> None:
    assert json_prompt(HOSTILE["a 2 MB string"]).data == {"caption": "x" * TWO_MB}


def test_64_documents_back_to_back_are_json() -> None:
    assert json_prompt('{"shot": 1}\n' * 64).data == [{"shot": 1}] * 64


def test_more_than_64_documents_back_to_back_are_plain() -> None:
    plain('{"shot": 1}\n' * 65)


def test_more_than_64_malformed_documents_back_to_back_are_plain() -> None:
    plain('{"shot": 1,}\n' * 65)


def test_malformed_json_beyond_the_repair_size_limit_is_plain() -> None:
    plain('{"caption": "' + "x" * 50_000 + '",}')


def test_malformed_json_nested_beyond_the_repair_depth_limit_is_plain() -> None:
    plain('{"a": ' * 100 + '"deep",')


# -- The real corpus, when it is there -------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    if not CORPUS.is_file():
        pytest.skip(
            "the real-prompt corpus (gallery-prompts.jsonl: prompts collected from the live "
            "gallery, kept outside the repository at ../shared/corpus/) is not here; expected "
            "in a fresh clone, where the bundled sample's prompts are tested instead"
        )
    with CORPUS.open(encoding="utf-8") as lines:
        return [json.loads(line)["text"] for line in lines if line.strip()]


def _whole_json(text: str) -> Any:
    try:
        return json.loads(text.strip())
    except ValueError:
        return None


def test_every_corpus_text_parses(corpus: list[str]) -> None:
    prompts = [parse_prompt(text) for text in corpus]
    assert [prompt.text for prompt in prompts] == corpus


def test_corpus_texts_that_are_valid_json_parse_to_json_loads(corpus: list[str]) -> None:
    for text in corpus:
        whole = _whole_json(text)
        if isinstance(whole, (dict, list)):
            prompt = parse_prompt(text)
            assert (prompt.kind, prompt.data, prompt.repaired) == (PromptKind.JSON, whole, False)


def test_corpus_texts_without_braces_or_brackets_are_plain(corpus: list[str]) -> None:
    for text in corpus:
        if not set(text) & set("{}[]"):
            assert parse_prompt(text).kind is PromptKind.PLAIN


def test_corpus_json_prompts_hold_non_empty_documents(corpus: list[str]) -> None:
    for prompt in map(parse_prompt, corpus):
        if prompt.kind is PromptKind.JSON:
            assert isinstance(prompt.data, (dict, list))
            assert prompt.data


def test_lone_surrogate_escapes_in_a_json_prompt_become_replacement_characters() -> None:
    prompt = parse_prompt(r'{"a": "x\ud800y", "\udfff": ["\ud800", {"e": "\ud83d\ude00"}]}')

    assert prompt.kind is PromptKind.JSON
    data = prompt.data
    assert isinstance(data, Mapping)
    assert data["a"] == "x\ufffdy"
    assert data["\ufffd"] == ["\ufffd", {"e": "\U0001f600"}]  # a valid pair stays as it is
    json.dumps(data, ensure_ascii=False, default=dict).encode("utf-8")  # writable as UTF-8
