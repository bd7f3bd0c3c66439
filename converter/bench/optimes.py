"""Where a batch-1 call spends its time, by op type: the kernels TensorFlow runs for the SavedModel's
``serving_default`` (its step stats) and the nodes onnxruntime runs for ``model.onnx`` (its profiler).

Each profile is taken on a second, traced copy of the artifact, after warm-up calls, so the timed runtime is never
traced; it names the kernels that actually ran (``_MklNativeConv2D`` where oneDNN rewrote a ``Conv2D``,
``FusedConv`` where onnxruntime fused a Conv with its activation). The result maps each op type to its time per call
and its count per call: ``{"Conv2D": {"us": 804.1, "count": 41.0}, ...}``, largest first. Function-call ops
(``PartitionedCall``) are left out: their time is their body's, counted op by op.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

#: traced calls per profile, after as many untraced ones
CALLS = 20
#: TensorFlow ops whose time is the time of the function they call
_CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})

OpTimes = dict[str, dict[str, float]]


def saved_model(path: Path, feed: dict[str, np.ndarray], threads: int, calls: int = CALLS) -> OpTimes:
    """Op times of the SavedModel's ``serving_default`` on ``feed`` (input name -> array in the SavedModel's layout),
    in a graph of its own with ``threads`` intra-op threads and one inter-op thread, as the benchmark runs it."""
    import tensorflow as tf

    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1)
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph, config=config) as session:
        meta = tf.compat.v1.saved_model.load(session, ["serve"], str(path))
        signature = meta.signature_def["serving_default"]
        unknown = sorted(set(feed) - set(signature.inputs))
        if unknown:
            raise KeyError(f"serving_default has no input {', '.join(unknown)} (it has {', '.join(signature.inputs)})")
        tensors = {signature.inputs[name].name: value for name, value in feed.items()}
        fetches = [t.name for t in signature.outputs.values()]
        for _ in range(calls):
            session.run(fetches, tensors)
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        totals: dict[str, list[float]] = {}
        for _ in range(calls):
            stats = tf.compat.v1.RunMetadata()
            session.run(fetches, tensors, options=options, run_metadata=stats)
            for device in stats.step_stats.dev_stats:
                for node in device.node_stats:
                    op = _tf_op(node.timeline_label)
                    if op is not None and op not in _CALL_OPS:
                        _add(totals, op, node.op_end_rel_micros - node.op_start_rel_micros)
    return _per_call(totals, calls)


def _tf_op(label: str) -> str | None:
    """The op type in a step-stats timeline label, ``"name = Type(inputs)"``; None for bookkeeping nodes."""
    if " = " not in label:
        return None
    return label.split(" = ", 1)[1].split("(", 1)[0].strip() or None


def onnxruntime(path: Path, feed: dict[str, np.ndarray], threads: int, calls: int = CALLS) -> OpTimes:
    """Op times of ``path`` in onnxruntime (CPU, ``threads`` intra-op threads), from its profiler's node events of
    the last ``calls`` runs (the first ``calls`` warm up)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="optimes-") as work:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(work) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(2 * calls):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    return node_times(events, calls)


def node_times(events: list[dict], calls: int) -> OpTimes:
    """Op times from onnxruntime profiler ``events``: each node's kernel time within the last ``calls`` model runs."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session"
                  and e.get("name") == "model_run")[-calls:]
    totals: dict[str, list[float]] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if any(start <= event["ts"] <= end for start, end in runs):
            _add(totals, event.get("args", {}).get("op_name", "?"), event["dur"])
    return _per_call(totals, len(runs))


def _add(totals: dict[str, list[float]], op: str, micros: float) -> None:
    entry = totals.setdefault(op, [0.0, 0])
    entry[0] += micros
    entry[1] += 1


def _per_call(totals: dict[str, list[float]], calls: int) -> OpTimes:
    if not calls:
        return {}
    ordered = sorted(totals.items(), key=lambda item: -item[1][0])
    return {op: {"us": round(us / calls, 1), "count": round(count / calls, 2)} for op, (us, count) in ordered}
