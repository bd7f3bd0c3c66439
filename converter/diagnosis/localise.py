"""Which layer diverged: name the first PyTorch module whose output is wrong in a failing runtime.

    loc = Localiser(torch_module, onnx.load("out/model.onnx"), inputs)   # inputs: PyTorch layout, a few samples
    loc.localise("saved_model", "fp32")
    # {"module": "layer3.1.conv2", "onnx_node": "/layer3/layer3.1/conv2/Conv", "op": "Conv",
    #  "rel_err_output": 0.41, "rel_err_inputs": [2e-07], "checked_modules": 21, ...}

The machinery (hooks, ONNX scopes, probes, replay routes) lives in :mod:`converter.diagnosis.probes`; this module
replays one runtime's route with probes, judges each module, and fills ``RuntimeResult.localisation``
for every failed row of a parity report (:func:`localise_failures`). Localisation is a diagnosis: it
never raises into the conversion; a problem becomes ``{"error": ...}`` in the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from converter.diagnosis import probes as P
from converter._convert.quiet import silenced
from converter.parity.judge import TOLERANCES
from converter.parity.metrics import relative_error

#: Relative error (max |Δ| / max |ref| per sample) at which a module's output counts as diverged: the parity
#: table's ``localise_rel_err`` per precision (unknown precisions: fp32's).
THRESHOLDS: dict[str, float] = {precision: tol["localise_rel_err"] for precision, tol in TOLERANCES.items()}
#: How many parity inputs localisation replays (a few are enough to see a divergence).
SAMPLES = 4
#: Runtimes whose route can be replayed with probes -> the route.
ROUTES: dict[str, str] = {"onnxruntime": "onnxruntime", "saved_model": "tensorflow",
                          "tf2onnx_roundtrip": "tensorflow", "tflite": "tflite"}
#: A replay whose final error is below the default threshold but above this adapts the threshold to it.
ADAPT_ABOVE = 1e-5
#: Modules shown either side of the culprit in ``trail``.
TRAIL = 2


class Localiser:
    """Probes planned once for a model; :meth:`localise` replays any route with them.

    Args:
        module: the PyTorch model (eval mode), or None for an ``.onnx`` source: the modules are then the
            exporter's scopes and the reference is onnxruntime on ``reference_onnx`` (default ``onnx_model``).
        onnx_model: the graph the failing route consumes (``model.onnx``, or a faulty copy in tests).
        inputs: PyTorch-layout arrays, one per model input, ``[N, ...]`` (N small: every route runs them all).
        reference_onnx: a graph known to match PyTorch, with the same node and tensor names, used only to
            pick which PyTorch output each probe stands for (default: ``onnx_model``).
        layout_mode: the conversion's ``--layout`` (the TF routes must repeat its layout decisions).
        calibration: representative inputs for an int8 TFLite replay (default: ``inputs``).
    """

    def __init__(self, module, onnx_model: onnx.ModelProto, inputs: Sequence[np.ndarray], *,
                 reference_onnx: onnx.ModelProto | None = None, layout_mode: str = "nhwc",
                 calibration: Sequence[np.ndarray] | None = None) -> None:
        inputs = [inputs] if isinstance(inputs, np.ndarray) else inputs
        self.inputs = [np.ascontiguousarray(x) for x in inputs]
        self.layout_mode = layout_mode
        self.calibration = calibration if calibration is not None else self.inputs
        self.batch = P.graph_batch(onnx_model)
        trusted = reference_onnx if reference_onnx is not None else onnx_model
        calls = P.trace_modules(module, self.inputs) if module is not None else P.trace_onnx(trusted, self.inputs)
        planned = P.plan_probes(onnx_model, calls)
        self.model = P.instrument(onnx_model, planned)
        clean_model = self.model if reference_onnx is None else P.instrument(reference_onnx, planned)
        clean = P.run_onnxruntime(clean_model, self.inputs)
        self.probes = P.attach_references(planned, calls, clean)
        if module is not None:
            from converter._convert.export import run_torch

            self.reference_outputs = run_torch(module, self.inputs)
        else:
            self.reference_outputs = [clean[o.name] for o in trusted.graph.output]
        self.reference = "PyTorch hooks" if module is not None else "onnxruntime on the ONNX source"
        self._keras = None

    def replay(self, route: str, precision: str = "fp32") -> dict[str, np.ndarray]:
        """Every probe (and model output) of the instrumented graph through ``route``, PyTorch layout."""
        if route == "onnxruntime":
            return P.run_onnxruntime(self.model, self.inputs)
        if self._keras is None:
            self._keras = P.keras_graph(self.model, self.inputs, self.layout_mode)
        if route == "tensorflow":
            return P.run_keras_graph(self._keras, self.inputs, self.batch)
        if route == "tflite":
            return P.run_tflite_graph(self._keras, self.inputs, self.batch, precision, self.calibration)
        raise ValueError(f"unknown route {route!r}; use one of {sorted(set(ROUTES.values()))}")

    def localise(self, runtime: str, precision: str = "fp32", threshold: float | None = None) -> dict:
        """The first module (execution order) whose output's relative error exceeds ``threshold``.

        Without an explicit ``threshold``, a replay whose final error stays under the precision's default
        (an fp32 row failing at 2e-4) uses half that final error instead: the first module where the error
        reaches half its final size (``threshold_adapted``).
        """
        route = ROUTES.get(runtime, runtime)
        got = self.replay(route, precision)
        outputs = [o.name for o in self.model.graph.output][:len(self.reference_outputs)]
        final = max(relative_error(r, got[n]) for r, n in zip(self.reference_outputs, outputs))
        adapted = threshold is None and ADAPT_ABOVE < final <= THRESHOLDS.get(precision, THRESHOLDS["fp32"])
        if threshold is None:
            threshold = final / 2 if adapted else THRESHOLDS.get(precision, THRESHOLDS["fp32"])
        table = [_judge(p, got) for p in self.probes]
        culprit = next((k for k, row in enumerate(table) if row["rel_err_output"] > threshold), None)
        result: dict = {
            "module": None, "onnx_node": None, "op": None, "fused": [], "rel_err_output": None,
            "rel_err_inputs": None, "threshold": threshold, "threshold_adapted": adapted,
            "checked_modules": len(table), "samples": len(self.inputs[0]),
            "method": f"probes replayed through {route} ({precision}) vs {self.reference}",
            "replay_output_rel_err": final, "largest_jump": _largest_jump(table),
        }
        result["reproduced"] = final > (ADAPT_ABOVE if adapted else threshold)
        if precision in ("int8", "dynamic_int8"):
            result["hint"] = ("int8 noise grows layer by layer; converter.quantization.quantise ranks layers by their damage "
                              "and keeps the worst in float (--int8-keep-float auto)")
        if culprit is None:
            result["note"] = ("no single module crosses the threshold; see largest_jump" if result["reproduced"] else
                              "the replay does not reproduce the failure: the fault lies after this route "
                              "(tf2onnx, or the runtime itself)")
            return result
        result.update({k: table[culprit][k] for k in ("module", "onnx_node", "op", "fused", "rel_err_output",
                                                       "rel_err_inputs")})
        lo, hi = max(0, culprit - TRAIL), min(len(table), culprit + TRAIL + 1)
        result["trail"] = [{"module": r["module"], "rel_err_output": r["rel_err_output"]} for r in table[lo:hi]]
        return result


def _judge(probe: P.Probe, got: dict[str, np.ndarray]) -> dict:
    inputs = [relative_error(ref, got[probe.input_name(k)]) for k, ref in enumerate(probe.input_references)
              if ref is not None]
    return {"module": probe.module, "onnx_node": probe.onnx_node, "op": probe.op, "fused": list(probe.fused),
            "rel_err_output": relative_error(probe.reference, got[probe.output_name]), "rel_err_inputs": inputs}


def _largest_jump(table: list[dict]) -> dict | None:
    """The module whose output error most exceeds its inputs' (where quantisation noise is born)."""
    if not table:
        return None
    growth = [r["rel_err_output"] - max(r["rel_err_inputs"], default=0.0) for r in table]
    best = table[int(np.argmax(growth))]
    return {"module": best["module"], "rel_err_output": best["rel_err_output"], "rel_err_inputs": best["rel_err_inputs"]}


