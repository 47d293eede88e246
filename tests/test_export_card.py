"""The dataset card: Hugging Face's YAML header, and a body no input can break."""

from __future__ import annotations

import yaml

from meigen_async._export_card import Card, card_text

HOSTILE = 'a "query"\n---\nlicense: mit\n```\n`x`: y'


def _card(**changes: object) -> Card:
    options: dict[str, object] = {
        "format": "parquet",
        "counts": {"success": 3, "opted_out": 1},
        "shards": 2,
        "bytes": 1234,
        "command": "meigen-async export out --format parquet",
        "gallery": "http://127.0.0.1:1",
        "source": "the posts given",
        "ignore_opt_out": False,
        **changes,
    }
    return Card(**options)  # type: ignore[arg-type]


def _header(text: str) -> dict[str, object]:
    _, header, _ = text.split("---\n", 2)
    parsed = yaml.safe_load(header)
    assert isinstance(parsed, dict)
    return parsed


def test_the_header_says_the_configuration_features_and_count():
    header = _header(card_text(_card()))
    assert header["license"] == "other"
    assert header["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "*[0-9].parquet"}]}
    ]
    info = header["dataset_info"]
    assert info["features"][0] == {"name": "image", "dtype": "image"}  # type: ignore[index]
    assert info["splits"] == [{"name": "train", "num_bytes": 1234, "num_examples": 3}]  # type: ignore[index]


def test_no_input_can_end_the_header_or_the_command_block():
    text = card_text(_card(source=HOSTILE, command=HOSTILE, gallery=HOSTILE))
    assert _header(text)["license"] == "other"
    body = text.split("---\n", 2)[2]
    lines = body.splitlines()
    assert "---" not in lines
    assert [line for line in lines if line.startswith("```")] == ["```", "```"]
    assert "belong to their authors" in body


def test_the_card_says_when_opt_outs_were_ignored():
    assert "--ignore-opt-out` was used" in card_text(_card(ignore_opt_out=True))
    assert "were not written" in card_text(_card())


def test_the_source_is_told_in_plain_words_and_only_the_gallery_url_is_code():
    lines = card_text(_card(source="the hits of the search 'a `b` *c*'")).splitlines()
    assert (
        r"- Source: the hits of the search 'a \`b\` \*c\*', from the gallery at "
        "`http://127.0.0.1:1`."
    ) in lines
