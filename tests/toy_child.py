"""A child process for tests/test_children.py: ``python -m tests.toy_child ok|fail|segv|hang|env|import``."""

from __future__ import annotations

import os
import signal
import sys
import time

from converter._proc.children import PARENT_ENV, die_with_parent


def main(how: str) -> int:
    if how == "env":
        before = os.environ.get(PARENT_ENV, "-")
        die_with_parent()
        print(f"before={before} after={os.environ.get(PARENT_ENV, '-')}")
        return 0
    die_with_parent()
    if how == "ok":
        print("toy: done", file=sys.stderr)
        return 0
    if how == "fail":
        print("toy: failing with 3", file=sys.stderr)
        return 3
    if how == "segv":
        print("toy: about to crash natively", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    if how == "hang":
        print("toy: hanging", file=sys.stderr, flush=True)
        time.sleep(600)
    if how == "import":
        try:
            import cwd_module_probe  # noqa: F401  (only in the test's current directory)
        except ImportError:
            return 4
        return 0
    return 9


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
