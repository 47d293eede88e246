"""The docs pages render as written: Python-Markdown's rules for lists, which are not GitHub's.

Python-Markdown (what mkdocs uses) nests a list, or a paragraph after a blank line, inside a
list item only when it is indented by four spaces a level. With fewer, a nested list is
flattened into its parent and an indented `100.` starts a new item: on the benchmarks page
the continuation of scenario 3 and the sub-items of scenario 5 showed as scenarios 4 to 7.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))
MARKER = re.compile(r"( *)(?:[-*+]|(\d+)[.)]) ")


def misindented(text: str) -> Iterator[str]:
    """Each line outside code blocks that Python-Markdown would not render as written.

    That is: a list item, or a paragraph after a blank line, indented by other than a
    multiple of four spaces; and a numbered item that is neither 1 nor the number after the
    one before it at its level (a line of text that wrapped to start with "100. ", or a list
    numbered 4, 6, 5 that renders as 4, 5, 6).
    """
    fenced = False
    blank_before = False
    numbers: dict[int, int] = {}  # the last number seen at each indentation
    for index, line in enumerate(text.splitlines(), 1):
        shown = line.strip()[:50]
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif line.startswith("#"):
            numbers.clear()
        elif not fenced and line.strip():
            indent = len(line) - len(line.lstrip(" "))
            marker = MARKER.match(line)
            if marker is not None and indent % 4:
                yield f"{index}: a list item indented {indent} spaces: {shown}"
            elif marker is None and blank_before and indent % 4:
                yield f"{index}: a paragraph indented {indent} spaces: {shown}"
            elif marker is not None and marker.group(2) is not None:
                number = int(marker.group(2))
                if number not in (1, numbers.get(indent, 0) + 1):
                    yield f"{index}: item {number} after {numbers.get(indent)}: {shown}"
                numbers = {i: n for i, n in numbers.items() if i < indent}
                numbers[indent] = number
        blank_before = not line.strip()


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_nested_list_and_paragraph_is_indented_by_four_spaces_a_level(page: Path) -> None:
    assert list(misindented(page.read_text(encoding="utf-8"))) == []


def test_the_check_finds_what_broke_the_benchmarks_page() -> None:
    start = "1. **Warm.**\n2. **Cold.**\n"
    broken = start + "3. **Burst.** ... ours 16, aiohttp 100, httpx\n    100. The wall times\n"
    broken += "4. **Scale.** It measures:\n   - *time per id*: ...\n6. **SQLite**\n"
    assert [line.split(":")[0] for line in misindented(broken)] == ["4", "6", "7"]
    fixed = start + "3. **Burst.** ... ours 16, aiohttp 100,\n    httpx 100. The wall times\n"
    fixed += "4. **Scale.** It measures:\n    - *time per id*: ...\n5. **SQLite**\n"
    assert list(misindented(fixed)) == []
