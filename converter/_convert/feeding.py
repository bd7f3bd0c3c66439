"""How to feed each artifact, in words: the "Feeding" lines of ``parity.md``, read from ``manifest.json``.

Every artifact takes the inputs by the user's names. What differs between them is the layout (an NCHW image input
is NHWC in the SavedModel and TFLite with ``--layout nhwc``: ``np.transpose(x, perm)``) and, for TFLite, the order in
which the interpreter lists inputs and outputs: TFLite sorts signature entries by name, so code that feeds
``get_input_details()[k]`` by position can silently swap two same-shaped inputs (``attention_mask`` and
``input_ids``). The lines say both, so nobody has to find out by debugging.
"""

from __future__ import annotations

from converter._convert import layout
from converter._convert.manifest import Manifest, TensorInfo


def feeding_lines(manifest: Manifest) -> list[str]:
    """One line per input (name, dtype, PyTorch shape and the permutation each artifact wants), then one per TFLite
    file whose interpreter lists inputs or outputs in another order than the model."""
    lines = []
    onnx = {i.name: i for i in manifest.onnx_inputs}
    for tf_input in manifest.inputs:
        torch_input = onnx.get(tf_input.name, tf_input)
        free = {tf_input.perm_from_pytorch[k] for k, d in enumerate(tf_input.shape) if d is None}
        torch_shape = ["N" if k == 0 and manifest.dynamic_batch else "*" if k in free else d
                       for k, d in enumerate(torch_input.pytorch_shape)]
        lines.append(f"input `{tf_input.name}`: {torch_input.dtype} [{', '.join(map(str, torch_shape))}] (PyTorch layout"
                     + ("; * = any size" if "*" in torch_shape else "") + ")" + _permutation(tf_input))
    for tf_output in manifest.outputs:
        if _permuted(tf_output):
            lines.append(f"output `{tf_output.name}` comes back as {_shape(tf_output)}: "
                         f"np.transpose(y, {layout.inverse(tuple(tf_output.perm_from_pytorch))}) gives the PyTorch layout")
    model_inputs, model_outputs = [i.name for i in manifest.inputs], [o.name for o in manifest.outputs]
    for art in manifest.tflite_artifacts():
        for what, model_order in (("input", model_inputs), ("output", model_outputs)):
            listed = art.details.get(f"{what}_order")
            if listed and list(listed) != model_order:
                lines.append(f"{art.path}: the interpreter lists {what}s as {', '.join(listed)} (the model's order is "
                             f"{', '.join(model_order)}): feed and read by name (signature runner "
                             f"`serving_default`), not by position")
    return lines


def _permutation(info: TensorInfo) -> str:
    if not _permuted(info):
        return "; every artifact takes it as is"
    return (f"; SavedModel and TFLite take np.transpose(x, {tuple(info.perm_from_pytorch)}) = {_shape(info)}, "
            "ONNX takes it as is")


def _permuted(info: TensorInfo) -> bool:
    return list(info.perm_from_pytorch) != list(range(len(info.perm_from_pytorch)))


def _shape(info: TensorInfo) -> str:
    return "[" + ", ".join(("N" if k == 0 else "*") if d is None else str(d) for k, d in enumerate(info.shape)) + "]"
