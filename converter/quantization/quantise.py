"""int8 that keeps its accuracy: per-layer quantisation error, and which layers to keep in float.

    choice = choose_keep_float(serving_module, graph, representative, data.inputs, data.labels,
                               spec="auto", onnx_model=proto)
    choice.tflite          # the selective-int8 flatbuffer (float I/O, like every int8 artifact)
    choice.kept            # [KeptLayer(module="conv1", tflite_node="model/tf.nn.relu/Relu;...", op="CONV_2D")]
    choice.to_markdown()   # the per-layer table, the steps tried, size and accuracy before/after

The model is calibrated once (by ``tf.lite.experimental.QuantizationDebugger``, which also gives rmse/scale per
quantised tensor); every variant is then the same
calibrated model quantised with a different ``denylisted_nodes`` list, so variants differ only in which
layers stay float. Layers are ranked by *sensitivity*: the model-output error when that layer alone is
quantised. Sensitivity sees what per-layer (isolated) debugger metrics miss: a tensor whose range is
dominated by one outlier channel looks fine in isolation (its error is one rounding step of a huge
scale) yet crushes every other channel for the layers that read it. ``auto`` keeps the most sensitive
layers, one more at a time, until the accuracy drop is within target (``accuracy_drop_pp`` on labelled
data, else top-1 agreement with the float model).

TFLite layers are named by TensorFlow op (``model/tf.nn.convolution_1/...``), not by ONNX node, so each is
mapped back to an ONNX node and PyTorch module *by value*: the calibrated (still float) model is run with
every tensor preserved and each op output is matched to the ONNX tensor it equals.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from converter.parity.judge import TOLERANCES
from converter.quantization.int8_eval import Score, run_tflite, safe_score, score


#: The search's targets, from the parity table's int8 row (the gate the chosen file then has to pass).
TARGET_DROP_PP = TOLERANCES["int8"]["accuracy_drop_pp"]
#: Unlabelled, the search aims this far above the gate's top-1 agreement (0.97 + 0.02 = 0.99). It stops at the
#: first variant that meets its target, so the chosen file sits at the edge of that target; at the gate's own
#: 0.97 a file chosen on these <= 1000 samples would pass parity by a hair, and fail it on other data: agreement
#: near 97 % measured on 1000 samples varies by ±0.54 pp (one σ), so 2 pp of headroom is ~3.7 σ.
AGREEMENT_HEADROOM = 0.02
MIN_AGREEMENT = TOLERANCES["int8"]["top1_agreement"] + AGREEMENT_HEADROOM
#: Samples used to rank layers (sensitivity) and to judge each variant.
RANK_SAMPLES = 100
EVAL_SAMPLES = 1000
#: ``auto`` gives up after keeping this many layers (the table still says which would be next).
MAX_KEEP = 16
#: TFLite ops that never carry their own quantisation error worth a float fallback.
_SHAPE_OPS = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "SHAPE", "DEQUANTIZE", "QUANTIZE"}

Representative = Callable[[], Iterable[list[np.ndarray]]]


@dataclass
class Layer:
    """One quantisable TFLite op: its output tensor name (what ``denylisted_nodes`` takes) and its origin."""

    tflite_node: str
    op: str
    module: str | None = None
    onnx_node: str | None = None
    rmse_over_scale: float | None = None  # debugger, isolated: ~0.29 is pure rounding noise
    sensitivity: float | None = None  # model-output relative error when only this layer is quantised


@dataclass
class KeepFloatChoice:
    """What was kept in float, and what that bought."""

    spec: str
    kept: list[Layer]
    layers: list[Layer]
    float_accuracy: float | None
    full_int8: Score
    chosen: Score
    met_target: bool
    steps: list[dict] = field(default_factory=list)
    tflite: bytes = field(default=b"", repr=False)

    @property
    def kept_modules(self) -> list[str]:
        return list(dict.fromkeys(k.module or k.tflite_node for k in self.kept))

    @property
    def kept_nodes(self) -> list[str]:
        return [k.tflite_node for k in self.kept]

    def to_json(self) -> dict:
        """Plain JSON types; infinities (unrunnable variants) become null."""
        import json

        out = asdict(self)
        out.pop("tflite")
        return json.loads(json.dumps(out), parse_constant=lambda _: None)

    def to_markdown(self) -> str:
        def acc(s: Score) -> str:
            if not s.runnable:
                return "does not run (the interpreter refuses it)"
            if s.accuracy is not None:
                return f"{s.accuracy:.2%} (drop {s.accuracy_drop_pp:.2f} pp)"
            if s.top1_agreement is not None:
                return f"top-1 agreement {s.top1_agreement:.2%}"
            return f"output rel err {s.output_rel_err:.3g}"

        lines = [f"int8 keep-float `{self.spec}`: kept {len(self.kept)} layer(s) "
                 f"({', '.join(self.kept_modules) or 'none'}); target {'met' if self.met_target else 'NOT met'}",
                 "", f"- float: {'-' if self.float_accuracy is None else f'{self.float_accuracy:.2%}'}",
                 f"- full int8: {acc(self.full_int8)}, {self.full_int8.size_bytes / 1e3:.1f} kB",
                 f"- chosen: {acc(self.chosen)}, {self.chosen.size_bytes / 1e3:.1f} kB", "",
                 "| rank | module | ONNX node | TFLite op | sensitivity (out rel err) | rmse/scale | kept |",
                 "|---|---|---|---|---|---|---|"]
        kept = set(self.kept_nodes)
        for rank, layer in enumerate(self.layers, 1):
            lines.append(f"| {rank} | {layer.module or '-'} | {layer.onnx_node or '-'} | {layer.op} | "
                         f"{_fmt(layer.sensitivity)} | {_fmt(layer.rmse_over_scale)} | "
                         f"{'yes' if layer.tflite_node in kept else ''} |")
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


# ------------------------------------------------------------------------------------------ calibration


def calibrate(serving_module, representative: Representative) -> tuple[bytes, dict[str, float]]:
    """Calibrate once: (the calibrated float model, rmse/scale per quantised tensor from the debugger).

    rmse/scale is the debugger's isolated per-layer error in units of the tensor's quantisation step
    (~0.29 is pure rounding). It is optional: the instrumented debug model can fail to prepare (XNNPACK
    rejects int8 ADDs whose input scales differ by orders of magnitude, e.g. resnet18 with random
    weights); the ranking does not depend on it. The debugger keeps its default interpreter: the
    reference kernels it would fall back to abort the process on those same models.
    """
    import csv
    import io

    import tensorflow as tf

    from converter._convert.quiet import silenced
    from converter._convert.tfexport import positional, tflite_converter

    converter = tflite_converter(serving_module)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    with silenced(False):  # the debugger feeds its samples positionally (the converter takes them by name)
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                             debug_dataset=positional(serving_module, representative))
        try:
            debugger.run()
        except (RuntimeError, ValueError):
            return debugger.calibrated_model, {}
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    statistics = {}
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"] or 0)
        if scale > 0:
            statistics[row["tensor_name"]] = float(np.sqrt(float(row["mean_squared_error"]))) / scale
    return debugger.calibrated_model, statistics


def quantise(calibrated: bytes, keep_float: Sequence[str] = ()) -> bytes:
    """The calibrated model quantised to int8 (float I/O) except the ``keep_float`` TFLite nodes.

    The same call the debugger's ``get_nondebug_quantized_model`` makes, without recalibrating per variant.
    """
    from tensorflow.lite.python import convert

    from converter._convert.quiet import silenced

    with silenced(False):
        return convert.mlir_quantize(calibrated, disable_per_channel=False, fully_quantize=False,
                                     enable_numeric_verify=False, denylisted_nodes=list(keep_float) or None)


def tflite_layers(calibrated: bytes, statistics: dict[str, float] | None = None) -> list[Layer]:
    """Every op of the calibrated model that quantisation touches, with the debugger's rmse/scale."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # without default delegates: XNNPACK would show its partitions as DELEGATE ops
    interpreter = Interpreter(model_content=calibrated,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    layers = []
    for op in interpreter._get_ops_details():  # the public API exposes no op list
        if op["op_name"] in _SHAPE_OPS or not len(op["outputs"]):
            continue
        detail = interpreter._get_tensor_details(op["outputs"][0], 0)
        if detail["dtype"] != np.float32:
            continue
        layers.append(Layer(detail["name"], op["op_name"]))
    for key, value in (statistics or {}).items():
        stem = re.sub(r":\d+$", "", key.removeprefix("NumericVerify/"))
        # debug-model names extend the calibrated ones ("...Const_51" -> "...Const_511", ":0" -> ":02")
        owner = max((l for l in layers if stem.startswith(l.tflite_node) or l.tflite_node.startswith(stem)),
                    key=lambda l: len(l.tflite_node), default=None)
        if owner is not None:
            owner.rmse_over_scale = value
    return layers


# ------------------------------------------------------------------------------------------- selection


def rank_by_sensitivity(layers: list[Layer], calibrated: bytes, graph, inputs: Sequence[np.ndarray],
                        reference: list[np.ndarray]) -> list[Layer]:
    """Measure each layer quantised alone (all others float); most damaging first."""
    everything = [l.tflite_node for l in layers]
    for layer in layers:
        alone = quantise(calibrated, [n for n in everything if n != layer.tflite_node])
        layer.sensitivity = safe_score(alone, graph, inputs, reference, None, None).output_rel_err
    return sorted(layers, key=lambda l: -(l.sensitivity or 0.0))


def select(layers: list[Layer], spec: str) -> list[Layer]:
    """Layers named by ``spec``: ``N`` (the N most sensitive) or a comma list of module paths (a module
    keeps every layer inside it), ONNX node names or TFLite node names."""
    from converter.errors import InputError

    if spec.isdigit():
        return layers[:int(spec)]
    chosen = []
    for name in (n.strip() for n in spec.split(",") if n.strip()):
        hits = [l for l in layers if name in (l.tflite_node, l.onnx_node) or
                (l.module is not None and (l.module == name or l.module.startswith(name + ".")))]
        if not hits:
            known = ", ".join(dict.fromkeys(l.module for l in layers if l.module)) or "(no module names known)"
            raise InputError(f"--int8-keep-float: no quantised layer belongs to {name!r}",
                             f"name modules from this list: {known}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


@dataclass
class Int8Analysis:
    """A model calibrated once, its layers ranked by sensitivity: ask it for any keep-float ``spec``."""

    calibrated: bytes = field(repr=False)
    graph: object = field(repr=False)
    layers: list[Layer]
    inputs: list[np.ndarray] = field(repr=False)
    labels: np.ndarray | None = field(repr=False)
    reference: list[np.ndarray] = field(repr=False)
    float_accuracy: float | None
    full_int8: Score
    full_model: bytes = field(repr=False)

    def judge(self, model: bytes) -> Score:
        return safe_score(model, self.graph, self.inputs, self.reference, self.labels, self.float_accuracy)

    def variant(self, kept: Sequence[Layer]) -> bytes:
        return quantise(self.calibrated, [l.tflite_node for l in kept]) if kept else self.full_model

    def choose(self, spec: str = "auto", *, target_drop_pp: float = TARGET_DROP_PP,
               min_agreement: float = MIN_AGREEMENT, max_keep: int = MAX_KEEP) -> KeepFloatChoice:
        """``auto``: the fewest most-sensitive layers that meet the target (none when full int8 does);
        ``N`` or ``module,module``: exactly those (see :func:`select`)."""
        steps = [{"kept": 0, **asdict(self.full_int8)}]
        kept, blob, chosen = [], self.full_model, self.full_int8
        if spec != "auto":
            kept = select(self.layers, spec)
            blob = self.variant(kept)
            chosen = self.judge(blob)
            steps.append({"kept": len(kept), **asdict(chosen)})
        elif not self.full_int8.passes(target_drop_pp, min_agreement):
            kept, blob, chosen = self._search(steps, target_drop_pp, min_agreement, max_keep)
        return KeepFloatChoice(spec, list(kept), self.layers, self.float_accuracy, self.full_int8, chosen,
                               chosen.passes(target_drop_pp, min_agreement), steps, blob)

    def _search(self, steps: list[dict], target_drop_pp: float, min_agreement: float, max_keep: int):
        """Fewest most-sensitive layers meeting the target: try 1, 2, 3, 4, 6, 8, 12, 16, ... then bisect
        between the last failing and the first passing count (keeping more rarely hurts)."""
        tried: dict[int, tuple[bytes, Score]] = {}

        def attempt(k: int) -> bool:
            blob = self.variant(self.layers[:k])
            tried[k] = (blob, self.judge(blob))
            steps.append({"kept": k, **asdict(tried[k][1])})
            return tried[k][1].passes(target_drop_pp, min_agreement)

        limit = min(max_keep, len(self.layers))
        if limit == 0:
            return [], self.full_model, self.full_int8
        schedule = sorted({k for k in (1, 2, 3, 4, *(2 ** e for e in range(2, 12)),
                                       *(3 * 2 ** e for e in range(1, 11))) if k <= limit} | {limit})
        low, high = 0, None
        for k in schedule:
            if attempt(k):
                high = k
                break
            low = k
        while high is not None and high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if attempt(middle) else (middle, high)
        best = high if high is not None else max(tried, key=lambda k: (tried[k][1].runnable, -tried[k][1].output_rel_err))
        return self.layers[:best], *tried[best]


def analyse(serving_module, graph, representative: Representative | None, inputs: Sequence[np.ndarray],
            labels: np.ndarray | None = None, *, onnx_model: onnx.ModelProto | None = None,
            module_paths: set[str] | None = None, rank_unless_passing: tuple[float, float] | None = None
            ) -> Int8Analysis:
    """Calibrate, quantise fully, name every layer and rank the layers by sensitivity.

    Args:
        serving_module / graph: what :func:`converter._convert.tfexport.build_serving_module` and ``onnx_to_keras`` gave.
        representative: the calibration generator ``convert_tflite`` uses.
        inputs / labels: evaluation data in the PyTorch layout (the parity data); labels optional.
        onnx_model / module_paths: to name layers after ONNX nodes and PyTorch modules (optional; without
            ``module_paths`` the module names are read off the ONNX scopes).
        rank_unless_passing: (target drop pp, min agreement): skip the per-layer sensitivity ranking (one
            quantised variant per layer: minutes on a big net) when full int8 already meets them — ``auto``
            then keeps nothing, and the table still has each layer's debugger error (rmse/scale).
    """
    if representative is None:
        from converter.errors import TensorFlowConversionError

        raise TensorFlowConversionError("full int8 needs representative data", "pass --calibration-data FILE.npy")
    calibrated, statistics = calibrate(serving_module, representative)
    layers = tflite_layers(calibrated, statistics)
    if onnx_model is not None:
        from converter.quantization.tflite_origin import origins

        found = origins(calibrated, graph, onnx_model, inputs, module_paths)
        for layer in layers:
            layer.module, layer.onnx_node = found.get(layer.tflite_node, (None, None))
    inputs = [np.asarray(x[:EVAL_SAMPLES]) for x in inputs]
    labels = None if labels is None else labels[:EVAL_SAMPLES]
    reference = run_tflite(calibrated, graph, inputs)
    float_accuracy = score(reference, reference, labels, None, 0).accuracy
    full = quantise(calibrated)
    full_score = safe_score(full, graph, inputs, reference, labels, float_accuracy)
    if rank_unless_passing is None or not full_score.passes(*rank_unless_passing):
        layers = rank_by_sensitivity(layers, calibrated, graph, [x[:RANK_SAMPLES] for x in inputs],
                                     [r[:RANK_SAMPLES] for r in reference])
    return Int8Analysis(calibrated, graph, layers, inputs, labels, reference, float_accuracy, full_score, full)


def choose_keep_float(serving_module, graph, representative: Representative | None, inputs: Sequence[np.ndarray],
                      labels: np.ndarray | None = None, *, spec: str = "auto",
                      onnx_model: onnx.ModelProto | None = None, module_paths: set[str] | None = None,
                      target_drop_pp: float = TARGET_DROP_PP, min_agreement: float = MIN_AGREEMENT,
                      max_keep: int = MAX_KEEP) -> KeepFloatChoice:
    """Full int8 with the layers ``spec`` names kept in float (``auto``: as few as meet the target);
    :func:`analyse` then :meth:`Int8Analysis.choose`."""
    analysis = analyse(serving_module, graph, representative, inputs, labels, onnx_model=onnx_model,
                       module_paths=module_paths,
                       rank_unless_passing=(target_drop_pp, min_agreement) if spec == "auto" else None)
    return analysis.choose(spec, target_drop_pp=target_drop_pp, min_agreement=min_agreement, max_keep=max_keep)
