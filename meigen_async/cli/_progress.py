"""The progress bar `bulk` draws on a terminal (rich, imported only when drawn)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from ._output import (
    _console,
)


@contextmanager
def _progress(
    stream: TextIO, total: int | None, *, unit: str = "ids", verb: str = "fetching"
) -> Iterator[Callable[..., None]]:
    """Yield `advance(ok, size=0, samples=0)`; it draws a rich progress bar when `stream` is a tty.

    Each call counts one of `unit` (`bulk`'s ids, `export`'s posts). `size` is the media bytes
    it brought and `samples` the pictures it gave (`export`), shown next to the count.
    """
    if not stream.isatty():
        yield lambda ok, size=0, samples=0: None
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
        """Units per second, as rich estimates it."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            shown = "-" if speed is None else f"{speed:,.0f}"
            return Text(f"{shown} {unit}/s", style="progress.data.speed")

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
    pictures = 0
    with progress:
        task = progress.add_task(verb, total=total)

        def advance(ok: bool, size: int = 0, samples: int = 0) -> None:
            nonlocal failed, media_bytes, pictures
            failed += not ok
            media_bytes += size
            pictures += samples
            notes = [f"{failed:,} failed"] if failed else []
            if media_bytes:
                notes.insert(0, f"{media_bytes / 1e6:,.1f} MB of media")
            if pictures:
                notes.insert(0, f"{pictures:,} samples")
            description = f"{verb} ({', '.join(notes)})" if notes else verb
            progress.update(task, advance=1, description=description)

        yield advance
