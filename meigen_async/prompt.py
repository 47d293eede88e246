"""Prompt parsing: tell plain-text prompts from JSON prompts, and pull out what can be reused.

The endpoint's `text` field "may be plain text or a structured JSON prompt". Real prompts are
messy: JSON arrives in code fences, after a social-media preamble, with trailing or missing commas,
smart quotes, non-breaking-space indentation, raw newlines inside strings, cut off mid-document, or
as two documents back to back. [`parse_prompt`][meigen_async.parse_prompt] decides whether a text
*is* JSON before it
repairs anything (a repairer turns anything into something), then parses it strictly when it can
and repairs it, within bounds, when it cannot. It never raises on any `str`.

Everything here is a pure function of the text; nothing does I/O.

Longer than 450 lines on purpose: one concern, whose bounds and patterns (the first hundred
lines) are shared by every step of telling, finding, repairing and reading a prompt; split by
step, each module would import the same constants back.
"""

from __future__ import annotations

import enum
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs
import json_repair

from ._text import replace_surrogates

__all__ = ["Prompt", "PromptKind", "parse_prompt"]

# -- Limits ---------------------------------------------------------------------------------------

_MAX_PREAMBLE_CHARS: Final = 500
"""Longest preamble (stripped) that may precede an embedded JSON document."""
_LOOKAHEAD_MARGIN_CHARS: Final = 1_000
"""Text past the last possible start that the start pattern may look at."""
_KEY_WINDOW_CHARS: Final = 2_000
"""How far into a candidate document to look for a quoted key."""
_MAX_REPAIR_CHARS: Final = 20_000
"""Longest document handed to json-repair (real prompts needing repair are under 10,000)."""
_MAX_REPAIR_DEPTH: Final = 64
"""Deepest bracket nesting handed to json-repair (real prompts nest fewer than 10 levels)."""
_MAX_DOCUMENTS: Final = 64
"""Most documents back to back that are collected into a list."""
_MAX_PLACEHOLDER_CHARS: Final = 40
"""Longest placeholder, inside its brackets, whitespace stripped."""
_MAX_PARAMS_TAIL_CHARS: Final = 10_000
"""How much of the end of a plain prompt is searched for trailing parameters."""

# -- Patterns -------------------------------------------------------------------------------------

_QUOTES: Final = '"\u201c\u201d\u201e'  # " “ ” „
_SMART_QUOTES: Final = "\u201c\u201d\u201e"

# A `{` or `[` that opens what looks like a JSON document: an object whose first member starts
# with a (possibly smart) quote, an array of such objects, or an array of strings. The `[` runs are
# bounded so that 100,000 nested `[` cost linear time, not quadratic.
_START: Final = re.compile(
    rf"""
    (?P<object> \{{ ) (?=\s*[{_QUOTES}])
    | (?P<objects> \[ ) (?=(?:\s*\[){{0,8}} \s* \{{ \s*[{_QUOTES}])
    | (?P<strings> \[ ) (?=(?:\s*\[){{0,8}} \s*
                         [{_QUOTES}] [^{_QUOTES}\n]{{0,200}} [{_QUOTES}] \s* ,)
    """,
    re.VERBOSE,
)
# A quoted object key: "key": or “key”:
_KEY: Final = re.compile(rf"[{_QUOTES}][^{_QUOTES}\n]{{1,200}}[{_QUOTES}]\s*:")
# A text that begins inside an object whose opening brace was lost: "key": {...
_HEADLESS: Final = re.compile(
    rf"[{_QUOTES}][^{_QUOTES}\n]{{1,100}}[{_QUOTES}]\s*:\s*[{_QUOTES}{{\[]"
)
_FENCE_OPEN_AT_END: Final = re.compile(r"```[^\n`]*\s*\Z")
_FENCE: Final = "```"
_INDENT: Final = re.compile(r"^[ \t\u00a0]+", re.MULTILINE)
# Smart quotes in structural positions: after an opener, comma or colon, or at a line's start...
_SMART_OPENING: Final = re.compile(r"((?:^|[{\[,:])[ \t\u00a0]*)[\u201c\u201d\u201e]", re.MULTILINE)
# ...and before a colon, comma or closer, or at a line's end.
_SMART_CLOSING: Final = re.compile(r"[\u201c\u201d](?=[ \t\u00a0]*(?:[:,}\]]|$))", re.MULTILINE)

