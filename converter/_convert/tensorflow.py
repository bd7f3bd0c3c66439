"""ONNX -> TensorFlow: onnx2tf builds the graph, we own the SavedModel signature and the TFLite files.

onnx2tf is used only as the op-by-op ONNX -> TF translator (``disable_model_save=True``); it runs in a
throw-away working directory (it writes there), with the network patched out, and its console output is
captured. The serving function wraps its Keras model so every artifact exposes the user's input/output
names and order, and the layout chosen by :mod:`converter._convert.layout`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from converter._convert import interrupts, layout, memory
from converter.errors import TensorFlowConversionError, cut
from converter._convert.manifest import TensorInfo
from converter._convert.quiet import global_rngs_kept, silenced

Perm = layout.Perm


@dataclass
class TensorSpecInfo:
    """One input or output of the converted graph."""

    name: str
    torch_shape: tuple[int | None, ...]
    dtype: str
    keras_perm: Perm  # PyTorch layout -> layout of the onnx2tf Keras model
    artifact_perm: Perm  # PyTorch layout -> layout the SavedModel/TFLite signature uses
    #: PyTorch-layout axes past the batch that are symbolic in the ONNX graph (``--dynamic-dim``): None in every
    #: artifact's shape; ``torch_shape`` keeps the sample's size there
    dynamic: tuple[int, ...] = ()

    @property
    def artifact_shape(self) -> list[int | None]:
        return [None if i in self.dynamic else self.torch_shape[i] for i in self.artifact_perm]

    def as_manifest(self) -> TensorInfo:
        return TensorInfo(self.name, self.artifact_shape, self.dtype, list(self.artifact_perm), list(self.torch_shape))


@dataclass
class TFGraph:
    """The Keras model onnx2tf built plus the I/O contract around it."""

    keras_model: object
    inputs: list[TensorSpecInfo]
    outputs: list[TensorSpecInfo]
    applied: tuple[str, ...] = field(default_factory=tuple)
    #: relative error of the Keras model against the ONNX reference on the sample (float outputs, measured layouts)
    sample_error: float = 0.0
    #: onnx2tf's mode: ``{"strict_mode": False}`` for the fast route, else strict mode and why (manifest.translation)
    translation: dict = field(default_factory=dict)


#: The fast translation (onnx2tf without strict mode) is kept when it is this close to onnxruntime on the sample
#: (relative error, float outputs). fp32 translations that work are within ~1e-6 on most graphs, but yolov8n's
#: detection head on a seeded noise sample is at 1.1e-4 (onnxruntime itself is 2e-5 from PyTorch there), and strict
#: mode's graph gives exactly the same error: at 1e-4 that retry cost 4 s for nothing. A misplaced layout is off by
#: O(1), so 1e-3 still separates the two by orders of magnitude; parity then judges the kept graph as usual.
FAST_MAX_ERROR = 1e-3


def preload(verbose: bool = False, precisions: Sequence[str] = (), parity: bool = False) -> None:
    """Import TensorFlow and onnx2tf now (quietly), e.g. while a PyTorch child process exports; and what the later
    stages import first, while this process would only wait: the fp16 cast's quantiser (0.3 s) and parity's
    tf2onnx (0.06 s)."""
    import importlib

    from converter._convert.quiet import import_tensorflow

    import_tensorflow(verbose)
    later = [*(["ai_edge_quantizer.quantizer"] if "fp16" in precisions else []), *(["tf2onnx.convert"] if parity else [])]
    for name in later:
        try:
            importlib.import_module(name)
        except ImportError:  # the stage that needs it says so, in its own words
            pass


def unsupported_ops(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(op_type, node name) of every node onnx2tf has no translator for — checked before converting,
    so the user hears which op and which node, not a stack trace from deep inside onnx2tf."""
    missing = []
    for node in model.graph.node:
        known = node.domain in ("", "ai.onnx") and importlib.util.find_spec(f"onnx2tf.ops.{node.op_type}") is not None
        if not known:
            missing.append((node.op_type if not node.domain else f"{node.domain}::{node.op_type}", node.name))
    return missing


