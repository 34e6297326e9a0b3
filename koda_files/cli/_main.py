"""`koda-files`: look at and manage a koda-files store from the shell (also `python -m koda_files`).

A thin layer over the public API. Errors are one line on stderr and exit status 1 (2 for bad
usage); `--debug` shows the traceback instead. `--json` prints machine-readable data on stdout.
This module is the entry point only: the parser is in `_args`, the commands in `_commands`,
`_admin`, `_search` and `_parity`, what they share in `_common`, and the output in `_render`.
"""

from __future__ import annotations

import os
import sys

from ..errors import KodaFilesError
from ._args import build_parser
from ._common import PROG, UsageError, set_colour_mode

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (0 success, 1 a problem found or an error, 2 bad usage)."""
    args = build_parser().parse_args(argv)
    set_colour_mode(args.color)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")
    try:
        status: int = args.handler(args)
        return status
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`koda-files show X | head`): it had all it wanted; stop quietly
        # (and keep the interpreter's last flush from complaining about the closed pipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, (KodaFilesError, ValueError, OSError, LookupError, TypeError)):
            print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        else:
            print(
                f"{PROG}: internal error: {type(exc).__name__}: {_one_line(exc)} (--debug shows the traceback)",
                file=sys.stderr,
            )
        return 1


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())
