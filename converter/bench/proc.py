"""Run one child command and measure it: wall time, CPU time and peak memory of its whole process tree.

Every benchmark in ``converter.bench.core*`` runs its candidates as separate processes so that threads, caches
and allocator state of one candidate never leak into another. Two memory figures are kept because they
answer different questions:

- ``peak_tree_rss``: the largest *sum* of RSS over the child and all its descendants, polled every
  ``poll_s`` (what the machine must have free; a short spike between polls can be missed);
- ``max_rss``: ``ru_maxrss`` from ``wait4`` — the kernel's exact peak of the largest single process in
  the tree (the child, or any descendant it waited for).

CPU time (user + system, of the child and its reaped descendants) is reported beside wall time: on a
machine shared with other jobs it is the less noisy of the two.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

GIB = 1024 ** 3


@dataclass
class ProcResult:
    """One finished child: exit code, seconds, bytes, and the last lines of its output on failure."""

    name: str
    returncode: int
    wall_s: float
    cpu_s: float
    peak_tree_rss: int
    max_rss: int
    tail: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def run_measured(name: str, argv: Sequence[str], *, cwd: str | Path | None = None, env: dict | None = None,
                 poll_s: float = 0.02, timeout_s: float = 1800.0) -> ProcResult:
    """Run ``argv`` to completion; never raises for a non-zero exit (the result says so)."""
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f".bench-{os.getpid()}-{time.monotonic_ns()}.log"
    with open(log, "w+b") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = _poll_until_exit(proc, poll_s, start + timeout_s)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    log.unlink(missing_ok=True)
    tail = "" if proc.returncode == 0 else "\n".join(text.strip().splitlines()[-8:])
    return ProcResult(name, proc.returncode, wall, usage.ru_utime + usage.ru_stime, peak,
                      usage.ru_maxrss * 1024, tail)


def _poll_until_exit(proc: subprocess.Popen, poll_s: float, deadline: float) -> int:
    """Sum the RSS of the tree until the child becomes a zombie; kill it (and only it) past ``deadline``."""
    peak = 0
    try:
        root = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return 0
    while True:
        try:
            if root.status() == psutil.STATUS_ZOMBIE:
                return peak
            total = root.memory_info().rss
            for child in root.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total)
        except psutil.NoSuchProcess:
            return peak
        if time.perf_counter() > deadline:
            proc.kill()
            return peak
        time.sleep(poll_s)


@dataclass
class Summary:
    """Median over repeats of one candidate, plus the worst memory seen and every failure's tail."""

    name: str
    runs: int
    failures: int
    wall_s_median: float
    wall_s_all: list[float]
    cpu_s_median: float
    peak_tree_rss: int
    max_rss: int
    first_failure: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def summarise(name: str, results: list[ProcResult]) -> Summary:
    """Median wall/CPU time of the successful runs (all runs when none succeeded); max memory of all."""
    ok = [r for r in results if r.returncode == 0] or results
    failed = [r for r in results if r.returncode != 0]
    return Summary(
        name=name, runs=len(results), failures=len(failed),
        wall_s_median=statistics.median(r.wall_s for r in ok), wall_s_all=[round(r.wall_s, 3) for r in results],
        cpu_s_median=statistics.median(r.cpu_s for r in ok),
        peak_tree_rss=max(r.peak_tree_rss for r in results), max_rss=max(r.max_rss for r in results),
        first_failure=failed[0].tail if failed else "",
    )


def rotated(names: Sequence[str], round_index: int) -> list[str]:
    """The candidates in a different order each round, so none always runs first (cold caches) or last."""
    k = round_index % len(names)
    return list(names[k:]) + list(names[:k])
