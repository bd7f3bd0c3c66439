"""torch -> ONNX: export (either exporter, :mod:`converter._convert.exporters`), ``onnx.checker``, and a smoke run
in onnxruntime that must match PyTorch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
from typing import TYPE_CHECKING

from converter.errors import ExportError, InputError, cut, first_line

if TYPE_CHECKING:  # torch is imported lazily: the TF side of a conversion never needs it
    import torch
    from torch import nn

    from converter._convert.side import GraphFacts

    from converter._convert.sources import LoadedModel
    from converter.options import ConvertOptions


def _fields(out: object) -> dict | None:
    """A dataclass instance's fields that are set, as a dict in declaration order (a plain ``@dataclass`` output is
    named and flattened like a dict; a Hugging Face ``ModelOutput`` already is one); None for anything else."""
    if isinstance(out, dict) or not dataclasses.is_dataclass(out) or isinstance(out, type):
        return None
    return {f.name: getattr(out, f.name) for f in dataclasses.fields(out) if getattr(out, f.name) is not None}


def flatten_outputs(out: object) -> list[torch.Tensor]:
    """Model outputs as a flat list of tensors (tuple / list / dict / dataclass / single tensor)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    fields = _fields(out)
    out = fields if fields is not None else out
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        flat: list[torch.Tensor] = []
        for item in out:
            flat.extend(flatten_outputs(item))
        return flat
    name = type(out).__name__
    fix = ("build the model with use_cache=False (its key/value cache is no tensor output)" if "Cache" in name
           else "return tensors, or a tuple, list, dict or dataclass of tensors")
    raise ExportError(f"the model returned a value of type {name}: {_short_repr(out)}", fix)


def _short_repr(out: object) -> str:
    """A refused output's repr, cut to 40 characters."""
    text = repr(out)
    return text if len(text) <= 40 else text[:37] + "..."


def run_torch(module: nn.Module, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Eval-mode forward pass without autograd; numpy in, numpy out."""
    import torch

    # no_grad, not inference_mode: a module that caches tensors from this call (e.g. a detector's anchors)
    # would otherwise hand the exporter inference tensors, which it cannot trace
    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(x)) for x in inputs])
    return [t.detach().cpu().numpy() for t in flatten_outputs(out)]


def describe_inputs(shapes, dtypes) -> str:
    """``1,3,224,224`` or, for other dtypes, ``1,16 (int64)``: the sample inputs as the user's flags name them."""
    return " ".join(",".join(map(str, s)) + ("" if np.dtype(d) == np.float32 else f" ({np.dtype(d)})")
                    for s, d in zip(shapes, dtypes))


def probe_outputs(module: nn.Module, sample: list[np.ndarray], shapes_text: str) -> object:
    """Run the model once on the sample; a shape/dtype mismatch becomes a one-line InputError. Returns what
    ``forward`` returned (:func:`flatten_outputs` of it are the outputs)."""
    import torch

    try:
        with torch.no_grad():  # as run_torch: no inference tensors left cached in the module
            out = module(*[torch.from_numpy(np.ascontiguousarray(x)) for x in sample])
        flatten_outputs(out)  # a non-tensor output is refused here, by name
        return out
    except ExportError:
        raise
    except Exception as exc:
        first = first_line(exc)
        if first.startswith("The following operation failed in the TorchScript interpreter"):
            # the cause is the last line, after the TorchScript traceback
            first = cut([ln.strip() for ln in str(exc).splitlines() if ln.strip()][-1], 200)
        raise InputError(f"the model rejects --input-shape {shapes_text}: {first}",
                         "pass the shape(s) forward() expects (--input-shape), their dtypes (--input-dtype int64 for "
                         "token ids) and, for integer inputs, a valid --input-range") from None


def _require_symbolic(proto: onnx.ModelProto, dims, in_names: list[str], file: str) -> None:
    """An ``.onnx`` source's ``--dynamic-dim`` must already be symbolic in the file: its graph may have baked the
    size into constants (a Reshape's target), so making only the input symbolic could silently be wrong."""
    inits = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in inits]
    for name, info, axes in zip(in_names, graph_inputs, dims.axes):
        shape = info.type.tensor_type.shape.dim
        for axis in axes:
            if shape[axis].HasField("dim_value") and shape[axis].dim_value > 0:
                raise InputError(f"--dynamic-dim {name}:{axis}: {file} fixes that dimension to {shape[axis].dim_value}",
                                 "re-export the file with that axis dynamic (dynamic_axes / dynamic_shapes), or drop "
                                 "--dynamic-dim")


