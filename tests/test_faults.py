"""Bad input and faults, one table: each row is a ``convert`` command, its exit code and a message fragment.

Every row also checks what a user relies on whatever went wrong: no traceback, exactly one ``convert: error:``
line for exit 2, nothing created or removed beside ``--out`` (no ``.OUT.partial-*``), the input files untouched,
and no code run from a crafted file (``PWNED`` never appears). Exit codes: 0 pass, 1 parity failed or a changed
artifact, 2 bad input or a failed conversion. Interrupts and concurrent runs are tested below the table.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from tests import toy_models
from tests.conftest import BIN, ROOT, run_cli

TINY = ["tests.toy_models:tiny_linear", "--input-shape", "1,4"]
TEXT = ["tests.toy_models:tiny_text", "--input-shape", "1,12", "--input-shape", "1,12"]
INT64_TWICE = ["--input-dtype", "int64", "--input-dtype", "int64"]


class _Pwn:
    """Unpickling this runs ``touch PWNED`` in the current directory: what a crafted model file does."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _onnx(path: Path, nodes, opsets, ir_version: int = 8) -> None:
    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]), opset_imports=opsets)
    model.ir_version = ir_version
    onnx.save(model, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory, trained_weights) -> Path:
    """Crafted inputs, built here: broken, hostile and edge-case files."""
    root = tmp_path_factory.mktemp("faults")
    (root / "garbage.pt").write_bytes(b"\x00not a checkpoint" * 10)
    (root / "empty.pt").write_bytes(b"")
    state = torch.load(trained_weights, weights_only=True)
    renamed = dict(state)
    renamed["fc9.weight"] = renamed.pop("fc2.weight")
    torch.save(renamed, root / "renamed.pt")
    (root / "garbage.onnx").write_bytes(b"definitely not protobuf \xff\xfe" * 4)
    relu = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    _onnx(root / "good.onnx", relu, [helper.make_opsetid("", 17)])
    blob = (root / "good.onnx").read_bytes()
    (root / "truncated.onnx").write_bytes(blob[: len(blob) // 2])
    _onnx(root / "opset99.onnx", relu, [helper.make_opsetid("", 99)])
    _onnx(root / "opset1.onnx", relu, [helper.make_opsetid("", 1)])
    _onnx(root / "custom_op.onnx", [helper.make_node("MyOp", ["x"], ["y"], domain="com.example", name="mine")],
          [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    _onnx(root / "unsupported.onnx", [
        helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT32, name="to_int"),
        helper.make_node("BitwiseNot", ["xi"], ["yi"], name="flip_bits"),
        helper.make_node("Cast", ["yi"], ["y"], to=TensorProto.FLOAT, name="to_float")], [helper.make_opsetid("", 18)])
    _pt2_files(root)
    np.save(root / "wrong_shape.npy", np.zeros((10, 3, 28, 28), np.float32))
    np.save(root / "calib_empty.npy", np.zeros((0, 4), np.float32))
    np.save(root / "calib_nan.npy", np.full((20, 4), np.nan, np.float32))
    np.save(root / "calib_huge.npy", np.full((20, 4), 1e300))
    np.save(root / "calib_wrong_shape.npy", np.zeros((20, 5), np.float32))
    np.save(root / "calib.npy", np.random.default_rng(0).standard_normal((200, 4)).astype(np.float32))
    np.save(root / "parity_empty.npy", np.zeros((0, 1, 28, 28), np.float32))
    parity_nan = np.zeros((10, 1, 28, 28), np.float32)
    parity_nan[3, 0, 5, 5] = np.inf
    np.save(root / "parity_nan.npy", parity_nan)
    nan_weight = dict(state)
    nan_weight["fc2.weight"] = nan_weight["fc2.weight"].clone()
    nan_weight["fc2.weight"][0, 0] = float("nan")
    torch.save(nan_weight, root / "nan_weight.pt")
    torch.save({"weight": _Pwn()}, root / "evil.pt")  # a crafted checkpoint
    torch.save(toy_models.tiny_linear(), root / "whole_model.pt")  # torch.save(model): a pickled nn.Module
    np.save(root / "evil.npy", np.array([_Pwn()], dtype=object), allow_pickle=True)
    (root / "a_file").write_text("x")
    (root / "exists").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.14 deprecates torch.jit: users still ship such files
        traced = torch.jit.trace(toy_models.DictOutputs().eval(), torch.randn(1, 4), strict=False)
        torch.jit.save(traced, root / "dict_out.torchscript.pt")
        torch.jit.save(torch.jit.trace(toy_models.tiny_linear().eval(), torch.randn(1, 4)), root / "lin.torchscript.pt")
    return root


def _pt2_files(root: Path) -> None:
    """``good.pt2`` (a real export) and ``evil.pt2``: every member copied, the pickled sample inputs replaced by
    an object that runs ``touch PWNED`` when unpickled."""
    module = torch.nn.Linear(4, 3).eval()
    torch.export.save(torch.export.export(module, (torch.randn(1, 4),)), root / "good.pt2")
    payload = io.BytesIO()
    torch.save(_Pwn(), payload)
    with zipfile.ZipFile(root / "good.pt2") as good, zipfile.ZipFile(root / "evil.pt2", "w") as evil:
        for info in good.infolist():
            data = good.read(info.filename)
            evil.writestr(info, payload.getvalue() if info.filename.endswith("sample_inputs/model.pt") else data)


@pytest.fixture(scope="module")
def converted(files, tmp_path_factory) -> Path:
    """A finished conversion of the tiny model (fp32 + full int8) for the ``--check`` and ``--force`` rows."""
    out = tmp_path_factory.mktemp("converted") / "out"
    done = run_cli("convert", *TINY, "--precision", "fp32,int8", "--calibration-data", files / "calib.npy",
                   "--parity-samples", "16", "--out", out)
    assert done.returncode == 0, done.stderr
    return out


# ------------------------------------------------------------------------------------------------ setups
# Each prepares the row's working directory ``tmp`` (the command's cwd) and may return another cwd.

def _copy_converted(tmp: Path, files: Path, converted: Path) -> None:
    shutil.copytree(converted, tmp / "out")


def _manifest_edit(change: Callable[[dict, Path], None]) -> Callable:
    def setup(tmp: Path, files: Path, converted: Path) -> None:
        _copy_converted(tmp, files, converted)
        manifest = json.loads((tmp / "out" / "manifest.json").read_text())
        change(manifest, files)
        (tmp / "out" / "manifest.json").write_text(json.dumps(manifest))
    return setup


def _malformed(tmp: Path, files: Path, converted: Path) -> None:
    _copy_converted(tmp, files, converted)
    (tmp / "out" / "manifest.json").write_text("{not json")


def _flip_bit(name: str) -> Callable:
    def setup(tmp: Path, files: Path, converted: Path) -> None:
        _copy_converted(tmp, files, converted)
        path = tmp / "out" / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 1
        path.write_bytes(bytes(data))
    return setup


def _delete(name: str) -> Callable:
    def setup(tmp: Path, files: Path, converted: Path) -> None:
        _copy_converted(tmp, files, converted)
        (tmp / "out" / name).unlink()
    return setup


def _float_file_named_int8(tmp: Path, files: Path, converted: Path) -> None:
    """The int8 file replaced by the float one, its hash updated: only the quantisation check can catch it."""
    from converter._convert.artifacts import digest

    _copy_converted(tmp, files, converted)
    out = tmp / "out"
    shutil.copy(out / "model_fp32.tflite", out / "model_int8.tflite")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["artifacts"]["tflite_int8"]["sha256"] = digest(out / "model_int8.tflite")
    (out / "manifest.json").write_text(json.dumps(manifest))


def _hostile_module(tmp: Path, files: Path, converted: Path) -> None:
    """A manifest naming ``evilmod:build``, with evilmod.py in --out and in the current directory."""
    _manifest_edit(lambda m, f: m["source"].update(spec="evilmod:build", weights=None))(tmp, files, converted)
    for where in (tmp, tmp / "out"):
        (where / "evilmod.py").write_text("import os\nos.system('touch PWNED')\ndef build():\n    raise SystemExit\n")


def _user_data(tmp: Path, files: Path, converted: Path) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / "important.txt").write_text("the user's own file")


def _weights_inside_out(tmp: Path, files: Path, converted: Path) -> None:
    _copy_converted(tmp, files, converted)
    torch.save(torch.nn.Linear(4, 3).state_dict(), tmp / "out" / "weights.pt")


def _calibration_inside_out(tmp: Path, files: Path, converted: Path) -> None:
    _copy_converted(tmp, files, converted)
    shutil.copy(files / "calib.npy", tmp / "out" / "calib.npy")


def _inside_out(tmp: Path, files: Path, converted: Path) -> Path:
    _copy_converted(tmp, files, converted)
    return tmp / "out"


def _stale_partial(tmp: Path, files: Path, converted: Path) -> None:
    """What a run killed with SIGKILL leaves: a staging directory named after a process that no longer exists."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp / f".out.partial-{dead.pid}-abcd1234"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half")


def _empty_idx(tmp: Path, files: Path, converted: Path) -> None:
    """Valid IDX files (magic, big-endian dims) holding 0 images and 0 labels."""
    import struct

    (tmp / "idx").mkdir()
    (tmp / "idx" / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x0803, 0, 28, 28))
    (tmp / "idx" / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, 0))


@dataclass(frozen=True)
class Row:
    id: str
    args: list[str]
    code: int
    needle: str
    setup: Callable | None = None


ROWS = [
    # --- code execution from model files (trust 1)
    Row("pt2-pickle-refused", ["{f}/evil.pt2", "--input-shape", "1,4"], 2, "holds a pickled Python object (posix.system)"),
    Row("pt2-recorded-pickle-refused", ["--out", "{out}", "--check"], 2, "holds a pickled Python object",
        _manifest_edit(lambda m, f: m["source"].update(spec=str(f / "evil.pt2"), weights=None))),
    Row("check-never-imports-from-out-or-cwd", ["--out", "{out}", "--check"], 2,
        "cannot import 'evilmod': ModuleNotFoundError: No module named 'evilmod' — a module recorded in manifest.json "
        "is never imported from the current directory: name the model", _hostile_module),
    Row("torchscript-file-returning-a-dict", ["{f}/dict_out.torchscript.pt", "--input-shape", "1,4"], 2,
        "the TorchScript model returns a Dict[str, Tensor], which neither ONNX exporter takes from a TorchScript file "
        "— trace it returning a tuple (Hugging Face: return_dict=False)"),
    Row("pt-crafted-pickle-refused", ["{f}/evil.pt", "--input-shape", "1,4"], 2,
        "is a pickle (torch.save of a whole model?) that asks for the Python object posix.system; unpickling it could "
        "run code from the file, so it is never loaded — save the weights alone"),
    Row("pt-state-dict-as-model", ["{f}/renamed.pt", "--input-shape", "1,4"], 2,
        "is a state_dict, not a TorchScript model — pass the architecture"),
    Row("pt-whole-model-pickle-refused", ["{f}/whole_model.pt", "--input-shape", "1,4"], 2,
        "asks for the Python object tests.toy_models.TinyLinear"),
    Row("weights-crafted-pickle-refused", ["mnist_cnn", "--weights", "{f}/evil.pt"], 2,
        "are a pickle that asks for the Python object posix.system; unpickling it could run code from the file, so "
        "it is never loaded — save the state_dict alone: torch.save(model.state_dict(), PATH)"),
    Row("parity-data-pickle-refused", ["mnist_cnn", "--parity-data", "{f}/evil.npy"], 2,
        "holds Python objects (a pickle, which is never loaded)"),
    Row("pt2-real-export-still-loads", ["{f}/good.pt2", "--input-shape", "1,4", "--precision", "fp32"], 0, "wrote"),
    # --- data loss (trust 2)
    Row("force-over-user-directory", [*TINY, "--force"], 2, "was not written by this tool", _user_data),
    Row("force-over-own-weights", ["mnist_cnn", "--weights", "{out}/weights.pt", "--force"], 2,
        "contains the run's input", _weights_inside_out),
    Row("force-over-own-calibration", [*TINY, "--calibration-data", "{out}/calib.npy", "--force"], 2,
        "contains the run's input", _calibration_inside_out),
    Row("force-out-is-cwd", [*TINY, "--out", ".", "--force"], 2, "is the current directory", _inside_out),
    Row("out-exists-empty", ["mnist_cnn", "--out", "{f}/exists"], 2,
        "exists (empty) and this tool replaces only its own output — remove the empty directory (rmdir)"),
    Row("user-directory-without-force", [*TINY], 2,
        "was not written by this tool (it holds no manifest.json that this tool wrote); --force replaces only its "
        "own output — "
        "choose another --out", _user_data),
    Row("own-output-without-force", [*TINY], 2,
        "already exists (this tool's output) — pass --force (force=True in the API) to overwrite it", _copy_converted),
    Row("out-unwritable", ["mnist_cnn", "--out", "{f}/a_file/out"], 2, "cannot write to"),
    Row("stale-partial-swept", ["mnist_cnn", "--input-shape", "1,3,28,28"], 2, "rejects --input-shape",
        _stale_partial),
    # --- wrong artifacts that must not pass (trust 3)
    Row("calibration-empty", [*TINY, "--calibration-data", "{f}/calib_empty.npy"], 2, "no samples"),
    Row("calibration-non-finite", [*TINY, "--calibration-data", "{f}/calib_nan.npy"], 2, "NaN"),
    Row("calibration-beyond-float32", [*TINY, "--calibration-data", "{f}/calib_huge.npy"], 2,
        "(as float32) holds 80 non-finite values"),
    Row("calibration-wrong-shape", [*TINY, "--calibration-data", "{f}/calib_wrong_shape.npy"], 2, "holds shape"),
    Row("atol-nan", ["mnist_cnn", "--atol", "nan"], 2, "--atol nan is not a finite number"),
    Row("atol-inf", ["mnist_cnn", "--atol", "inf"], 2, "--atol inf is not a finite number"),
    Row("atol-negative", ["mnist_cnn", "--atol", "-1"], 2, "--atol -1.0 is not a finite number"),
    Row("rtol-nan", ["mnist_cnn", "--rtol", "nan"], 2, "--rtol nan is not a finite number"),
    Row("check-flipped-bit-tflite", ["--out", "{out}", "--check"], 1, "model_fp32.tflite in",
        _flip_bit("model_fp32.tflite")),
    Row("check-flipped-bit-onnx", ["--out", "{out}", "--check"], 1, "model.onnx in", _flip_bit("model.onnx")),
    Row("check-deleted-artifact", ["--out", "{out}", "--check"], 1, "model_int8.tflite in",
        _delete("model_int8.tflite")),
    Row("check-float-file-named-int8", ["--out", "{out}", "--check"], 1, "model_int8.tflite is not quantised",
        _float_file_named_int8),
    Row("check-untouched-passes", ["--out", "{out}", "--check"], 0, "checked", _copy_converted),
    # --- NaN (trust 5)
    Row("nan-weight", ["mnist_cnn", "--weights", "{f}/nan_weight.pt", "--precision", "fp32"], 1, "NaN"),
    Row("parity-data-non-finite", ["mnist_cnn", "--parity-data", "{f}/parity_nan.npy"], 2, "Inf"),
    Row("parity-data-empty-npy", ["mnist_cnn", "--parity-data", "{f}/parity_empty.npy"], 2, "no samples"),
    Row("parity-data-empty-idx", ["mnist_cnn", "--parity-data", "{tmp}/idx"], 2, "no samples", _empty_idx),
    # --- exit 2, never a traceback or exit 1 (trust 7)
    Row("onnx-custom-domain-op", ["{f}/custom_op.onnx"], 2, "com.example:MyOp"),
    Row("onnx-opset-99", ["{f}/opset99.onnx"], 2, "declares ONNX opset 99"),
    Row("onnx-opset-1", ["{f}/opset1.onnx"], 2, "declares ONNX opset 1"),
    Row("output-name-twice", ["mnist_cnn", "--output-name", "y", "--output-name", "y"], 2, "'y' is given twice"),
    Row("input-name-twice", [*TINY, "--input-name", "x", "--input-name", "x"], 2, "'x' is given twice"),
    Row("input-name-invalid", ["mnist_cnn", "--input-name", "a b/c:0"], 2, "is not a valid name"),
    Row("input-and-output-same-name", ["mnist_cnn", "--input-name", "x", "--output-name", "x"], 2,
        "names both an input and an output"),
    Row("check-malformed-manifest", ["--out", "{out}", "--check"], 2, "is not a convert manifest", _malformed),
    Row("check-manifest-without-source", ["--out", "{out}", "--check"], 2, "is not a convert manifest",
        _manifest_edit(lambda m, f: m.pop("source"))),
    Row("check-without-manifest", ["--out", "{f}/exists", "--check"], 2, "has no manifest.json"),
    Row("no-model", [], 2, "no model given"),
    # --- clear messages (trust 8)
    Row("weights-empty-file", ["mnist_cnn", "--weights", "{f}/empty.pt"], 2, "is empty"),
    Row("weights-missing", ["mnist_cnn", "--weights", "{f}/nope.pt"], 2, "does not exist"),
    Row("weights-a-directory", ["mnist_cnn", "--weights", "{f}/exists"], 2,
        "exists is a directory — pass the path of a state_dict file"),
    Row("python-file-as-model", ["{f}/nets.py", "--input-shape", "1,4"], 2,
        "nets.py is a Python source file, not a model — name the function that builds the model as module:callable "
        "(e.g. nets:build)"),
    Row("weights-corrupt", ["mnist_cnn", "--weights", "{f}/garbage.pt"], 2, "cannot read weights"),
    Row("weights-mismatched", ["mnist_cnn", "--weights", "{f}/renamed.pt"], 2, "'fc2.weight' is missing"),
    Row("callable-unimportable", ["no_such_pkg.models:build", "--input-shape", "1,3"], 2,
        "cannot import 'no_such_pkg.models'"),
    Row("callable-returns-non-module", ["tests.toy_models:not_a_module", "--input-shape", "1,3"], 2,
        "not a torch.nn.Module"),
    Row("callable-raises", ["tests.toy_models:broken_factory", "--input-shape", "1,3"], 2, "factory exploded"),
    Row("attribute-not-callable", ["tests.toy_models:NOT_CALLABLE", "--input-shape", "1,3"], 2,
        "is a int, not a callable"),
    Row("dict-outputs-convert", ["tests.toy_models:dict_outputs", "--input-shape", "1,4", "--precision", "fp32"],
        0, "wrote"),
    Row("input-shape-rejected", ["mnist_cnn", "--input-shape", "1,3,28,28"], 2, "rejects --input-shape 1,3,28,28"),
    Row("input-shape-rejected-by-torchscript", ["{f}/lin.torchscript.pt", "--input-shape", "1,5"], 2,
        "rejects --input-shape 1,5: RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x5 and 4x"),
    Row("input-shape-not-numbers", ["mnist_cnn", "--input-shape", "1,a,28"], 2, "not a comma list of integers"),
    Row("input-shape-zero", ["mnist_cnn", "--input-shape", "0,1,28,28"], 2, "non-positive dimension"),
    Row("onnx-corrupt", ["{f}/garbage.onnx"], 2, "is not a valid ONNX model"),
    Row("onnx-truncated", ["{f}/truncated.onnx"], 2, "is not a valid ONNX model"),
    Row("onnx-unsupported-op", ["{f}/unsupported.onnx"], 2, "op BitwiseNot (node 'flip_bits')"),
    Row("parity-data-missing", ["mnist_cnn", "--parity-data", "{f}/no_such_dir"], 2, "does not exist"),
    Row("parity-data-wrong-shape", ["mnist_cnn", "--parity-data", "{f}/wrong_shape.npy"], 2,
        "holds shape [10, 3, 28, 28]"),
    Row("precision-unknown", ["mnist_cnn", "--precision", "fp8"], 2, "unknown precision 'fp8'"),
    Row("precision-empty", ["mnist_cnn", "--precision", ""], 2, "--precision '' names nothing"),
    Row("precision-only-commas", ["mnist_cnn", "--precision", ",,"], 2, "--precision ',,' names nothing"),
    Row("targets-empty", ["mnist_cnn", "--targets", ""], 2, "--targets '' names nothing"),
    Row("parity-samples-zero", ["mnist_cnn", "--parity-samples", "0"], 2, "--parity-samples must be positive"),
    Row("keep-float-without-int8", [*TINY, "--int8-keep-float", "auto"], 2, "applies to full int8"),
    Row("opset-out-of-range", ["mnist_cnn", "--opset", "5"], 2, "opset 5 is out of range"),
    # --- typed inputs
    Row("input-dtype-unknown", [*TEXT, "--input-dtype", "float64", "--input-dtype", "int64"], 2,
        "unknown --input-dtype 'float64'"),
    Row("input-dtype-missing-for-ids", TEXT, 2, "have one of the following scalar types: Long, Int"),
    Row("input-dtype-count", [*TEXT, "--input-dtype", "int64"], 2, "1 --input-dtype given for 2 inputs"),
    Row("input-range-beyond-embedding", [*TEXT, *INT64_TWICE, "--input-range", "0,1000", "--input-range", "0,2"], 2,
        "index out of range"),
    Row("input-range-empty", [*TEXT, *INT64_TWICE, "--input-range", "5,5"], 2, "--input-range 5,5 is empty"),
    Row("input-range-not-numbers", [*TEXT, *INT64_TWICE, "--input-range", "a,b"], 2, "is not LOW,HIGH"),
    Row("export-disagrees-with-pytorch", ["tests.toy_models:drifting", "--input-shape", "1,4"], 2,
        "the exported ONNX graph disagrees with PyTorch"),
    Row("input-shape-against-onnx", ["{f}/good.onnx", "--input-shape", "1,5"], 2,
        "--input-shape 1,5 does not fit input 'x' of good.onnx, declared [1, 4] — pass --input-shape 1,4"),
    Row("input-rank-against-onnx", ["{f}/good.onnx", "--input-shape", "1,4,1"], 2,
        "declared [1, 4] — pass an --input-shape of rank 2"),
    Row("input-dtype-against-onnx", ["{f}/good.onnx", "--input-dtype", "int64"], 2, "an .onnx file declares its own"),
]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_fault(row: Row, files: Path, converted: Path, tmp_path: Path) -> None:
    cwd = (row.setup(tmp_path, files, converted) if row.setup else None) or tmp_path
    args = [a.format(f=files, out=tmp_path / "out", tmp=tmp_path) for a in row.args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    if "--parity-samples" not in args:
        args += ["--parity-samples", "10"]
    before, inputs = _tree(tmp_path), _tree(files)
    out_existed = (tmp_path / "out").exists()
    done = run_cli("convert", *args, cwd=cwd)
    err = done.stderr
    assert done.returncode == row.code, (done.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    if row.code == 2:
        errors = [ln for ln in err.splitlines() if ln.startswith("convert: error: ")]
        assert len(errors) == 1 and row.needle in errors[0], err
        assert all(ln.startswith("convert: ") for ln in err.splitlines() if ln.strip()), err
    else:
        assert row.needle in err + done.stdout, err
    after = _tree(tmp_path)
    if row.code == 2 or out_existed:
        assert [p for p in after if not p.startswith("out/")] == [p for p in before if not p.startswith("out/")
                                                                   and not p.startswith(".out.partial-")]
        if row.code == 2:
            assert [p for p in after if p.startswith("out/")] == [p for p in before if p.startswith("out/")]
    else:
        assert {p.split("/")[0] for p in after} - {p.split("/")[0] for p in before} == {"out"}
    assert not any(p.startswith(".out.") for p in after), after  # no staging left, the killed run's swept
    assert _tree(files) == inputs
    assert not list(tmp_path.rglob("PWNED")) and not list(files.rglob("PWNED")) and not (ROOT / "PWNED").exists()


def test_dict_outputs_are_named_after_their_keys(tmp_path: Path) -> None:
    done = run_cli("convert", "tests.toy_models:dict_outputs", "--input-shape", "1,4", "--precision", "fp32",
                   "--parity-samples", "8", "--out", tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [o["name"] for o in manifest["outputs"]] == ["logits", "doubled"]
    assert [o["pytorch_shape"] for o in manifest["outputs"]] == [[1, 3], [1, 4]]


def test_allow_pickle_is_the_explicit_opt_in(files: Path, tmp_path: Path) -> None:
    """With --allow-pickle the crafted file is unpickled as torch would: the flag is what stands between."""
    done = run_cli("convert", files / "evil.pt2", "--input-shape", "1,4", "--allow-pickle", "--out",
                   tmp_path / "out", cwd=tmp_path)
    assert (tmp_path / "PWNED").exists(), done.stderr
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_force_replaces_its_own_output(converted: Path, tmp_path: Path) -> None:
    shutil.copytree(converted, tmp_path / "out")
    done = run_cli("convert", *TINY, "--precision", "fp32", "--parity-samples", "8", "--out", tmp_path / "out",
                   "--force", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "out" / "model_int8.tflite").exists()  # the new set, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_live_runs_staging_directory_is_left_alone(tmp_path: Path) -> None:
    from converter._convert import outdir

    live = tmp_path / f".out.partial-{os.getpid()}-x"
    live.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = tmp_path / f".out.old-{dead.pid}-y"
    gone.mkdir()
    assert outdir.sweep(tmp_path / "out") == [gone]
    assert live.exists() and not gone.exists()


# ------------------------------------------------------------------------------------- signals, concurrency

def _start(tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "convert"), *TINY, "--precision", "fp32,fp16", "--parity-samples", "200",
                             "--out", str(tmp_path / "out"), *extra], cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_partial(proc: subprocess.Popen, tmp_path: Path, settle: float) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".out.partial-") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    time.sleep(settle)
    assert proc.poll() is None, "the conversion ended before the signal: nothing was tested"


def _descendants(pid: int) -> list:
    import psutil

    return psutil.Process(pid).children(recursive=True)


def _terminated_mid_run(proc: subprocess.Popen, tmp_path: Path) -> None:
    """SIGTERM once the run is well inside its work: exit 143, one line, nothing left."""
    _wait_for_partial(proc, tmp_path, 1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_sigterm_is_handled_like_ctrl_c(tmp_path: Path) -> None:
    _terminated_mid_run(_start(tmp_path), tmp_path)


def test_sigkill_takes_the_children_along_and_the_next_run_sweeps(tmp_path: Path) -> None:
    import psutil

    proc = _start(tmp_path)
    _wait_for_partial(proc, tmp_path, 0.3)
    children = _descendants(proc.pid)
    assert children, "no child process was running: nothing was tested"
    proc.kill()
    proc.communicate(timeout=60)
    _, alive = psutil.wait_procs(children, timeout=5)
    assert [c for c in alive if c.status() != psutil.STATUS_ZOMBIE] == []
    assert any(p.name.startswith(".out.partial-") for p in tmp_path.iterdir())  # what SIGKILL leaves
    done = run_cli("convert", *TINY, "--precision", "fp32", "--parity-samples", "8", "--out", tmp_path / "out",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "left beside --out by a run that no longer exists" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("force", [False, True])
def test_two_concurrent_runs_to_one_out(tmp_path: Path, force: bool) -> None:
    extra = ["--force"] if force else []
    procs = [_start(tmp_path, *extra) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert all("Traceback" not in err for _, err in results), results
    if force:
        assert codes == [0, 0], results  # the later one replaced the earlier one's complete output
    else:
        assert codes == [0, 2], results
        assert any("was created by another run meanwhile" in err for _, err in results)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["format"].startswith("torch2tf-manifest/")


def test_disk_full_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """A 3 MB tmpfs as the parent of --out: the conversion runs out of space part-way."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        done = run_cli("convert", "mnist_cnn", "--parity-samples", "10", "--out", disk / "out", cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("convert: error: the disk is full"), done.stderr
        assert "Traceback" not in done.stderr and list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


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
from converter import cli
from converter._convert import tensorflow
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


def test_train_reference_sigterm_leaves_nothing(tmp_path: Path) -> None:
    proc = subprocess.Popen([str(BIN / "train-reference"), "--framework", "torch", "--epochs", "50", "--train-data",
                             "embedded", "--eval-data", "embedded", "--out", str(tmp_path / "out")], cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _terminated_mid_run(proc, tmp_path)


def test_an_error_the_interrupt_caused_is_reported_as_the_interrupt(monkeypatch, tmp_path: Path) -> None:
    """A SIGTERM that kills the PyTorch child surfaces as that child's error; the command still exits 143."""
    from converter import api, cli
    from converter._convert import interrupts
    from converter.errors import ExportError

    def killed(*args, **kwargs):
        interrupts._pending = signal.SIGTERM  # what the handler records when the signal arrives
        raise ExportError("the PyTorch stage crashed (exit -15): ...")

    monkeypatch.setattr(api, "convert", killed)
    assert cli.main([*TINY, "--out", str(tmp_path / "out")]) == 143
    assert list(tmp_path.iterdir()) == []
    interrupts.checkpoint()  # reported and forgotten: a later library call in this process is not interrupted


def test_output_directories_follow_the_umask(tmp_path: Path) -> None:
    """The staging directory is made 0700 by mkdtemp; in place, --out is as readable as any new directory (a TF
    Serving process running as another user must read the SavedModel)."""
    from converter._convert import outdir

    old = os.umask(0o022)
    try:
        staging = outdir.make_staging(tmp_path / "out")
    finally:
        os.umask(old)
    assert staging.stat().st_mode & 0o777 == 0o755
    staging.rmdir()


def test_library_check_never_imports_a_recorded_module_from_the_current_directory(files, converted, tmp_path,
                                                                                   monkeypatch) -> None:
    """``converter.check(None, DIR)`` in a library caller whose sys.path holds the current directory: the recorded
    ``module:callable`` is still loaded in a child that does not import from there."""
    import sys

    from converter import check

    _hostile_module(tmp_path, files, converted)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(Exception, match="cannot import 'evilmod'"):
        check(None, tmp_path / "out")
    assert "evilmod" not in sys.modules and not list(tmp_path.rglob("PWNED"))


def test_the_command_is_also_installed_under_the_projects_name(tmp_path: Path) -> None:
    """``torch2tf`` is ``convert`` (ImageMagick installs a ``convert`` too): the same parser, the same refusals."""
    for tool in ("convert", "torch2tf"):
        done = run_cli(tool, "mnist_cnn", "--input-shape", "1,3,28,28", "--out", tmp_path / tool)
        assert done.returncode == 2 and "rejects --input-shape 1,3,28,28" in done.stderr, (tool, done.stderr)
        assert not (tmp_path / tool).exists()
