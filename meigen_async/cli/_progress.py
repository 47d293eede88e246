"""The progress bar `bulk` draws on a terminal (rich, imported only when drawn)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from ._output import (
    _console,
)


@contextmanager
def _progress(stream: TextIO, total: int | None) -> Iterator[Callable[..., None]]:
    """Yield `advance(ok, size=0)`; it draws a rich progress bar when `stream` is a tty.

    `size` is the media bytes the image brought, shown next to the count when not zero.
    """
    if not stream.isatty():
        yield lambda ok, size=0: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Ids per second, as rich estimates it."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            shown = "-" if speed is None else f"{speed:,.0f}"
            return Text(f"{shown} ids/s", style="progress.data.speed")

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=_console(stream),
        redirect_stdout=False,
        redirect_stderr=False,
    )
    failed = 0
    media_bytes = 0
    with progress:
        task = progress.add_task("fetching", total=total)

        def advance(ok: bool, size: int = 0) -> None:
            nonlocal failed, media_bytes
            failed += not ok
            media_bytes += size
            notes = [f"{failed:,} failed"] if failed else []
            if media_bytes:
                notes.insert(0, f"{media_bytes / 1e6:,.1f} MB of media")
            description = f"fetching ({', '.join(notes)})" if notes else "fetching"
            progress.update(task, advance=1, description=description)

        yield advance