_PLACEHOLDER: Final = re.compile(
    rf"\[([^\[\]{{}}\n{_QUOTES}]{{1,{_MAX_PLACEHOLDER_CHARS + 20}}})\](?!\()"
    rf"|\{{([^\[\]{{}}\n{_QUOTES}]{{1,{_MAX_PLACEHOLDER_CHARS + 20}}})\}}"
)
_APOSTROPHES: Final = "'\u2018\u2019"

_TOKEN: Final = re.compile(r"\S+")
_FLAG: Final = re.compile(r"--([A-Za-z][A-Za-z0-9_-]*)")
_FIRST_FLAG: Final = re.compile(r"(?<!\S)--[A-Za-z]")
_MULTI_VALUE_FLAGS: Final = frozenset({"no", "sref", "cref", "p", "profile"})
"""Flags whose value may be several words (`--no text, watermark`, `--sref 123 456`)."""

# After a document closes, what says it went on (it was closed too early): ask the repairer.
_CONTINUES: Final = re.compile(rf"\s*,?\s*[{_QUOTES}]")
# What may end a label that introduces a document on its own line: "Prompt:", "JSON ->".
_LABEL_ENDS: Final = ":\uff1a-=>\u2192"

_BRACKET: Final = re.compile(r"[\[\]{}]")
_PAST_STRAY_CLOSERS: Final = re.compile(r"[^\s}\]]")
_NON_SPACE: Final = re.compile(r"\S")

_STRICT: Final = json.JSONDecoder()
_LENIENT: Final = json.JSONDecoder(strict=False)  # allows raw newlines and tabs inside strings

_END: Final = object()  # the end of an iterator, for _string_values

# -- The result -----------------------------------------------------------------------------------


class PromptKind(enum.Enum):
    """Whether a prompt is plain text or a (possibly repaired) JSON document."""

    PLAIN = "plain"
    """Plain text, not a JSON document."""
    JSON = "json"
    """A JSON object or array, as written or after repair."""


def _freeze_params(params: Mapping[str, str | None]) -> Mapping[str, str | None]:
    return MappingProxyType(dict(params))


@attrs.frozen
class Prompt:
    """A prompt text, classified and taken apart.

    Compares by value. It is not hashable: `data` and `params` are mappings.
    """

    kind: PromptKind
    """`PromptKind.JSON` when the text's substance is a JSON object or array."""
    text: str
    """The original text, unchanged."""
    data: dict[str, Any] | list[Any] | None = None
    """The parsed document of a JSON prompt (a list when several documents follow each other)."""
    preamble: str = ""
    """Text before the embedded JSON document, surrounding whitespace stripped; "" if none."""
    repaired: bool = False
    """True when `data` came from repairing malformed JSON rather than from parsing it as is."""
    placeholders: tuple[str, ...] = ()
    """Template slots (`[BRAND NAME]`, `{subject}`) in order of first appearance, no repeats."""
    params: Mapping[str, str | None] = attrs.field(factory=dict, converter=_freeze_params)
    """Trailing Midjourney-style `--name value` flags of a plain prompt (read-only)."""


# -- Entry point ----------------------------------------------------------------------------------


def parse_prompt(text: str) -> Prompt:
    """Classify `text` as a plain or JSON prompt and take it apart; never raises on a `str`.

    A text is JSON when it is a valid JSON object or array as a whole, or when, after at most a
    short preamble (a title, "Prompt:", an emoji, a model name, a code fence), it holds something
    that starts like a JSON object with quoted keys or an array of such and that parses, strictly
    or after a bounded repair, to a non-empty object or array. Anything else is plain.
    """
    parsed = _parse_json(text)
    if parsed is None:
        return Prompt(
            kind=PromptKind.PLAIN,
            text=text,
            placeholders=_placeholders([text]),
            params=_params(text),
        )
    data, preamble, repaired = parsed
    if _SURROGATE_ESCAPE.search(text) is not None:
        # JSON can spell a lone surrogate (`\ud800`), which no UTF-8 stream can write: U+FFFD
        # in its place, as the gallery's own strings get.
        _replace_surrogates_in(data)
    return Prompt(
        kind=PromptKind.JSON,
        text=text,
        data=data,
        preamble=preamble,
        repaired=repaired,
        placeholders=_placeholders(_chain(preamble, _string_values(data))),
    )