def export_onnx(
    module: nn.Module,
    sample: list[np.ndarray],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    opset: int,
    dynamic_batch: bool,
    exporter: str = "auto",
) -> onnx.ModelProto:
    """Export ``module`` to ``path`` with ``exporter`` (``auto``, ``dynamo`` or ``torchscript``:
    :func:`converter._convert.exporters.export_with`) and return the checked graph."""
    from converter._convert.exporters import export_with

    return export_with(module, sample, path, input_names, output_names, opset, dynamic_batch, exporter).model


def traceable(module: nn.Module, args: tuple) -> nn.Module:
    """``module``, or (when its output holds a dict, which the tracer refuses) a wrapper returning the same tensors
    as a flat tuple, in :func:`flatten_outputs` order."""
    import torch

    with torch.no_grad():
        return _Flattened(module) if _holds_mapping(module(*args)) else module


def _output_keys(out: object, count: int) -> list[str] | None:
    """Output names from the structure ``forward`` returned, when it holds a mapping (a dict, a Hugging Face
    ``ModelOutput``): each tensor is named by its path, keys joined with ``_`` and positions numbered
    (``{"logits": t, "hidden_states": (h0, h1)}`` -> ``logits, hidden_states_0, hidden_states_1``; a top-level tuple's
    items are ``output_0, ...``). None (the default ``output_k`` names) without a mapping, or when the paths are not
    valid, distinct signature names, one per output."""
    import re

    import torch

    if not _holds_mapping(out):
        return None
    names: list[str] = []

    def walk(value: object, path: str) -> None:
        fields = _fields(value)
        value = fields if fields is not None else value
        if isinstance(value, torch.Tensor):
            names.append(path or "output")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}_{key}" if path else str(key))
        elif isinstance(value, (list, tuple)):
            for k, item in enumerate(value):
                walk(item, f"{path}_{k}" if path else f"output_{k}")

    walk(out, "")
    valid = len(names) == count == len(set(names)) and all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in names)
    return names if valid else None


def _holds_mapping(out: object) -> bool:
    if isinstance(out, dict) or _fields(out) is not None:
        return True
    return isinstance(out, (list, tuple)) and any(_holds_mapping(o) for o in out)


def _Flattened(module: nn.Module) -> nn.Module:
    """``module`` returning :func:`flatten_outputs` of its output as a tuple (what the tracer accepts).

    Only used when the output holds a dict: the wrapper adds a level to every ONNX node scope."""
    import torch

    class Flattened(torch.nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return tuple(flatten_outputs(self.inner(*args)))

    return Flattened(module).eval()


#: The default-domain opsets onnx2tf and onnxruntime both take.
OPSETS = range(7, 22)


def check_onnx(path: Path) -> onnx.ModelProto:
    """Load and validate an ONNX file; corrupt or truncated files become a one-line InputError."""
    try:
        model = onnx.load(str(path))
        # the checker reads the file itself: given the proto it serializes it again first (0.18 s on convnext_tiny's
        # 110 MB), and a file holds graphs over protobuf's 2 GB too
        onnx.checker.check_model(str(path))
    except Exception as exc:
        first = first_line(exc)
        raise InputError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {first})",
                         "re-export it with torch.onnx.export, or check the file was copied completely") from None
    if not model.graph.output:
        raise InputError(f"{path} has no graph outputs", "export a model with at least one output")
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version not in OPSETS:
            raise InputError(f"{path} declares ONNX opset {opset.version}, outside the supported "
                             f"{OPSETS.start}..{OPSETS.stop - 1}", "re-export it with an opset in that range")
    custom = next((n for n in model.graph.node if n.domain not in ("", "ai.onnx")), None)
    if custom is not None:
        raise InputError(f"{path} uses op {custom.domain}:{custom.op_type} (node {custom.name!r}) from a custom "
                         "domain, which neither onnxruntime nor TensorFlow can run",
                         "export it with standard ONNX ops only")
    return model


