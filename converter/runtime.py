"""A converted artifact as a Python callable: ``load_runtime("out/net", "tflite_fp32")(x)``.

The callable takes what the PyTorch model took (tensors or NumPy arrays in the PyTorch layout, positionally in the
model's input order or by input name) and returns NumPy outputs in the PyTorch layout, so a user's test compares an
artifact with the module in two lines::

    tflite = result.runtime("tflite_fp32")
    np.testing.assert_allclose(tflite(x), model(x).detach().numpy(), atol=1e-4)

Each runtime converts to and from its artifact's layout (NHWC images, the TFLite signature's own input order) as
``manifest.json`` records it; a fixed-batch artifact is fed any number of samples (in chunks of its batch, the last
one padded). TFLite runs in this process (``ai_edge_litert``), the SavedModel loads TensorFlow here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import InputError

Fn = Callable[[list[np.ndarray]], list[np.ndarray]]


class Outputs(tuple):
    """Several outputs: a tuple in the model's output order (``hidden, pooled = runtime(**inputs)``) that is also
    read by output name (``out["logits"]``, ``out.logits``), as the model's dict or dataclass output was."""

    names: tuple[str, ...]

    def __new__(cls, values, names) -> "Outputs":
        made = super().__new__(cls, values)
        made.names = tuple(names)
        return made

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._named(key, KeyError)
        return super().__getitem__(key)

    def __getattr__(self, name: str) -> np.ndarray:  # out.logits, as on the model's dataclass or ModelOutput
        return self._named(name, AttributeError)

    def keys(self) -> tuple[str, ...]:  # dict(out): name -> array
        return self.names

    def _named(self, name: str, missing: type[Exception]) -> np.ndarray:
        names = self.__dict__.get("names", ())  # read directly: __getattr__ must not recurse before __new__ set it
        if name not in names:
            raise missing(f"no output {name!r}: the outputs are {', '.join(names)}")
        return tuple.__getitem__(self, names.index(name))


@dataclass(frozen=True)
class Runtime:
    """One artifact of a conversion, callable like the model (see the module docstring)."""

    name: str
    artifact: Path
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    #: the PyTorch-layout shape of every input, ``None`` where a dimension is free (the batch with --dynamic-batch)
    input_shapes: tuple[tuple[int | None, ...], ...]
    input_dtypes: tuple[str, ...]
    _run: Callable[[list[np.ndarray]], list[np.ndarray]]

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray | Outputs:
        outputs = self._run(self._arrays(args, kwargs))
        return outputs[0] if len(outputs) == 1 else Outputs(outputs, self.output_names)

    def _arrays(self, args: tuple, kwargs: dict) -> list[np.ndarray]:
        if args and kwargs:
            raise InputError(f"{self.name} was called with positional and keyword inputs",
                             f"pass all inputs one way: ({', '.join(self.input_names)})")
        if kwargs:
            unknown = sorted(set(kwargs) - set(self.input_names))
            missing = [n for n in self.input_names if n not in kwargs]
            if unknown or missing:
                raise InputError(f"{self.name} takes inputs {', '.join(self.input_names)}; got "
                                 f"{', '.join(kwargs)}", "pass every input by its name, or all positionally")
            args = tuple(kwargs[n] for n in self.input_names)
        if len(args) != len(self.input_names):
            raise InputError(f"{self.name} takes {len(self.input_names)} inputs ({', '.join(self.input_names)}); "
                             f"got {len(args)}", "pass one tensor per model input, in the model's order")
        arrays = []
        for name, shape, dtype, value in zip(self.input_names, self.input_shapes, self.input_dtypes, args):
            array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
            wrong = len(array.shape) != len(shape) or any(w is not None and w != d
                                                          for w, d in zip(shape[1:], array.shape[1:]))
            if wrong:
                want = "x".join("N" if d is None else str(d) for d in shape)
                raise InputError(f"input {name!r} of {self.name} has shape {list(array.shape)}, expected {want} "
                                 "(PyTorch layout)", "pass the shape the model was converted for")
            arrays.append(np.ascontiguousarray(array.astype(dtype, copy=False)))
        return arrays


def load_runtime(out_dir: str | Path, name: str) -> Runtime:
    """The artifact ``name`` of the conversion in ``out_dir`` as a :class:`Runtime`."""
    from converter._convert.live import path_argument
    from converter.api import read_manifest

    out_dir = path_argument(out_dir, "out_dir", "load_runtime('out/model', 'tflite_fp32')")
    manifest = read_manifest(out_dir)
    makers = _makers(out_dir, manifest)
    if name not in makers:
        raise InputError(f"{out_dir} has no runtime {name!r}", f"use one of {', '.join(makers) or 'none (nothing built)'}")
    artifact, make = makers[name]
    fixed = manifest.fixed_batch
    shapes = tuple(_pytorch_shape(i.shape, i.perm_from_pytorch, fixed is None) for i in manifest.inputs)
    return Runtime(name, out_dir / artifact, tuple(i.name for i in manifest.onnx_inputs),
                   tuple(o.name for o in manifest.onnx_outputs), shapes,
                   tuple(i.dtype for i in manifest.onnx_inputs), _batched(make(), fixed))


def _pytorch_shape(shape: list[int | None], perm: list[int], free_batch: bool) -> tuple[int | None, ...]:
    """An artifact-layout shape (None where a dimension is free) in the PyTorch layout."""
    torch_shape: list[int | None] = [None] * len(shape)
    for artifact_axis, torch_axis in enumerate(perm):
        torch_shape[torch_axis] = shape[artifact_axis]
    if free_batch:
        torch_shape[0] = None
    return tuple(torch_shape)


def _makers(out: Path, manifest) -> dict[str, tuple[str, Callable[[], Fn]]]:
    from converter.parity import runtimes

    fixed = manifest.fixed_batch
    makers: dict[str, tuple[str, Callable[[], Fn]]] = {}
    if (out / "model.onnx").is_file():
        makers["onnxruntime"] = ("model.onnx", lambda: runtimes.onnxruntime_runner(out / "model.onnx", batch=fixed))
    if "saved_model" in manifest.artifacts:
        makers["saved_model"] = ("saved_model", lambda: runtimes.saved_model_runner(out / "saved_model", manifest, fixed))
    for art in manifest.tflite_artifacts():
        makers[f"tflite_{art.precision}"] = (art.path, lambda path=out / art.path: runtimes.tflite_runner(
            path, manifest, fixed))
    return makers


def _batched(runner, fixed: int | None) -> Fn:
    from converter.parity.runtimes import run_batched

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        return run_batched(runner, arrays, fixed or len(arrays[0]))

    return run
