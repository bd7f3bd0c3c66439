"""torch -> ONNX with either exporter: TorchScript-based (``dynamo=False``) or torch.export-based (``dynamo=True``).

``--exporter auto`` (the default) tries TorchScript first and falls back to dynamo when it cannot export;
:class:`Exported` says which one wrote the file, and why ``auto`` left TorchScript, for the manifest's ``source``.
:mod:`converter._convert.export` checks the result against PyTorch.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from converter._convert.export import check_onnx, traceable
from converter.errors import ConverterError, ExportError, first_line

if TYPE_CHECKING:  # torch is imported lazily, as in export.py
    from torch import nn


@dataclass(frozen=True)
class Exported:
    """A checked ONNX graph, the exporter that wrote it, and why ``auto`` left the TorchScript exporter (if it did)."""

    model: onnx.ModelProto
    exporter: str
    fallback: str | None = None

    def to_source(self) -> dict:
        """What the manifest's ``source`` records about the export."""
        return {"exporter": self.exporter, **({"exporter_fallback": self.fallback} if self.fallback else {})}


def export_with(module: nn.Module, sample: list[np.ndarray], path: Path, input_names: list[str],
                output_names: list[str], opset: int, dynamic_batch: bool, exporter: str = "auto",
                dynamic_dims: Sequence[dict[int, str]] = ()) -> Exported:
    """Export with ``torchscript``, ``dynamo`` or ``auto``, then check the graph.

    ``auto`` tries the TorchScript exporter first: its node names carry module paths (``/layer3/layer3.1/conv2/Conv``,
    what localisation reads on graphs from any torch version) and every graph it writes stays the graph earlier
    conversions were measured on. When it fails (an op it has no symbolic for, e.g. ``aten::diff`` in a GPT-2 that
    builds its causal mask itself), the torch.export-based exporter runs instead and the reason is recorded.

    ``dynamic_dims``: per input, ``{axis: label}`` of the dimensions past the batch to keep symbolic
    (:mod:`converter._convert.dims`); one label is one dimension in both exporters.
    """
    returned = _scripted_dict_output(module)
    if returned is not None:
        raise ExportError(f"the TorchScript model returns a {returned}, which neither ONNX exporter takes from a "
                          "TorchScript file", "trace it returning a tuple (Hugging Face: return_dict=False), or convert "
                          "the Python module itself with its sample inputs (dict outputs are named after their keys)")
    dims = list(dynamic_dims) or [{} for _ in sample]
    if exporter == "torchscript":
        return Exported(_torchscript(module, sample, path, input_names, output_names, opset, dynamic_batch, dims),
                        "torchscript")
    if exporter == "dynamo":
        return Exported(_dynamo(module, sample, path, input_names, output_names, opset, dynamic_batch, dims), "dynamo")
    try:
        return Exported(_torchscript(module, sample, path, input_names, output_names, opset, dynamic_batch, dims),
                        "torchscript")
    except ConverterError as first:
        reason = str(first).split(" — ")[0]
        try:
            model = _dynamo(module, sample, path, input_names, output_names, opset, dynamic_batch, dims)
        except ConverterError as second:
            raise ExportError(f"both ONNX exporters failed: torchscript: {reason}; dynamo: "
                              f"{str(second).split(' — ')[0]}",
                              "make forward() traceable (no data-dependent Python control flow), or try another "
                              "--opset") from None
        return Exported(model, "dynamo", reason)


def _scripted_dict_output(module: nn.Module) -> str | None:
    """The type of a TorchScript module's output when it holds a dict (``Dict[str, Tensor]``: a Hugging Face model
    traced with its default ``return_dict=True``), else None; looks through the keyword-call wrapper."""
    import torch

    inner = getattr(module, "inner", module)
    if not isinstance(inner, torch.jit.ScriptModule):
        return None
    try:
        types = [str(o.type()) for o in inner.forward.graph.outputs()]
    except Exception:  # no graph to read: let the exporters say what they make of it
        return None
    return next((t for t in types if "Dict[" in t), None)


def _torchscript(module: nn.Module, sample: list[np.ndarray], path: Path, input_names: list[str],
                 output_names: list[str], opset: int, dynamic_batch: bool,
                 dims: Sequence[dict[int, str]]) -> onnx.ModelProto:
    """The TorchScript-based exporter (stable ``/module/path/Op`` node names, used to map numbers back to PyTorch
    modules)."""
    import torch

    args = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in sample)
    module = traceable(module, args)
    batch = {0: "batch"} if dynamic_batch else {}
    dynamic_axes = {n: {**batch, **axes} for n, axes in zip(input_names, dims)}
    dynamic_axes.update({n: dict(batch) for n in output_names})  # the exporter names the outputs' other symbolic dims
    dynamic_axes = {n: axes for n, axes in dynamic_axes.items() if axes} or None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, args, str(path), input_names=input_names, output_names=output_names,
                opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False,
            )
    except Exception as exc:
        first = first_line(exc, 240)
        raise ExportError(f"torch.onnx.export failed: {first}",
                          "try another --opset, or make forward() traceable (no data-dependent Python control flow)") from None
    return check_onnx(path)