def onnx_to_keras(
    model: onnx.ModelProto | Path,
    input_shapes: Sequence[tuple[int, ...]],
    input_dtypes: Sequence[np.dtype],
    output_names: Sequence[str],
    sample: list[np.ndarray],
    reference: Sequence[np.ndarray] | Callable[[], Sequence[np.ndarray]],
    layout_mode: str,
    verbose: bool = False,
    unroll_rnn: bool = False,
) -> TFGraph:
    """Translate with onnx2tf and work out the layout of every input and output.

    Two routes, the fast one first: onnx2tf without strict mode, on a graph whose broadcast constants are all
    full-rank (``rewrites.prepare_for_onnx2tf(fast=True)``), with onnx2tf's per-node checks only where they are
    needed and the layout of equal-sized tensors recorded right (``rewrites.fast_route``); strict mode re-runs the
    partial Keras model at every ambiguous node to choose a layout, quadratic in depth (convnext_tiny: 229 of 257 s).
    The fast graph is kept when it runs the sample within ``FAST_MAX_ERROR`` of onnxruntime; otherwise (an onnx2tf
    error, a wrong layout) the graph is translated again in strict mode, and ``TFGraph.translation`` says why.

    ``unroll_rnn``: LSTM/GRU/RNN become one cell per time step (onnx2tf's ``enable_rnn_unroll``) instead of a
    while loop — what full-int8 calibration needs (see :func:`converter._convert.artifacts.build_tf`).

    ``sample``/``reference`` (PyTorch-layout inputs and the ONNX outputs for them) let us *measure* which
    layout onnx2tf gave each output instead of guessing from shapes. ``reference`` may be a function returning them,
    called once onnx2tf has built the graph (the PyTorch child checks them against PyTorch meanwhile).

    ``model``: the graph, or the file it is in (``model.onnx``). A file is read once per route, and the rewrites
    edit what was read instead of a copy; nothing else then holds the edited graph, so it is freed before onnx2tf
    builds on top of it (with a graph given, the caller's stays as it was, beside the copy: 110 MB more on
    convnext_tiny, and the edited copy's replaced weights, 0.4 GiB, until the rewrites end).
    """
    args = (model, input_shapes, input_dtypes, output_names, sample, reference, layout_mode, verbose, unroll_rnn)
    fast = None
    try:
        fast = _translate(*args, fast=True)
        if fast.sample_error <= FAST_MAX_ERROR:
            return fast
        why = f"relative error {fast.sample_error:.2g} on the sample without strict mode"
    except _Untranslatable:
        raise
    except TensorFlowConversionError as exc:
        why = str(exc)
    interrupts.checkpoint()
    try:
        strict = _translate(*args, fast=False)
    except TensorFlowConversionError:
        if fast is None:
            raise
        return fast  # strict mode cannot build it at all: the fast graph stands, and parity judges it
    strict.translation = {"strict_mode": True, "why": why[:300]}
    return strict if fast is None or strict.sample_error <= fast.sample_error else fast


class _Untranslatable(TensorFlowConversionError):
    """An op onnx2tf has no translator for: neither route can translate the graph."""


def _read(model: onnx.ModelProto | Path) -> onnx.ModelProto:
    """The graph, checked for ops onnx2tf cannot translate."""
    graph = onnx.load(str(model)) if isinstance(model, Path) else model
    missing = unsupported_ops(graph)
    if missing:
        op, node = missing[0]
        raise _Untranslatable(
            f"op {op} (node {node!r}) cannot be converted to TensorFlow: onnx2tf has no translator for it",
            "replace that op in the PyTorch model or export it differently (another --opset)")
    return graph


