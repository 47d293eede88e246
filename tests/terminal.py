"""Running the command line in a pseudo-terminal of a given width, as a user's terminal runs it.

The child gets the terminal as its controlling terminal, so that Ctrl-C typed into it (the byte
0x03) is turned into SIGINT by the terminal itself and echoed as `^C`, as a user's keyboard
does. Everything it writes (stdout and stderr share the terminal) is kept as bytes.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable

from rich.cells import cell_len

CTRL_C = b"\x03"

_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _take_terminal() -> None:
    """In the child: a session of its own, with the terminal on stdin as its controlling one."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _run(
    argv: list[str],
    columns: int,
    env: dict[str, str],
    type_when: Callable[[bytes], bytes | None],
    timeout: float,
) -> tuple[int, bytes]:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = subprocess.Popen(
        argv,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        preexec_fn=_take_terminal,  # a session and the terminal: nothing else in the child
    )
    os.close(follower)
    written = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child has gone and closed its side
                    break
                if not chunk:
                    break
                written += chunk
            elif process.poll() is not None:
                break
            typed = type_when(written)
            if typed:
                os.write(leader, typed)
        else:
            raise TimeoutError(f"still running after {timeout} s: {written[-400:]!r}")
        return process.wait(timeout=timeout), written
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)


async def run_in_terminal(
    *argv: str,
    columns: int = 80,
    env: dict[str, str] | None = None,
    python: list[str] | None = None,
    type_when: Callable[[bytes], bytes | None] = lambda written: None,
    seconds: float = 30,
) -> tuple[int, bytes]:
    """`python -m meigen_async ARGV` in a terminal `columns` wide: its exit status and bytes.

    `type_when(written)` is asked every 50 ms or sooner, with all the bytes so far, for bytes to
    type (`CTRL_C`), or None. `python` replaces `[sys.executable]` (a wrapper that execs it). Killed
    after `seconds`. Run in a thread, so that the test's loop goes on serving its gallery meanwhile.
    """
    environment = {**os.environ, "TERM": "xterm-256color", **(env or {})}
    for name in ("COLUMNS", "LINES"):  # the terminal's own size, not the test runner's
        environment.pop(name, None)
    command = [*(python or [sys.executable]), "-m", "meigen_async", *argv]
    return await asyncio.to_thread(_run, command, columns, environment, type_when, seconds)


def frames(written: bytes) -> list[str]:
    """The progress frames in `written`, escape sequences taken out, in the order drawn.

    rich draws each frame over the last: a carriage return, "erase the line", then the line.
    """
    text = written.decode("utf-8", "replace")
    drawn = [re.split(r"[\r\n]", part)[0] for part in text.split("\x1b[2K")[1:]]
    return [_ESCAPE.sub("", frame) for frame in drawn]


def plain(written: bytes) -> str:
    """`written` as text, escape sequences taken out."""
    return _ESCAPE.sub("", written.decode("utf-8", "replace"))


def cells(line: str) -> int:
    """The terminal cells `line` takes."""
    return cell_len(line)
