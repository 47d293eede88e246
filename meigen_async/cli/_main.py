"""The entry point: parse the arguments, run the command, turn failures into exit statuses."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from ..session import DEFAULT_BASE_URL
from ._args import (
    build_parser,
)
from ._options import (
    BASE_URL_ENV,
    base_url_problem,
)
from ._output import (
    _EXIT_FAILED,
    _EXIT_INTERRUPTED,
    _EXIT_OK,
    _EXIT_USAGE,
    _PROG,
    RICH_HINT,
    CommandError,
    Interrupted,
    _error,
    _print,
    _write,
)


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at devnull so that the exit flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured in a test)
        pass


def _default_base_url(parser: argparse.ArgumentParser) -> str:
    value = os.environ.get(BASE_URL_ENV)
    if not value:
        return DEFAULT_BASE_URL
    problem = base_url_problem(value)
    if problem is not None:
        parser.error(f"${BASE_URL_ENV}: {problem}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: `sys.argv[1:]`); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if hasattr(args, "base_url") and args.base_url is None:
        args.base_url = _default_base_url(parser)
    if args.command == "demo":
        try:
            import rich  # noqa: F401
        except ModuleNotFoundError:
            _error(f"this command needs rich ({RICH_HINT})")
            return _EXIT_USAGE
    try:
        status: int = asyncio.run(args.run(args))
    except CommandError as error:
        _error(error.message)
        return error.status
    except Interrupted:  # the command has said where it stopped
        return _EXIT_INTERRUPTED
    except KeyboardInterrupt:
        if args.command == "serve":
            return _EXIT_OK
        if sys.stderr.isatty():
            _write(sys.stderr, "\r")  # over the terminal's "^C": the message starts the line
        _print(f"{_PROG}: interrupted", sys.stderr)
        return _EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return _EXIT_FAILED
    return status
