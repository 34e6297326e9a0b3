"""Fixtures: temporary store roots only; the user's data dir is never touched."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from _cli import cli, sessions  # noqa: F401  (fixtures of the command-line tests)

from koda_files import AsyncFileStore, Durability, FileStore

DURABILITIES: tuple[Durability, ...] = ("flush", "fsync")


@pytest.fixture(autouse=True)
def default_root(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every default location at a temporary directory, for every test.

    `KODA_FILES_DIR` is the store's own override; `XDG_DATA_HOME` and `HOME` are where
    `platformdirs` would look otherwise, so even a test that unsets `KODA_FILES_DIR`
    cannot reach the real data dir.
    """
    base = tmp_path_factory.mktemp("default-root")
    monkeypatch.setenv("KODA_FILES_DIR", str(base / "koda-files-dir"))
    monkeypatch.setenv("XDG_DATA_HOME", str(base / "xdg-data-home"))
    monkeypatch.setenv("HOME", str(base / "home"))
    return base / "koda-files-dir"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A store root that does not exist yet: the store creates it."""
    return tmp_path / "store-root"


@pytest.fixture(params=DURABILITIES)
def durability(request: pytest.FixtureRequest) -> Durability:
    value = request.param
    assert value in DURABILITIES
    return cast(Durability, value)


@pytest.fixture
def store(root: Path, durability: Durability) -> FileStore:
    """A FileStore on a fresh root, once per durability mode."""
    return FileStore(root=root, durability=durability)


@pytest.fixture
def fstore(root: Path) -> FileStore:
    """A FileStore on a fresh root in the default ("flush") mode, for the heavier tests."""
    return FileStore(root=root)


@pytest.fixture
def astore(root: Path) -> AsyncFileStore:
    """An AsyncFileStore on a fresh root."""
    return AsyncFileStore(root=root)
