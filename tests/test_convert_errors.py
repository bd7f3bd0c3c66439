"""Bad input: exit code 2, one line naming the problem and the fix, no traceback, no partial output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from tests.conftest import BIN, ROOT, run_cli


@pytest.fixture(scope="module")
def files(tmp_path_factory, trained_weights) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    (root / "garbage.pt").write_bytes(b"\x00not a checkpoint" * 10)
    state = torch.load(trained_weights, weights_only=True)
    state["fc9.weight"] = state.pop("fc2.weight")
    torch.save(state, root / "renamed.pt")
    (root / "garbage.onnx").write_bytes(b"definitely not protobuf \xff\xfe" * 4)
    good = onnx.helper.make_model(onnx.helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]), opset_imports=[helper.make_opsetid("", 17)])
    blob = good.SerializeToString()
    (root / "truncated.onnx").write_bytes(blob[: len(blob) // 2])
    unsupported = helper.make_model(helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT32, name="to_int"),
         helper.make_node("BitwiseNot", ["xi"], ["yi"], name="flip_bits"),
         helper.make_node("Cast", ["yi"], ["y"], to=TensorProto.FLOAT, name="to_float")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]), opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(unsupported, root / "unsupported.onnx")
    np.save(root / "wrong_shape.npy", np.zeros((10, 3, 28, 28), np.float32))
    (root / "a_file").write_text("x")
    (root / "exists").mkdir()
    return root


CASES = [
    # id, args (FILES/ placeholders), what the one-line message must say
    ("missing-weights", ["mnist_cnn", "--weights", "{f}/nope.pt"], "does not exist"),
    ("corrupt-weights", ["mnist_cnn", "--weights", "{f}/garbage.pt"], "cannot read weights"),
    ("mismatched-state-dict", ["mnist_cnn", "--weights", "{f}/renamed.pt"], "'fc2.weight' is missing"),
    ("unimportable-callable", ["no_such_pkg.models:build", "--input-shape", "1,3"], "cannot import 'no_such_pkg.models'"),
    ("callable-not-a-module", ["tests.toy_models:not_a_module", "--input-shape", "1,3"], "not a torch.nn.Module"),
    ("callable-raises", ["tests.toy_models:broken_factory", "--input-shape", "1,3"], "factory exploded"),
    ("wrong-input-shape", ["mnist_cnn", "--input-shape", "1,3,28,28"], "rejects --input-shape 1,3,28,28"),
    ("bad-input-shape-text", ["mnist_cnn", "--input-shape", "1,a,28"], "not a comma list of integers"),
    ("corrupt-onnx", ["{f}/garbage.onnx"], "is not a valid ONNX model"),
    ("truncated-onnx", ["{f}/truncated.onnx"], "is not a valid ONNX model"),
    ("unsupported-op", ["{f}/unsupported.onnx"], "op BitwiseNot (node 'flip_bits')"),
    ("out-exists", ["mnist_cnn", "--out", "{f}/exists"], "already exists"),
    ("out-unwritable", ["mnist_cnn", "--out", "{f}/a_file/out"], "cannot write to"),
    ("parity-data-missing", ["mnist_cnn", "--parity-data", "{f}/no_such_dir"], "does not exist"),
    ("parity-data-wrong-shape", ["mnist_cnn", "--parity-data", "{f}/wrong_shape.npy"], "holds shape [10, 3, 28, 28]"),
    ("unknown-precision", ["mnist_cnn", "--precision", "fp8"], "unknown precision 'fp8'"),
]


@pytest.mark.parametrize("case,args,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exit_2_one_line_no_output(files, tmp_path, case, args, needle):
    args = [a.replace("{f}", str(files)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    before = set(files.iterdir())
    r = run_cli("convert", *args, "--parity-samples", "10", cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("convert: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
    assert [p for p in tmp_path.iterdir()] == [] or case == "out-unwritable"
    assert set(files.iterdir()) == before  # no partial or temp directories left behind


def test_ctrl_c_mid_conversion_leaves_nothing(tmp_path, trained_weights):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([str(BIN / "convert"), "mnist_cnn", "--weights", str(trained_weights), "--out", str(out),
                             "--precision", "fp32,fp16", "--parity-data", "random", "--parity-samples", "1000"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".out.partial-") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the conversion
    assert proc.poll() is None, "the conversion ended before the interrupt: nothing was tested"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


_SWALLOWED = """
import os, signal, sys
from converter import cli, tensorflow
real = tensorflow._run_onnx2tf

def swallowing(*args, **kwargs):
    try:  # what onnx2tf's bare ``except:`` clauses do to a Ctrl-C that lands inside them
        os.kill(os.getpid(), signal.SIGINT)
        signal.sigtimedwait([], 0.1) if hasattr(signal, "sigtimedwait") else None
        raise RuntimeError("unreachable: SIGINT raised KeyboardInterrupt")
    except:  # noqa: E722
        pass
    return real(*args, **kwargs)

tensorflow._run_onnx2tf = swallowing
sys.exit(cli.main(sys.argv[1:]))
"""


def test_ctrl_c_swallowed_by_onnx2tf_still_interrupts(tmp_path, trained_weights):
    """A Ctrl-C that onnx2tf catches in one of its bare ``except:`` clauses is not lost: the conversion stops at
    the next checkpoint (right after onnx2tf returns) with exit 130, and --out is never written."""
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", _SWALLOWED, "mnist_cnn", "--weights", str(trained_weights),
                           "--out", str(out), "--precision", "fp32", "--parity-samples", "10"],
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 130, (done.returncode, done.stderr[-2000:])
    assert "interrupted" in done.stderr and "Traceback" not in done.stderr and "unreachable" not in done.stderr
    assert list(tmp_path.iterdir()) == []
