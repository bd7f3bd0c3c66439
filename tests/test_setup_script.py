"""scripts/setup: a disk too full for the pinned stack is one line and exit 4 before anything is written; an
installed environment is never checked again (the disk check runs only before an install)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _setup(root: Path, need_gib: int, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SETUP_NEED_GIB": str(need_gib), "TMPDIR": str(tmp)}
    return subprocess.run(["bash", str(root / "scripts" / "setup")], capture_output=True, text=True, env=env,
                          timeout=120)


def test_full_disk_is_one_line_and_writes_nothing(tmp_path):
    root = tmp_path / "clone"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup", root / "scripts" / "setup")
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, root / name)
    done = _setup(root, 10**7, tmp_path)  # ten million GiB: no disk has that much free
    assert done.returncode == 4, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("setup: only ") and "GiB free on the disk of" in lines[0], lines
    assert "run scripts/setup again" in lines[0]
    assert not (root / ".venv").exists()


@pytest.mark.skipif(not (ROOT / ".venv" / ".torch2tf-installed").is_file(), reason="runs where scripts/setup installed")
def test_installed_environment_skips_the_disk_check(tmp_path):
    done = _setup(ROOT, 10**7, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "GiB free" not in done.stderr
