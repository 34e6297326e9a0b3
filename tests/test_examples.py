"""Every script in examples/, and every Python example of the README's API section, runs to the
end (exit 0) against a temporary store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import sessions_dir

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("*.py"))


def _api_examples() -> list[str]:
    """The ```python blocks of the README's "## API" section (up to the next "## " heading)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```$", section, re.M | re.S)


API_EXAMPLES = _api_examples()


def test_there_are_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"quickstart.py", "agent_loop.py"} <= names


def _run(script: Path, tmp_path: Path) -> None:
    """Run `script` with a fresh store as the default root and no access to the user's dirs."""
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


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    _run(script, tmp_path)


def test_the_api_section_has_examples() -> None:
    assert len(API_EXAMPLES) >= 4
    for needed in ("list_sessions(10)", "purge_preview(", "async with AsyncFileStore", "except ConcurrentEditError"):
        assert any(needed in code for code in API_EXAMPLES), needed


@pytest.mark.parametrize("code", API_EXAMPLES, ids=[f"api-{i}" for i in range(1, len(API_EXAMPLES) + 1)])
def test_readme_api_example_runs(code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    _run(script, tmp_path)