def localise_failures(model, out_dir: str | Path, layout_mode: str, data, report, options,
                      calibration: Sequence[np.ndarray] | None = None, every_row: bool = False) -> None:
    """Fill ``row.localisation`` for every failed row of ``report`` whose route can be replayed
    (every row with ``every_row``: ``convert --localise`` on a passing report shows where error grows).

    ``model`` is the :class:`converter._convert.sources.LoadedModel`; ``data`` the :class:`ParityData` parity used;
    ``layout_mode`` the conversion's ``--layout``; ``options`` the :class:`ConvertOptions` (only ``verbose`` is read). Rows of other runtimes (pytorch,
    torchscript, keras_native) get ``{"skipped": why}``; a localisation that itself fails, ``{"error": why}``.
    ``calibration``: what the int8 artifact was calibrated on (``--calibration-data``), else the parity inputs.
    """
    failed = [r for r in report.runtimes if every_row or not r.passed]
    if not failed:
        return
    try:
        inputs = [x[:SAMPLES] for x in data.inputs]
        localiser = Localiser(getattr(model, "module", None), onnx.load(str(Path(out_dir) / "model.onnx")), inputs,
                              layout_mode=layout_mode,
                              calibration=calibration if calibration is not None else data.inputs)
    except Exception as exc:  # a diagnosis must never break the conversion
        for row in failed:
            row.localisation = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        return
    for row in failed:
        if row.runtime == "onnxruntime" and localiser.reference != "PyTorch hooks":
            row.localisation = {"skipped": "onnxruntime is the reference of an .onnx source"}
        elif row.runtime not in ROUTES:
            row.localisation = {"skipped": f"no replay route for runtime {row.runtime}"}
        if row.localisation is not None:
            continue
        try:
            with silenced(getattr(options, "verbose", False)):
                row.localisation = localiser.localise(row.runtime, row.precision)
        except Exception as exc:
            row.localisation = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def plant_fault(model: onnx.ModelProto, node_name: str, scale: float = 1.5) -> onnx.ModelProto:
    """A copy of ``model`` with the weight (input 1) of ``node_name`` multiplied by ``scale`` (for tests
    and for checking that localisation works on a new architecture)."""
    from onnx import numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    node = next((n for n in copy.graph.node if n.name == node_name), None)
    if node is None:
        raise KeyError(f"no node named {node_name!r}")
    weight = next((t for t in copy.graph.initializer if t.name == node.input[1]), None)
    if weight is None:
        raise KeyError(f"input 1 of {node_name!r} is not an initializer")
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(scale), weight.name))
    return copy