# -- Is it JSON, and what does it hold? -----------------------------------------------------------

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _replace_surrogates_in(data: dict[str, Any] | list[Any]) -> None:
    """Replace lone surrogates in every string (keys too) of freshly parsed JSON, in place.

    With a stack, not recursion: the data may be as deep as the parser allowed.
    """
    stack: list[dict[str, Any] | list[Any]] = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in list(node):
                value = node[key]
                if isinstance(value, str):
                    node[key] = replace_surrogates(value)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
                clean = replace_surrogates(key)
                if clean is not key:
                    node[clean] = node.pop(key)
        else:
            for index, value in enumerate(node):
                if isinstance(value, str):
                    node[index] = replace_surrogates(value)
                elif isinstance(value, (dict, list)):
                    stack.append(value)


_Parsed = tuple[dict[str, Any] | list[Any], str, bool]
"""(data, preamble, repaired)."""


def _parse_json(text: str) -> _Parsed | None:
    stripped = text.strip()
    # Fast path: the whole text is one valid document.
    whole = _loads(stripped)
    if isinstance(whole, (dict, list)):
        return whole, "", False
    if _HEADLESS.match(stripped) is not None:
        # The opening brace was lost ("key": {...}}): put it back; that is a repair.
        found = _decode("{" + stripped)
        return (found[0], "", True) if found is not None else None
    start = _find_start(text)
    if start is None:
        return None
    begin, end, preamble = start
    found = _decode(text[begin:end])
    return (found[0], preamble, found[1]) if found is not None else None


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _find_start(text: str) -> tuple[int, int, str] | None:
    """Find where an embedded JSON document begins: (begin, end, preamble), or None."""
    lead = len(text) - len(text.lstrip())
    # A document must start within the preamble limit; the margin leaves room for the lookahead.
    reach = 2 * _MAX_PREAMBLE_CHARS  # whitespace and a fence marker do not count as preamble
    window = text[: lead + reach + _LOOKAHEAD_MARGIN_CHARS]
    for match in _START.finditer(window, lead):
        begin = match.start()
        if begin - lead > reach:
            return None
        before = text[lead:begin]  # leading whitespace is no preamble, and may be huge
        fenced = _FENCE_OPEN_AT_END.search(before)
        if fenced is not None:
            before = before[: fenced.start()]
        preamble = before.strip()
        if len(preamble) > _MAX_PREAMBLE_CHARS:
            return None
        if _KEY.search(preamble) is not None:
            # The preamble itself is JSON: a fragment whose start was cut off. Not ours to guess.
            return None
        line = before[before.rfind("\n") + 1 :].strip()
        if line and (match.lastgroup == "strings" or not _ends_label(line)):
            continue  # a bracket in the middle of a sentence
        if (
            match.lastgroup != "strings"
            and _KEY.search(text, begin, begin + _KEY_WINDOW_CHARS) is None
        ):
            continue  # an object, or an array of objects, must show a quoted key early on
        end = len(text)
        if fenced is not None:
            closing = text.find(_FENCE, begin)
            end = closing if closing != -1 else end
        return begin, end, preamble
    return None


def _ends_label(line: str) -> bool:
    """Whether a line's text can introduce a document on the same line ("Prompt:", "Prompt 👇")."""
    last = line.rstrip("\ufe0f\u200d")[-1:]
    return bool(last) and (last in _LABEL_ENDS or unicodedata.category(last) in ("So", "Sk"))