def _translate(model, input_shapes, input_dtypes, output_names, sample, reference, layout_mode, verbose, unroll_rnn,
               *, fast: bool) -> TFGraph:
    """One onnx2tf translation (``fast``: without strict mode) and the measured I/O layouts; see ``onnx_to_keras``."""
    from converter._convert import rewrites

    # a file's graph is read here and handed over: prepare_for_onnx2tf then holds the only reference to it
    prepared = rewrites.prepare_for_onnx2tf(_read(model), fast=fast, in_place=isinstance(model, Path))
    # the graph the rewrites edited is freed inside prepare_for_onnx2tf: its heap goes back to the OS before onnx2tf
    # builds on top of it, beside the PyTorch child computing the reference (one trim here, ~0.05 s)
    memory.trim()
    input_names = [i.name for i in prepared.model.graph.input
                   if i.name not in {t.name for t in prepared.model.graph.initializer}]
    keep_absolutely = [n for n, s, d in zip(input_names, input_shapes, input_dtypes) if not layout.is_image(s, d)]
    kwargs = dict(
        onnx_graph=prepared.model,
        disable_model_save=True,
        non_verbose=not verbose,
        verbosity="info" if verbose else "error",
        keep_shape_absolutely_input_names=keep_absolutely or None,
    )
    kwargs.update(prepared.onnx2tf_kwargs)
    if unroll_rnn:
        kwargs["enable_rnn_unroll"] = True
    keras_model, checks = _run_onnx2tf(kwargs, calibration=_calibration(sample), verbose=verbose)
    interrupts.checkpoint()  # onnx2tf's bare ``except:`` clauses can swallow a Ctrl-C
    graph_inputs = {i.name: i for i in prepared.model.graph.input}
    inputs = [
        TensorSpecInfo(n, tuple(s), str(np.dtype(d)),
                       layout.channels_last(4) if layout.is_image(s, d) else layout.identity(len(s)),
                       layout.artifact_input_perm(s, d, layout_mode), symbolic_axes(graph_inputs[n]))
        for n, s, d in zip(input_names, input_shapes, input_dtypes)
    ]
    for info, kin in zip(inputs, keras_model.inputs):
        expect = [None if i in info.dynamic else info.torch_shape[i] for i in info.keras_perm]
        if list(kin.shape)[1:] != expect[1:]:
            raise TensorFlowConversionError(
                f"onnx2tf gave input {info.name!r} shape {list(kin.shape)}, expected {expect}",
                "report this model; try --layout keep")
    try:
        tf_out = run_keras(keras_model, [layout.to_layout(x, i.keras_perm) for x, i in zip(sample, inputs)])
    except Exception as exc:  # TF's own shape errors: onnx2tf built a graph that cannot run the model's input
        from converter.errors import first_line

        raise TensorFlowConversionError(
            f"the TF graph onnx2tf built cannot run the sample input: {first_line(exc, 200)}",
            "report this model; with --dynamic-dim, convert at a fixed size instead") from None
    if callable(reference):
        reference = reference()
    if len(tf_out) != len(reference):
        raise TensorFlowConversionError(f"the TF graph has {len(tf_out)} outputs, ONNX has {len(reference)}",
                                        "report this model")
    outputs = []
    dynamic = any(i.dynamic for i in inputs)
    graph_outputs = list(prepared.model.graph.output)
    for k, (name, ref, got) in enumerate(zip(output_names, reference, tf_out)):
        perm = layout.detect_perm(ref, got)
        fits = tuple(got.shape) in {tuple(ref.shape), np.transpose(ref, layout.channels_last(ref.ndim)).shape}
        if perm is None and fits and ref.size and not np.isfinite(ref).any():
            # the shapes fit both layouts and NaN/Inf values cannot tell them apart: not a shape mismatch
            raise TensorFlowConversionError(
                f"output {name!r} is NaN/Inf everywhere on the sample input, so which layout TF returns it in "
                f"cannot be measured (TF shape {list(got.shape)}, ONNX shape {list(ref.shape)})",
                "fix the model or its weights so it outputs finite values")
        if perm is None:
            raise TensorFlowConversionError(
                f"output {name!r}: TF shape {list(got.shape)} does not match ONNX shape {list(ref.shape)}",
                "report this model; try --layout keep")
        shape = tuple(ref.shape)
        outputs.append(TensorSpecInfo(name, shape, str(ref.dtype), perm, layout.artifact_output_perm(perm, layout_mode),
                                      symbolic_axes(graph_outputs[k]) if dynamic else ()))
    error = output_error(reference, tf_out, outputs)
    translation = {"strict_mode": not fast,
                   **({"checked_nodes": checks.checked, "rebuilt_nodes": checks.rebuilt,
                       "relabelled_tensors": checks.relabelled, "channels_last_depthwise": checks.channels_last}
                    if checks is not None else {})}
    return TFGraph(keras_model, inputs, outputs, prepared.applied, error, translation)


