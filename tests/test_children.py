"""converter._proc.children: the one way a child process is started, waited for and reported."""

from __future__ import annotations

import os
import sys

import pytest

from converter._proc import children

#: A child that prints its argv and the die-with-parent variable, then ends as argv[1] says.
_TOY = "tests.toy_child"


@pytest.mark.parametrize("how,code,reason,last", [
    ("ok", 0, "exit 0", "toy: done"),
    ("fail", 3, "exit 3", "toy: failing with 3"),
    ("segv", -11, "signal SIGSEGV", "toy: about to crash natively"),
])
def test_run_reports_exit_and_last_stderr_line(how, code, reason, last) -> None:
    got, line = children.run(_TOY, how, timeout=60)
    assert got == code and line == last
    assert children.exit_reason(got) == reason


def test_a_child_past_its_timeout_is_killed() -> None:
    got, line = children.run(_TOY, "hang", timeout=2)
    assert got is None and line == "toy: hanging"
    assert children.exit_reason(got, 2) == "timed out after 2 s"


def test_the_parent_pid_reaches_the_child_and_not_its_children(tmp_path) -> None:
    child = children.start(_TOY, "env", stdout=True)
    out, _ = child.proc.communicate(timeout=60)
    child.close()
    seen = dict(line.split("=", 1) for line in out.decode().split())
    assert seen["before"] == str(os.getpid())  # what the spawner set
    assert seen["after"] == "-"  # die_with_parent() took it: a grandchild would not inherit a wrong pid


def test_the_current_directory_is_importable_only_when_asked(tmp_path, monkeypatch) -> None:
    (tmp_path / "cwd_module_probe.py").write_text("")
    monkeypatch.chdir(tmp_path)
    for import_cwd, expected in ((False, 4), (True, 0)):
        got, _ = children.run(_TOY, "import", timeout=60, import_cwd=import_cwd)
        assert got == expected, (import_cwd, got)
    assert sys.path[0] != str(tmp_path)
