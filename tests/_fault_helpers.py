"""Helpers of the fault-injection tests: real child processes, real SIGKILL, Nth-call I/O errors."""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import select
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from koda_files._files import fileops as fileops

STRESS = os.environ.get("KODA_FILES_STRESS") == "1"


def scaled(default: int, stress: int) -> int:
    """`default` normally, `stress` under KODA_FILES_STRESS=1."""
    return stress if STRESS else default


# ── child processes ──


@dataclass
class Child:
    """A forked child; `fd` is the read end of a pipe the child writes to."""

    pid: int
    fd: int
    _buf: bytearray = field(default_factory=bytearray)
    status: int | None = None

    def read_until(self, marker: bytes, timeout: float = 30.0) -> None:
        """Block until the child has written `marker` (it stays in the buffer)."""
        deadline = time.monotonic() + timeout
        while marker not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"child {self.pid} did not write {marker!r} in {timeout}s")
            if _readable(self.fd, left):
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    raise AssertionError(f"child {self.pid} exited before writing {marker!r}")
                self._buf += chunk

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float = 60.0) -> int:
        """Reap the child; returns its wait status. Kills it if it outlives `timeout`."""
        if self.status is not None:
            return self.status
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                return status
            if time.monotonic() > deadline:
                self.kill()
                _, status = os.waitpid(self.pid, 0)
                raise AssertionError(f"child {self.pid} hung and was killed")
            time.sleep(0.001)

    def output(self) -> bytes:
        """Everything the child wrote (call after `wait`)."""
        while True:
            if not _readable(self.fd, 0):
                break
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                break
            self._buf += chunk
        os.close(self.fd)
        self.fd = -1
        return bytes(self._buf)

    def finish(self) -> bytes:
        """Wait for a normal exit (status 0) and return the output."""
        status = self.wait()
        out = self.output()
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, out[-2000:])
        return out


def _readable(fd: int, timeout: float) -> bool:
    poller = select.poll()  # (not select.select: descriptors above 1024 are fine here)
    poller.register(fd, select.POLLIN | select.POLLHUP)
    return bool(poller.poll(timeout * 1000))


def fork_child(body: Callable[[int], None]) -> Child:
    """Run `body(write_fd)` in a forked child that exits 0 on success, 1 (traceback to the pipe) else."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.close(rfd)
            body(wfd)
        except BaseException:
            code = 1
            with contextlib.suppress(OSError):
                os.write(wfd, b"\nERROR\n" + traceback.format_exc().encode())
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
            os._exit(code)
    os.close(wfd)
    return Child(pid, rfd)


def run_in_child(body: Callable[[], Any]) -> Any:
    """Run `body()` in a forked child and return its (pickled) result; re-raise its error text."""

    def wrapper(wfd: int) -> None:
        result = body()
        os.write(wfd, b"OK" + pickle.dumps(result))

    out = fork_child(wrapper).finish()
    assert out.startswith(b"OK"), out.decode(errors="replace")
    return pickle.loads(out[2:])


def send(fd: int, text: str) -> None:
    os.write(fd, text.encode() + b"\n")


def copy_root(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, symlinks=True)
    return dest


# ── the tree under a root ──

STORE_NAMES = {"koda-files.json", "sessions", "messages.jsonl", "metadata.json", "todo.md", "quarantine.jsonl"}


def stray_entries(root: Path, template: Path | None = None) -> list[str]:
    """Non-dot entries that are not the store's own files, session directories, or in `template`."""
    out: list[str] = []
    sessions = root / "sessions"
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if any(part.startswith(".") for part in here.relative_to(root).parts):
            continue
        for name in dirnames + filenames:
            if name.startswith("."):
                continue
            if here == sessions and name in dirnames:
                continue  # a session directory
            if name in STORE_NAMES:
                continue
            if template is not None and (template / (here / name).relative_to(root)).exists():
                continue
            out.append(str(here / name))
    return out


def leftovers(root: Path) -> list[str]:
    """Temporary files and half-made / half-deleted session directories anywhere under root."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name.endswith(".tmp") or name.startswith((".new-", ".deleted-")):
                out.append(os.path.join(dirpath, name))
    return out


# ── injected I/O errors ──

# The fileops functions every write, fsync, rename and mkdir of the store goes through.
FAULT_POINTS = ("write_all", "sync", "fsync_dir", "rename", "make_dir", "write_at", "_create_exclusive")


class _OsProxy:
    """Stands in for `os` inside fileops so `atomic_write`'s own `os.fsync` can fail too."""

    def __init__(self, hook: Callable[[str], None]) -> None:
        self._hook = hook

    def fsync(self, fd: int) -> None:
        self._hook("os.fsync")
        os.fsync(fd)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


@dataclass
class FaultPlan:
    """Fail the Nth call (1-based) of any fault point with `OSError(err)`; count every call."""

    fail_at: int
    err: int
    calls: list[str] = field(default_factory=list)
    fired: str | None = None

    def hit(self, name: str) -> None:
        self.calls.append(name)
        if len(self.calls) == self.fail_at and self.fired is None:
            self.fired = name
            raise OSError(self.err, f"injected {errno.errorcode[self.err]} in {name}")


@contextlib.contextmanager
def inject_faults(plan: FaultPlan) -> Iterator[FaultPlan]:
    """Patch every fault point, in fileops and wherever a koda_files module imported it by name."""
    modules = [m for name, m in sys.modules.items() if name.startswith("koda_files") and m is not None]
    with pytest.MonkeyPatch.context() as mp:
        for point in FAULT_POINTS:
            original = getattr(fileops, point)

            def wrapped(*args: Any, _orig: Any = original, _name: str = point, **kwargs: Any) -> Any:
                plan.hit(_name)
                return _orig(*args, **kwargs)

            for module in modules:
                if getattr(module, point, None) is original:
                    mp.setattr(module, point, wrapped)
        mp.setattr(fileops, "os", _OsProxy(plan.hit))
        yield plan


def count_fault_points(op: Callable[[], object]) -> int:
    """How many fault-point calls `op` makes when nothing fails."""
    plan = FaultPlan(fail_at=0, err=errno.EIO)
    with inject_faults(plan):
        op()
    return len(plan.calls)


__all__ = [
    "FAULT_POINTS",
    "STRESS",
    "Child",
    "FaultPlan",
    "copy_root",
    "count_fault_points",
    "fork_child",
    "inject_faults",
    "leftovers",
    "run_in_child",
    "scaled",
    "send",
    "stray_entries",
]