def _decode(document: str) -> tuple[dict[str, Any] | list[Any], bool] | None:
    """Parse a candidate document: (data, repaired), or None when it is not JSON after all.

    Strictly first; then, after normalising NBSP indentation and smart quotes, leniently (raw
    newlines and tabs allowed inside strings); then with json-repair, within bounds.
    """
    normalised = _normalise(document)
    attempts = ((_STRICT, document, False), (_LENIENT, normalised, True))
    for decoder, source, repaired in attempts:
        decoded = _raw_decode(decoder, source)
        if decoded is None:
            continue
        value, rest = decoded
        following = rest.lstrip()
        if not following:
            return value, repaired
        if following[0] in "{[":
            documents = _documents(decoder, source)
            if documents is not None:
                return documents, True  # documents back to back: all of them, as a list
        elif _CONTINUES.match(following) is None:
            # What follows ("Thanks so much!", a stray brace, another document after a label) is
            # ignored like a preamble; but prose longer than the document is the substance.
            consumed = len(source) - len(rest)
            if len(following) > consumed and _KEY.search(following) is None:
                return None
            return value, repaired
    fixed = _repair(normalised)
    return (fixed, True) if fixed is not None else None


def _raw_decode(decoder: json.JSONDecoder, document: str) -> tuple[Any, str] | None:
    try:
        value, end = decoder.raw_decode(document)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, (dict, list)):
        return None
    return value, document[end:]


def _documents(decoder: json.JSONDecoder, document: str) -> list[Any] | None:
    """Parse documents that follow each other (whitespace between) into a list.

    None if one of them fails, or if there are more than `_MAX_DOCUMENTS`.
    """
    values: list[Any] = []
    index = 0
    while index < len(document):
        if len(values) == _MAX_DOCUMENTS:
            return None
        try:
            value, end = decoder.raw_decode(document, index)
        except (ValueError, RecursionError):
            return None
        if not isinstance(value, (dict, list)):
            return None
        values.append(value)
        found = _NON_SPACE.search(document, end)
        index = found.start() if found is not None else len(document)
    return values


def _normalise(document: str) -> str:
    """Undo what editors and social networks do to JSON: NBSP indentation and smart quotes."""
    document = _INDENT.sub(lambda m: " " * len(m.group()), document)
    opening = document.lstrip("{[ \t\r\n\u00a0")[:1]
    if opening and opening in _SMART_QUOTES:
        # Only when the document itself is written with smart quotes: a smart quote inside a
        # straight-quoted string is content, not structure.
        document = _SMART_OPENING.sub(lambda m: m.group(1) + '"', document)
        document = _SMART_CLOSING.sub('"', document)
    return document


def _repair(document: str) -> dict[str, Any] | list[Any] | None:
    """Repair with json-repair, within bounds; None unless it yields a non-empty object or array.

    The document is first split into the top-level documents it holds (see `_split`), so
    that malformed documents back to back become a list of all of them, as valid ones do, and
    trailing words are dropped, as they are after a valid document. json-repair is a pure-Python
    parser whose cost grows quickly with nesting and with some shapes of broken input, so hostile
    input never reaches it: documents longer than `_MAX_REPAIR_CHARS` or nested deeper than
    `_MAX_REPAIR_DEPTH` are not repaired.
    """
    if len(document) > _MAX_REPAIR_CHARS:
        return None
    parts, trailing, deepest = _split(document)
    if deepest > _MAX_REPAIR_DEPTH or not parts:
        return None
    following = trailing.strip()
    if len(following) > len(document) - len(trailing) and _KEY.search(following) is None:
        return None  # prose longer than the document is the substance
    values: list[dict[str, Any] | list[Any]] = []
    for part in parts:
        value = _repair_one(part)
        if value is None:
            if not values:
                return None
            continue  # a later fragment that holds nothing: dropped
        values.append(value)
    return values[0] if len(values) == 1 else values


def _repair_one(document: str) -> dict[str, Any] | list[Any] | None:
    decoded = _raw_decode(_LENIENT, document)
    if decoded is not None and not decoded[1].strip():
        return decoded[0] if decoded[0] else None
    try:
        value = json_repair.loads(document, skip_json_loads=True)
    except Exception:  # RecursionError included: a third-party parser must not make us raise
        return None
    if isinstance(value, (dict, list)) and value:
        return value
    return None