def rename_io(model: onnx.ModelProto, input_names: list[str], output_names: list[str]) -> onnx.ModelProto:
    """Rename graph inputs/outputs (for ``.onnx`` sources given --input-name/--output-name)."""
    mapping: dict[str, str] = {}
    real_inputs = graph_input_names(model)
    for old, new in zip(real_inputs, input_names):
        mapping[old] = new
    for old, new in zip([o.name for o in model.graph.output], output_names):
        mapping[old] = new
    mapping = {k: v for k, v in mapping.items() if k != v}
    if not mapping:
        return model
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        vi.name = mapping.get(vi.name, vi.name)
    for node in model.graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    return model


def graph_input_names(model: onnx.ModelProto) -> list[str]:
    """Graph inputs that are real inputs (old exporters also list initializers as inputs)."""
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def onnx_input_shapes(model: onnx.ModelProto) -> list[tuple[int, ...]]:
    """Static input shapes of an ONNX graph; symbolic dims become 1 (batch) — error for other dims."""
    inits = {i.name for i in model.graph.initializer}
    shapes = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = []
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif axis == 0:
                dims.append(1)
            else:
                raise InputError(f"input {vi.name!r} has a symbolic dimension {axis}",
                                 "pass --input-shape to fix it")
        shapes.append(tuple(dims))
    return shapes


