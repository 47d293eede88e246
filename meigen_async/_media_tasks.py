"""Who runs media downloads: tasks the session owns.

Apart from `_media` (one image's HTTP) because it is the lifecycle: every download runs in a
task of `OwnedTasks`, which `GallerySession.close()` cancels and waits for, as it does its
fetches, so that no download outlives the session or hangs on a connection it closed.
`iter_media`'s driver, `stream_media`, runs its images in these tasks; it is in `_bulk`,
beside the other bulk drivers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from .errors import MediaTransportError

__all__ = ["MEDIA_TASK_PREFIX", "OwnedTasks", "closed_error"]

MEDIA_TASK_PREFIX = "meigen-async media "
"""Media downloads run in tasks named this prefix plus the image's id."""

_T = TypeVar("_T")


class OwnedTasks:
    """Tasks that their owner's `close` cancels and waits for: none outlives it."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    def start(self, coroutine: Coroutine[Any, Any, _T], name: str) -> asyncio.Task[_T]:
        """Run `coroutine` in a task owned here, named `name`."""
        if self.closed:
            coroutine.close()
            raise RuntimeError("this GallerySession is closed")
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Start no more; cancel every task, and wait until each has ended. Idempotent."""
        self.closed = True
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            # Until each has ended, even one whose cleanup awaits: none may outlive this.
            await asyncio.wait(tasks)


def closed_error(image_id: str) -> MediaTransportError:
    """What a download cancelled by `close` ends in, for whoever waited on it."""
    return MediaTransportError(
        f"the session was closed while the media of image {image_id} were being downloaded",
        image_id=image_id,
    )