#: The lowest opset the dynamo exporter has translations for: a lower ``--opset`` is exported at this one (its own
#: down-conversion fails on ReduceMean/ReduceMax, whose axes became inputs at 18). onnx2tf 1.28.8 and onnxruntime
#: take 18 (measured: a conv net, BERT and GPT-2 from configs convert and pass every fp32/fp16 row).
DYNAMO_MIN_OPSET = 18


def _dynamo(module: nn.Module, sample: list[np.ndarray], path: Path, input_names: list[str],
            output_names: list[str], opset: int, dynamic_batch: bool,
            dims: Sequence[dict[int, str]]) -> onnx.ModelProto:
    """The torch.export-based exporter (``dynamo=True``; nodes carry their module path in the metadata key
    ``pkg.torch.onnx.name_scopes``, which localisation reads). A dict or ``ModelOutput`` output needs no wrapper:
    torch.export flattens it in :func:`flatten_outputs` order (values in key order).

    With ``dynamic_batch`` the batch is ``torch.export.Dim("batch")``, exported from a batch of at least 2 (the
    sample repeated): torch.export specialises a dimension of size 1 to a constant.

    Imports ``torch._dynamo``, ``torch._inductor``, ``triton``, ``onnxscript`` and ``onnx_ir`` (and sympy,
    networkx, optree). ``import triton`` segfaults in a process that has imported TensorFlow (the reverse order is
    fine): the CLI exports in the PyTorch child, and in a process with TensorFlow and without triton this route
    refuses in one line instead of crashing.
    """
    import sys

    import torch

    if "tensorflow" in sys.modules and "triton" not in sys.modules:  # measured: `import triton` after TF segfaults
        raise ExportError("the dynamo exporter cannot start in a process that has already imported TensorFlow "
                          "(torch._dynamo imports triton, which then crashes the process)",
                          "use the convert command (it exports in a separate process), import torch._dynamo before "
                          "tensorflow, or pass --exporter torchscript")
    arrays = [np.ascontiguousarray(x) for x in sample]
    if dynamic_batch and arrays[0].shape[0] < 2:
        arrays = [np.concatenate([x] * 2) for x in arrays]
    args = tuple(torch.from_numpy(x) for x in arrays)
    named = {label: torch.export.Dim(label) for axes in dims for label in axes.values()}
    batch = {0: torch.export.Dim("batch")} if dynamic_batch else {}
    dynamic_shapes = tuple({**batch, **{axis: named[label] for axis, label in axes.items()}} for axes in dims)
    dynamic_shapes = (_per_parameter(module, dynamic_shapes) if any(dynamic_shapes) else None)
    try:
        with warnings.catch_warnings(), _quiet_loggers("torch.onnx", "torch.export", "torch._dynamo", "onnxscript"), \
                _stdout_silenced():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, args, str(path), input_names=input_names, output_names=output_names,
                opset_version=max(opset, DYNAMO_MIN_OPSET), dynamic_shapes=dynamic_shapes, dynamo=True,
                external_data=False, verbose=False,
            )
    except Exception as exc:
        first = first_line(exc, 240)
        raise ExportError(f"torch.onnx.export (dynamo) failed: {first}",
                          "make forward() exportable by torch.export (no data-dependent Python control flow), "
                          "or try --exporter torchscript") from None
    return check_onnx(path)


def _per_parameter(module: nn.Module, shapes: tuple) -> tuple:
    """``shapes`` (one per input) in the structure torch.export matches against ``forward``'s parameters: a
    ``forward(self, *args)`` (this package's wrappers: keyword calls, flattened outputs, ExportedPrograms) has one
    parameter holding every input, so its spec is ``(shapes,)``."""
    import inspect

    kinds = [p.kind for p in inspect.signature(module.forward).parameters.values()]
    return (shapes,) if kinds and kinds[0] is inspect.Parameter.VAR_POSITIONAL else shapes


@contextmanager
def _quiet_loggers(*names: str):
    """The named loggers at ERROR while the block runs (the dynamo exporter logs progress and fallbacks), as they
    were afterwards."""
    import logging

    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextmanager
def _stdout_silenced():
    """Python-level stdout to nowhere while the block runs (the dynamo exporter prints ``[torch.onnx] ...`` lines)."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        yield
