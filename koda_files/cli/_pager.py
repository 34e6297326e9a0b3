"""The pager of `koda-files`: long output on a terminal goes through `$PAGER` (default `less -FRX`).

Only when stdout is a terminal and neither `--no-pager` nor `--json` was given; an empty `$PAGER`
or `cat` means none. The pager starts at the first write, so a command that prints nothing (or
shows progress first) never flashes an empty pager. Quitting the pager early ends the command
quietly; Ctrl-C while it shows is the pager's to handle.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

__all__ = ["paged"]

DEFAULT_PAGER = "less -FRX"


class _LazyPager(io.TextIOBase):
    """A text stream that starts the pager on its first write and forwards everything to it."""

    def __init__(self, command: list[str], before_start: Callable[[], None], real: Any) -> None:
        self._command = command
        self._before_start = before_start
        self._real = real
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: Any = None

    def isatty(self) -> bool:
        return True  # it shows on the terminal: colour and widths are decided as for one

    def write(self, text: str) -> int:
        if self._out is None:
            self._before_start()
            env = dict(os.environ)
            env.setdefault("LESS", "FRX")
            import subprocess  # here, not at start-up: output to a pipe or file never needs it

            try:
                self.proc = subprocess.Popen(self._command, stdin=subprocess.PIPE, env=env)
            except OSError as exc:  # no such pager: show the output without one
                print(f"koda-files: warning: pager {self._command[0]!r}: {exc.strerror}", file=sys.stderr)
                self._out = self._real
                return self._out.write(text)  # type: ignore[no-any-return]
            assert self.proc.stdin is not None
            self._out = io.TextIOWrapper(self.proc.stdin, encoding="utf-8", errors="replace")
        return self._out.write(text)  # type: ignore[no-any-return]

    def flush(self) -> None:
        if self._out is not None:
            self._out.flush()

    def finish(self) -> None:
        """Close the pipe and wait for the pager to be quit (Ctrl-C meanwhile is the pager's)."""
        if self.proc is None or self._out is None:
            return
        with contextlib.suppress(BrokenPipeError, OSError):
            self._out.close()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.proc.wait()
        finally:
            signal.signal(signal.SIGINT, previous)


def pager_command(args: Any) -> list[str] | None:
    """The pager to use for this run, or None."""
    if getattr(args, "no_pager", False) or getattr(args, "json", False):
        return None
    try:
        if not sys.stdout.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    command = os.environ.get("PAGER", DEFAULT_PAGER).strip()
    if not command or command == "cat":
        return None
    return shlex.split(command)


@contextlib.contextmanager
def paged(args: Any, before_start: Callable[[], None] = lambda: None) -> Iterator[None]:
    """While active, `sys.stdout` goes to the pager (if one is wanted); `before_start` runs first."""
    command = pager_command(args)
    if command is None:
        yield
        return
    real = sys.stdout
    stream = _LazyPager(command, before_start, real)
    sys.stdout = stream
    try:
        yield
        stream.flush()
    except BrokenPipeError:
        pass  # the pager was quit before the end: nothing more is wanted
    except KeyboardInterrupt:
        if stream.proc is None:
            raise
    finally:
        sys.stdout = real
        stream.finish()
