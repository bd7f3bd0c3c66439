"""train-reference on bad input: one line on stderr, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from reference_models.errors import UsageError
from reference_models.staging import check_out_dir, staged_dir
from reference_models.testing import run_cli


def _corrupt_idx_dir(tmp: Path) -> Path:
    bad = tmp / "corrupt"
    bad.mkdir()
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 9))
    (bad / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x05"))
    return bad


def _existing_out(tmp: Path) -> Path:
    out = tmp / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    return out


def _out_under_a_file(tmp: Path) -> Path:
    (tmp / "a-file").write_text("")
    return tmp / "a-file" / "out"


# (case id, extra args, how to build --out from tmp (None: tmp/out), words the error line must contain)
CASES = [
    ("unknown-framework", ["--framework", "jax"], None, "invalid choice: 'jax'"),
    ("epochs-zero", ["--framework", "torch", "--epochs", "0"], None, "--epochs must be a positive"),
    ("epochs-negative", ["--framework", "keras", "--epochs", "-3"], None, "--epochs must be a positive"),
    ("epochs-not-int", ["--framework", "torch", "--epochs", "ten"], None, "invalid int value"),
    ("batch-zero", ["--framework", "torch", "--batch-size", "0"], None, "--batch-size must be"),
    ("missing-data-dir", ["--framework", "torch", "--train-data", "/nonexistent/mnist"], None, "does not exist"),
    ("empty-data-dir", ["--framework", "keras", "--eval-data", "{tmp}"], None, "no MNIST IDX files"),
    ("corrupt-idx", ["--framework", "torch", "--eval-data", "{corrupt}"], None, "corrupt IDX file"),
    ("existing-out", ["--framework", "torch"], _existing_out, "was not written by this tool"),
    ("unwritable-out", ["--framework", "keras"], _out_under_a_file, "cannot write to"),
    ("torch-flag-on-keras", ["--framework", "keras", "--compile"], None, "--compile does not apply"),
    ("keras-flag-on-torch", ["--framework", "torch", "--strategy", "mirrored"], None, "--strategy does not apply"),
    ("multi-worker-no-tf-config", ["--framework", "keras", "--strategy", "multi-worker", "--epochs", "1",
                                   "--train-data", "embedded", "--eval-data", "embedded"], None, "needs TF_CONFIG with"),
    ("missing-out", ["--framework", "torch"], "omit", "--out"),
]


@pytest.mark.parametrize("args, make_out, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path: Path, args, make_out, words: str) -> None:
    corrupt = _corrupt_idx_dir(tmp_path)
    args = [a.format(tmp=tmp_path / "empty", corrupt=corrupt) for a in args]
    (tmp_path / "empty").mkdir()
    out = None if make_out == "omit" else (make_out(tmp_path) if make_out else tmp_path / "out")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    run = run_cli(args, out, env={"TF_CONFIG": ""} if "multi-worker" in args else None, timeout=120)
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("train-reference: error:") and words in lines[0], lines[0]
    assert "Traceback" not in run.stderr and run.stdout == ""
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing created, nothing removed


def test_staged_dir_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    out = check_out_dir(tmp_path / "out", force=False)
    with pytest.raises(RuntimeError):
        with staged_dir(out) as staging:
            (staging / "half.bin").write_bytes(b"x")
            raise RuntimeError("training crashed")
    assert list(tmp_path.iterdir()) == []


def test_staged_dir_replaces_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(UsageError):
        check_out_dir(out, force=False)
    with pytest.raises(UsageError, match="not written by this tool"):  # --force never deletes a user's directory
        check_out_dir(out, force=True)
    (out / "metrics.json").write_text("{}")  # a previous run's output: --force may replace it
    with staged_dir(check_out_dir(out, force=True)) as staging:
        (staging / "new.txt").write_text("new")
        assert (out / "old.txt").exists()  # the old set survives until the new one is complete
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