def _check_declared_shapes(model: onnx.ModelProto, shapes: list[tuple[int, ...]], file: str) -> None:
    """InputError naming the first input whose ``--input-shape`` contradicts a size the graph declares (its rank, or
    a fixed size; a named size takes any), with the shape that fits: onnxruntime's own message is cut off."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    for vi, shape in zip(inputs, shapes):
        dims = vi.type.tensor_type.shape.dim
        declared = [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
        fits = [want if want is not None else got for want, got in zip(declared, shape)]
        if len(shape) != len(declared) or list(shape) != fits:
            shown = ", ".join(str(d) if d is not None else (dims[k].dim_param or "?") for k, d in enumerate(declared))
            fix = (f"pass --input-shape {','.join(map(str, fits))}" if len(shape) == len(declared) else
                   f"pass an --input-shape of rank {len(declared)}")
            raise InputError(f"--input-shape {','.join(map(str, shape))} does not fit input {vi.name!r} of {file}, "
                             f"declared [{shown}]", fix)


def onnx_elem_types(model: onnx.ModelProto) -> list[np.dtype]:
    inits = {i.name for i in model.graph.initializer}
    return [np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
            for vi in model.graph.input if vi.name not in inits]


def with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """``model`` with the (symbolic) first dimension of every graph input and output fixed to ``batch``;
    inferred shapes are dropped (the rewrites infer them again, now static). An output dimension that was symbolic
    only because of the batch (an exporter's ``Addlast_hidden_state_dim_1``) takes the size shape inference now
    gives it: onnx2tf lays out an output with a symbolic dimension as if it were dynamic (BERT's pooler Gemm)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    initializers = {t.name for t in fixed.graph.initializer}
    for info in [*fixed.graph.input, *fixed.graph.output]:
        dims = info.type.tensor_type.shape.dim
        if info.name not in initializers and len(dims) and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = batch
    del fixed.graph.value_info[:]
    try:
        from converter._convert.rewrites.graph import _shapes

        inferred = _shapes(fixed)
    except Exception:  # shape inference is a refinement here, never a reason to fail
        return fixed
    for info in fixed.graph.output:
        known = inferred.get(info.name)
        dims = info.type.tensor_type.shape.dim
        if known is None or len(known) != len(dims):
            continue
        for dim, size in zip(dims, known):
            if not dim.HasField("dim_value") and size:
                dim.Clear()
                dim.dim_value = size
    return fixed


def resolve_inputs(model: LoadedModel, input_shapes: list[tuple[int, ...]] | None, onnx_path: Path | None = None,
                   input_dtypes: tuple[str, ...] = ()) -> tuple[list[tuple[int, ...]], list[np.dtype]]:
    """Input shapes (PyTorch layout) and dtypes: the user's, the reference default, or the ONNX file's."""
    onnx_path = onnx_path or model.onnx_path
    if onnx_path is not None:
        proto = check_onnx(onnx_path)
        shapes = input_shapes or onnx_input_shapes(proto)
        dtypes = onnx_elem_types(proto)
        if len(shapes) != len(dtypes):
            raise InputError(f"{onnx_path.name} has {len(dtypes)} inputs but {len(shapes)} --input-shape were given",
                             "pass one --input-shape per model input")
        _check_declared_shapes(proto, shapes, onnx_path.name)
        given = [np.dtype(d) for d in input_dtypes]
        if given and given != list(dtypes):
            raise InputError(f"--input-dtype {','.join(map(str, given))} differs from {onnx_path.name}'s input dtypes "
                             f"{','.join(map(str, dtypes))}", "drop --input-dtype: an .onnx file declares its own")
        return [tuple(s) for s in shapes], dtypes
    shapes = input_shapes or list(model.default_input_shapes)
    if not shapes:
        raise InputError(f"no input shape for {model.name}", "pass --input-shape, e.g. --input-shape 1,3,224,224")
    if input_dtypes and len(input_dtypes) != len(shapes):
        raise InputError(f"{len(input_dtypes)} --input-dtype given for {len(shapes)} inputs",
                         "pass one --input-dtype per --input-shape, in the same order")
    return [tuple(s) for s in shapes], [np.dtype(d) for d in input_dtypes] or [np.dtype(np.float32)] * len(shapes)


def io_names(given: tuple[str, ...], count: int, prefix: str) -> list[str]:
    if given and len(given) != count:
        raise InputError(f"{len(given)} --{prefix}-name given for {count} {prefix}s", f"pass one --{prefix}-name per {prefix}")
    return list(given) or ([prefix if count == 1 else f"{prefix}_{i}" for i in range(count)])


def export_model(model: LoadedModel, out: Path, options: ConvertOptions, shapes, sample
                 ) -> tuple[list[str], list[str], dict, GraphFacts | None]:
    """Write ``out/model.onnx`` (exported, or the user's file renamed). Returns the input and output names, what the
    manifest's ``source`` records about the export (:meth:`~converter._convert.exporters.Exported.to_source`; nothing
    for an ``.onnx`` source) and the facts of the exported file, which passed :func:`check_onnx` (None for an
    ``.onnx`` source). :func:`check_in_onnxruntime` then runs it against PyTorch."""
    import onnx

    from converter._convert.dims import resolve
    from converter._convert.side import GraphFacts

    onnx_path = out / "model.onnx"
    if model.kind == "onnx":
        proto = check_onnx(model.onnx_path)
        n_out = len(proto.graph.output)
        in_names = io_names(options.input_names, len(shapes), "input") if options.input_names else graph_input_names(proto)
        out_names = io_names(options.output_names, n_out, "output") if options.output_names else [o.name for o in proto.graph.output]
        _require_symbolic(proto, resolve(options.dynamic_dims, in_names, shapes), in_names, model.onnx_path.name)
        onnx.save(rename_io(proto, in_names, out_names), str(onnx_path))
        return in_names, out_names, {}, None
    raw = probe_outputs(model.module, sample, describe_inputs(shapes, [x.dtype for x in sample]))
    n_out = len(flatten_outputs(raw))
    in_names = io_names(options.input_names, len(shapes), "input")
    out_names = io_names(options.output_names, n_out, "output") if options.output_names else \
        (_output_keys(raw, n_out) or io_names((), n_out, "output"))
    from converter._convert.exporters import export_with

    exported = export_with(model.module, sample, onnx_path, in_names, out_names, options.opset, options.dynamic_batch,
                           options.exporter, resolve(options.dynamic_dims, in_names, shapes).axes)
    return in_names, out_names, exported.to_source(), GraphFacts.of(exported.model)


#: The largest relative error between PyTorch and onnxruntime on the sample that an export passes with
EXPORT_MAX_ERROR = 1e-3


def check_in_onnxruntime(module: nn.Module, onnx_path: Path, sample: list[np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs of the exported ``onnx_path`` on ``sample``, once they matched ``module``'s (relative
    error at most ``EXPORT_MAX_ERROR``); a graph onnxruntime cannot run, or one that disagrees, is an ExportError."""
    from converter.parity.runtimes import onnxruntime_runner

    try:
        ort_out = onnxruntime_runner(onnx_path).fn(sample)
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot run the exported ONNX graph: {first_line(exc)}",
                          "try another --opset or --exporter; the graph must use standard ONNX ops") from None
    torch_out = run_torch(module, sample)
    worst = max(float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(a))), 1e-12) for a, b in zip(torch_out, ort_out))
    if worst > EXPORT_MAX_ERROR:
        raise ExportError(f"the exported ONNX graph disagrees with PyTorch (relative error {worst:.2g})",
                          "the model is not traceable as is (data-dependent control flow?); check forward()")
    return ort_out
