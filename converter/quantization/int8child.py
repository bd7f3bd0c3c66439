"""Full-int8 TFLite conversion in a child process, from the SavedModel already written.

Why: TFLite's calibrator segfaults on some graphs (seen: onnx2tf's LSTM/GRU, in
``calibrator._feed_tensors``), which would take the whole ``convert`` down. Graphs with recurrent ops are
quantised here instead; a crash becomes a :class:`TensorFlowConversionError` naming the precision.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from converter._proc import children
from converter.errors import TensorFlowConversionError

#: ONNX ops after which onnx2tf's graphs have crashed TFLite's int8 calibrator.
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN", "Loop", "Scan"})


def needs_isolation(op_types: set[str]) -> bool:
    return bool(op_types & RECURRENT_OPS)


def convert_int8(saved_model: Path, names: list[str], calibration: list[dict[str, np.ndarray]],
                 timeout: float = 900) -> bytes:
    """Full int8 (float I/O) of ``saved_model``'s serving signature, calibrated on ``calibration``
    (one ``{input name: artifact-layout array}`` per sample)."""
    with tempfile.TemporaryDirectory(prefix="int8-") as work:
        arrays = {f"{k}/{name}": sample[name] for k, sample in enumerate(calibration) for name in names}
        np.savez(Path(work) / "calibration.npz", **arrays)
        result = Path(work) / "model.tflite"
        code, last = children.run("converter.quantization.int8child", str(saved_model), work, str(len(calibration)),
                                   *names, timeout=timeout)
        if code != 0 or not result.is_file():
            why = children.exit_reason(code, timeout) + (f": {last[:200]}" if last else "")
            raise TensorFlowConversionError(f"TFLite int8 calibration crashed ({why})",
                                            "drop int8 with --precision fp32,fp16,dynamic_int8")
        return result.read_bytes()


def _main(saved_model: str, work: str, count: str, *names: str) -> None:
    from converter._convert.quiet import import_tensorflow, own_process
    from converter._convert.tfexport import saved_model_converter

    children.die_with_parent()
    own_process()
    tf = import_tensorflow()

    with np.load(Path(work) / "calibration.npz") as z:
        samples = [{n: z[f"{k}/{n}"] for n in names} for k in range(int(count))]
    converter = saved_model_converter(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: iter(samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    (Path(work) / "model.tflite").write_bytes(converter.convert())


if __name__ == "__main__":
    _main(*sys.argv[1:])