def _split(document: str) -> tuple[list[str], str, int]:
    """Split a document into the top-level documents it holds: (documents, trailing, depth).

    A document ends where the bracket depth returns to zero. Stray closing brackets after it are
    skipped; then another `{` or `[` starts the next document, a quote (or a comma and a
    quote) means the document was closed too early and goes on, and anything else, the end
    included, is trailing text. Brackets are counted without telling strings apart, which is
    robust to broken strings and, at worst, misses a split. More than `_MAX_DOCUMENTS`
    documents give no documents at all.
    """
    parts: list[str] = []
    depth = deepest = start = 0
    for match in _BRACKET.finditer(document):
        if match.group() in "{[":
            depth += 1
            deepest = max(deepest, depth)
            continue
        if depth == 0:
            continue  # a stray closer
        depth -= 1
        if depth:
            continue
        end = match.end()
        found = _PAST_STRAY_CLOSERS.search(document, end)
        after = found.start() if found is not None else len(document)
        if after < len(document) and document[after] in "{[":
            parts.append(document[start:end])
            if len(parts) == _MAX_DOCUMENTS:
                return [], "", deepest  # too many documents back to back: not a prompt
            start = after
        elif _CONTINUES.match(document, after) is None:
            parts.append(document[start:end])
            return parts, document[end:], deepest
    if document[start:].strip():
        parts.append(document[start:])
    return parts, "", deepest


# -- Placeholders ---------------------------------------------------------------------------------


def _placeholders(texts: Iterable[str]) -> tuple[str, ...]:
    spans: dict[str, None] = {}
    for text in texts:
        spans.update(dict.fromkeys(square or curly for square, curly in _PLACEHOLDER.findall(text)))
    found: dict[str, None] = {}
    for span in spans:
        slot = span.strip()
        if (
            slot
            and len(slot) <= _MAX_PLACEHOLDER_CHARS
            and slot[0] not in _APOSTROPHES
            and slot[-1] not in _APOSTROPHES
        ):
            found.setdefault(slot, None)
    return tuple(found)


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _string_values(data: Any) -> Iterator[str]:
    """Yield every string value of a JSON document in document order (keys excluded).

    Iterative, so that a document nested as deep as `json.loads` allows cannot overflow.
    """
    stack: list[Iterator[Any]] = [iter((data,))]
    while stack:
        value = next(stack[-1], _END)
        if value is _END:
            stack.pop()
        elif isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            stack.append(iter(value.values()))
        elif isinstance(value, list):
            stack.append(iter(value))


# -- Parameters -----------------------------------------------------------------------------------


def _params(text: str) -> dict[str, str | None]:
    """The trailing run of `--name value` flags of a plain prompt.

    Read right to left: every flag takes the words after it up to the next flag; a flag not in
    `_MULTI_VALUE_FLAGS` takes at most one word, so more words after it end the run (they are
    prose, and so is everything before). A flag with no words after it maps to None.
    """
    tail = text[-_MAX_PARAMS_TAIL_CHARS:].rstrip()
    if tail.endswith(('"', "\u201d")) and text.lstrip().startswith(('"', "\u201c")):
        tail = tail[:-1]  # a prompt quoted as a whole: the flags are inside the quotes
    first = _FIRST_FLAG.search(tail)
    if first is None:
        return {}
    found: list[tuple[str, str | None]] = []
    words = 0
    value_start = value_end = 0
    for token in reversed(list(_TOKEN.finditer(tail, first.start()))):
        flag = _FLAG.fullmatch(token.group())
        if flag is None:
            words += 1
            value_start = token.start()
            if words == 1:
                value_end = token.end()
            continue
        name = flag.group(1)
        if words > 1 and name.lower() not in _MULTI_VALUE_FLAGS:
            break
        found.append((name, tail[value_start:value_end] if words else None))
        words = 0
    return dict(reversed(found))