def output_error(reference: Sequence[np.ndarray], tf_out: Sequence[np.ndarray], outputs: Sequence[TensorSpecInfo]
                 ) -> float:
    """The relative error of the Keras graph's float outputs ``tf_out`` (in the layouts ``outputs`` record) against
    onnxruntime's ``reference``; a ValueError when an output's shape differs from onnxruntime's."""
    from converter.parity.metrics import relative_error

    floats = [(ref, layout.from_layout(got, o.keras_perm).astype(np.float64))
              for ref, got, o in zip(reference, tf_out, outputs) if np.issubdtype(np.asarray(ref).dtype, np.floating)]
    wrong = [f"{list(got.shape)} where onnxruntime has {list(ref.shape)}" for ref, got in floats if ref.shape != got.shape]
    if wrong:
        raise ValueError("output shapes " + ", ".join(wrong))
    return relative_error([r for r, _ in floats], [g for _, g in floats]) if floats else 0.0


def symbolic_axes(info: onnx.ValueInfoProto) -> tuple[int, ...]:
    """Axes past the batch whose size the ONNX graph leaves symbolic (a ``--dynamic-dim``, or what follows from one)."""
    dims = info.type.tensor_type.shape.dim
    return tuple(k for k, d in enumerate(dims) if k > 0 and not (d.HasField("dim_value") and d.dim_value > 0))


def run_keras(keras_model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    out = keras_model(inputs if len(inputs) > 1 else inputs[0], training=False)
    out = out if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(o) for o in out]


def _calibration(sample: list[np.ndarray]) -> np.ndarray | None:
    """onnx2tf's stand-in test images for RGB inputs: the user's own sample, channels-last."""
    x = sample[0] if sample else None
    if x is None or x.ndim != 4 or x.shape[1] != 3:
        return None
    return layout.to_layout(x.astype(np.float32), layout.channels_last(4))


def _run_onnx2tf(kwargs: dict, calibration: np.ndarray | None, verbose: bool):
    """onnx2tf's Keras model, and (without strict mode) what ``rewrites.fast_route`` did (None in strict mode)."""
    import onnx2tf

    from converter._convert import rewrites

    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="onnx2tf-") as work, silenced(verbose) as log, global_rngs_kept():
        kwargs = {**kwargs, "output_folder_path": os.path.join(work, "out")}
        try:
            os.chdir(work)  # onnx2tf writes into the current directory
            with rewrites.patch_onnx2tf_offline(calibration), contextlib.ExitStack() as patches:
                checks = patches.enter_context(rewrites.fast_route()) if kwargs.get("disable_strict_mode") else None
                return onnx2tf.convert(**kwargs), checks
        except SystemExit:
            problem = _explain(log.getvalue(), "onnx2tf stopped")
        except Exception as exc:
            problem = _explain(log.getvalue(), f"{type(exc).__name__}: {exc}")
        finally:
            os.chdir(old_cwd)
    raise TensorFlowConversionError(*problem)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


#: onnx2tf's generic advice after every failure: never the explanation of this one.
_BOILERPLATE = re.compile(r"Read this and deal with it|Alternatively, if the input OP|If the input OP of ONNX|"
                          r"Also, for models that include|The trace log is below|input_onnx_file_path")
#: The lines that say what actually went wrong (TensorFlow's shape errors, a Python exception).
_CAUSE = re.compile(r"Dimensions must be equal|^\w+(Error|Exception): ")


def _explain(log: str, fallback: str) -> tuple[str, str]:
    """Turn onnx2tf's console output into (problem, fix), naming the failing op and node."""
    text = _ANSI.sub("", log)
    op = re.findall(r"onnx_op_type:\s*(\S+)", text)
    node = re.findall(r"onnx_op_name:\s*(\S+)", text)
    lines = [ln.strip() for ln in text.splitlines()]
    cause = [ln for ln in lines if _CAUSE.search(ln)]
    errors = [ln for ln in lines if ("ERROR" in ln or "Error" in ln) and not _BOILERPLATE.search(ln)]
    detail = cut(cause[-1] if cause else fallback if fallback != "onnx2tf stopped" or not errors else errors[-1], 240)
    if op or node:
        what = f"op {op[-1]} (node {node[-1] if node else '?'})" if op else f"node {node[-1]}"
        return (f"onnx2tf failed on {what}: {detail}",
                "rerun with --verbose for onnx2tf's trace; replace that op or export with another --opset")
    return (f"onnx2tf failed: {detail}", "rerun with --verbose for onnx2tf's trace")
