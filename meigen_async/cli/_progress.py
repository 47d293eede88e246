"""The progress bar of `bulk`, `download` and `export` on a terminal (rich, imported if drawn).

Each frame is laid out for the width the terminal has then (`fit`): the fields are taken in
order of use (what it is doing, the count, the failures, the bar, the time left, the rate, the
media bytes, the time elapsed, the spinner) while they fit, so that a narrow terminal loses
the least useful ones whole, rather than rich cutting them short (`63/6…`) or wrapping one
onto a line of its own. The time left is shown only while it can be known: with a total, and
until the end. The last frame says how the run ended: done, stopped or interrupted.

Without rich (the `cli` extra) there is no bar: one line says how to get one, and the run
goes on.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO, cast

import attrs

from ._output import _PROG, RICH_HINT, _console, _print

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.progress import Progress, Task, TaskID
    from rich.table import Table

__all__ = ["Field", "Tracker", "fit"]

_BAR_CELLS = (10, 40)
"""The fewest cells a bar is drawn in (fewer says nothing), and the most."""


@attrs.frozen
class Field:
    """A field of the progress line: its name and the cells it takes (the bar: its fewest)."""

    name: str
    cells: int


def fit(fields: Sequence[Field], width: int, *, gap: int = 1) -> tuple[frozenset[str], int]:
    """The names of the `fields` (most useful first) shown in `width` cells, and the cells left.

    Each field is taken when it fits beside those taken before it, `gap` cells apart; one that
    does not is dropped whole, and a smaller, less useful one after it may still fit.
    """
    shown: set[str] = set()
    used = 0
    for field in fields:
        needed = field.cells + (gap if shown else 0)
        if used + needed <= width:
            shown.add(field.name)
            used += needed
    return frozenset(shown), width - used


class Tracker:
    """What a command tells its progress: each image done, and how the run ended.

    This one draws nothing: stderr is not a terminal, or rich is not installed.
    """

    def advance(self, ok: bool, size: int = 0, samples: int = 0) -> None:
        """One image done (`ok`: without a failure), having brought `size` bytes of media.

        `samples` is the pictures it gave (`export`), shown beside the count when not zero.
        """

    def end(self, word: str) -> None:
        """Say `word` ("stopped", ...) in the last frame, rather than "done"."""


class _Drawn(Tracker):
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task
        self._failed = 0
        self._media = 0
        self._samples = 0
        self._ended = False

    def advance(self, ok: bool, size: int = 0, samples: int = 0) -> None:
        self._failed += not ok
        self._media += size
        self._samples += samples
        self._progress.update(
            self._task, advance=1, failed=self._failed, media=self._media, samples=self._samples
        )

    def end(self, word: str) -> None:
        if self._ended:  # the first word stays: a stop is not made "done" on the way out
            return
        self._ended = True
        self._progress.update(self._task, word=word)
        self._progress.stop_task(self._task)  # the time elapsed stops here


@contextmanager
def _progress(
    stream: TextIO, total: int | None, *, doing: str = "fetching", unit: str = "ids"
) -> Iterator[Tracker]:
    """A `Tracker` drawing a progress bar of `total` items (None: unknown) on `stream`.

    Nothing is drawn unless `stream` is a terminal. While the bar is drawn, what is printed to
    stdout (when it is a terminal too) goes above the bar, not into its line. The last frame
    says "done", or what `Tracker.end` said, or "interrupted" (Ctrl-C, SIGTERM), or "stopped"
    (an error), and ends its line, so that what is printed next starts a line of its own.
    """
    if not stream.isatty():
        yield Tracker()
        return
    try:
        import rich  # noqa: F401
    except ModuleNotFoundError:
        _print(f"{_PROG}: no progress bar without rich ({RICH_HINT})", stream)
        yield Tracker()
        return
    progress = _fitted_progress(_console(stream), doing, unit, redirect_stdout=sys.stdout.isatty())
    with progress:
        tracker = _Drawn(progress, progress.add_task(doing, total=total, word=doing))
        try:
            yield tracker
        except Exception:
            tracker.end("stopped")
            raise
        except BaseException:  # Ctrl-C (a cancelled task, KeyboardInterrupt), SIGTERM
            tracker.end("interrupted")
            raise
        tracker.end("done")


def _fitted_progress(console: Console, doing: str, unit: str, *, redirect_stdout: bool) -> Progress:
    """A rich `Progress` whose one line is laid out by `fit` each time it is drawn."""
    from rich import filesize
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column, Table
    from rich.text import Text

    spinner, elapsed, left = SpinnerColumn(), TimeElapsedColumn(), TimeRemainingColumn()

    def fields(task: Task) -> dict[str, Text]:
        """The fields this frame may show, rendered (the bar is drawn once its width is known)."""
        running = task.fields["word"] == doing
        failed: int = task.fields.get("failed", 0)
        media: int = task.fields.get("media", 0)
        samples: int = task.fields.get("samples", 0)
        done = int(task.completed)
        speed = task.finished_speed or task.speed
        shown: dict[str, Any] = {
            "spinner": spinner(task) if running else None,
            "word": Text(task.fields["word"], style="bold" if not running else ""),
            "count": Text(
                f"{done:,}/{int(task.total):,}" if task.total is not None else f"{done:,} {unit}",
                style="progress.download",
            ),
            "failed": Text(f"{failed:,} failed", style="red") if failed else None,
            "samples": Text(f"{samples:,} samples") if samples else None,
            "media": Text(filesize.decimal(media), style="progress.filesize") if media else None,
            "rate": Text(
                f"{'-' if speed is None else f'{speed:,.0f}'} {unit}/s",
                style="progress.data.speed",
            ),
            "elapsed": Text.assemble("elapsed ", cast(Text, elapsed(task))),
            "left": Text.assemble("left ", cast(Text, left(task)))
            if running and task.total is not None
            else None,
        }
        return {name: text for name, text in shown.items() if text is not None}

    def row(task: Task, width: int) -> list[RenderableType]:
        rendered = fields(task)
        # A bar with no total and nothing running would pulse on in the last frame.
        with_bar = task.total is not None or task.fields["word"] == doing
        candidates = [
            Field(name, _BAR_CELLS[0] if name == "bar" else rendered[name].cell_len)
            for name in _BY_USE
            if name in rendered or (name == "bar" and with_bar)
        ]
        shown, spare = fit(candidates, width)
        cells = min(_BAR_CELLS[0] + spare, _BAR_CELLS[1])
        return [
            BarColumn(bar_width=cells).render(task) if name == "bar" else rendered[name]
            for name in _IN_ORDER
            if name in shown
        ]

    class FittedProgress(Progress):
        def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
            rows = [row(task, self.console.width) for task in tasks if task.visible]
            columns = max(map(len, rows), default=0)
            # One cell between two fields, none at the edges, as `fit` counts them.
            table = Table.grid(*(Column(no_wrap=True) for _ in range(columns)), padding=(0, 1))
            for cells in rows:
                table.add_row(*cells)
            return table

    return FittedProgress(console=console, redirect_stdout=redirect_stdout, redirect_stderr=False)


_BY_USE = (
    "word",
    "count",
    "failed",
    "samples",
    "bar",
    "left",
    "rate",
    "media",
    "elapsed",
    "spinner",
)
"""The fields of the progress line, most useful first: the last are dropped first."""

_IN_ORDER = (
    "spinner",
    "word",
    "bar",
    "count",
    "samples",
    "failed",
    "media",
    "rate",
    "elapsed",
    "left",
)
"""The fields of the progress line in the order they are shown."""
