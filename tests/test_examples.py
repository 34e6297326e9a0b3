"""Every script in examples/ runs to the end (exit 0) against a temporary store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import sessions_dir

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"quickstart.py", "agent_loop.py"} <= names


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"
    env = dict(os.environ)
    env.update(
        KODA_FILES_DIR=str(root),
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
    )
    r = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert sessions_dir(root).is_dir() and any(sessions_dir(root).iterdir())  # it wrote to the temp store
