"""What the zoo serving benchmark concludes: per-row statistics, the target ratios with verdicts, the op difference
between our TFLite file and litert-torch's, and the Markdown a person reads. Pure functions on plain data.

Targets (batch 1, image classifiers, the thread count of the run): the SavedModel's serving signature at most
:data:`TARGET_SAVED_MODEL_VS_ORT` times onnxruntime's latency on the same ONNX graph, and our TFLite fp32 file at
most :data:`TARGET_TFLITE_VS_LITERT` times litert-torch's file of the same module (same interpreter, XNNPACK, same
threads). Other models get the same ratios without a verdict: the targets were set for classifiers.
"""

from __future__ import annotations

import statistics

import numpy as np

TARGET_SAVED_MODEL_VS_ORT = 1.2
TARGET_TFLITE_VS_LITERT = 1.0
#: (numerator, denominator, target for image classifiers at batch 1). The two ``keras_twin`` ratios have no target:
#: they place the SavedModel against TensorFlow's own build of the architecture (:mod:`converter.bench.keras_twin`),
#: and that build against onnxruntime (TensorFlow's floor for the first ratio).
RATIOS: tuple[tuple[str, str, float | None], ...] = (
    ("saved_model", "onnxruntime", TARGET_SAVED_MODEL_VS_ORT),
    ("keras_twin", "onnxruntime", None),
    ("saved_model", "keras_twin", None),
    ("tflite_fp32", "tflite_litert", TARGET_TFLITE_VS_LITERT))
#: Runtimes with weights of their own (same architecture, not the same function): timed, never compared with eager.
OWN_WEIGHTS = frozenset({"keras_twin"})
#: A/A control per ratio numerator: a second process on the same file. Its gap to the numerator's row is how far
#: two identical rows land apart on this machine, the noise a ratio near its target must be read against.
AA_CONTROL = {"tflite_fp32": "tflite_fp32_aa"}
LABELS = {"pytorch": "PyTorch eager", "onnxruntime": "onnxruntime", "saved_model": "SavedModel serving_default",
          "keras_twin": "TF's own Keras build, serving_default",
          "tflite_fp32": "our TFLite fp32", "tflite_litert": "litert-torch TFLite",
          "tflite_fp32_aa": "our TFLite fp32 (A/A control)"}
MIB = 1024 * 1024


def row(runtime: str, threads: int, batch: int, info: dict, times: list[float], *, size_bytes: int | None = None,
        rel_err: float | None = None) -> dict:
    """One (runtime, threads, batch) cell: median / p90 / min of the timed calls, or why there are none."""
    mode = (info.get("modes") or {}).get(str(batch))
    error = info.get("error") if not info.get("ready") else \
        mode if mode is not None and mode.startswith("unavailable") else None if times else "no timed calls"
    out = {"runtime": runtime, "threads": threads, "batch": batch, "ok": error is None, "error": error, "mode": mode,
           "artifact": info.get("artifact"), "size_bytes": size_bytes, "max_rel_err_vs_eager": rel_err}
    if error is None:
        out.update(median_s=statistics.median(times), p90_s=float(np.percentile(times, 90)), min_s=min(times),
                   calls=len(times))
    return out


def max_rel_err(got: list[np.ndarray], want: list[np.ndarray]) -> float | None:
    """max |got - want| / max |want| over all outputs (the worst output); None when the outputs do not line up
    (count or shape), which says the runtime was fed or read in another order."""
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
        return None
    errs = [float(np.abs(g.astype(np.float64) - w).max()) / max(float(np.abs(w).max()), 1e-12)
            for g, w in zip(got, want) if w.size]
    return max(errs, default=0.0)


def verdict(value: float | None, target: float | None) -> tuple[bool | None, str]:
    """(met, word): ``met`` is None where there is nothing to judge (no value, or no target for this model)."""
    if value is None:
        return None, "not measured"
    if target is None:
        return None, "no target"
    return (True, "met") if value <= target else (False, "MISSED")


def within_noise(value: float | None, target: float | None, aa: float | None) -> bool | None:
    """Whether a ratio lies no further from its target than the A/A control lies from 1 (two runs of one file):
    then this machine cannot tell a miss from a pass. None when any of the three is missing."""
    if None in (value, target, aa):
        return None
    return abs(value - target) <= abs(aa - 1.0)


def ratios(rows: list[dict], image_classifier: bool) -> list[dict]:
    """Every :data:`RATIOS` pair at every (threads, batch) of ``rows``; a target only at batch 1 for classifiers.
    ``aa_control``: the numerator's A/A twin over the numerator (:data:`AA_CONTROL`), where it was timed;
    ``within_noise``: :func:`within_noise`."""
    ok = {(r["runtime"], r["threads"], r["batch"]): r for r in rows if r["ok"]}
    out = []
    twin_timed = any(r["runtime"] == "keras_twin" for r in rows)
    for threads, batch in sorted({(r["threads"], r["batch"]) for r in rows}):
        for num, den, target in RATIOS:
            a, b = ok.get((num, threads, batch)), ok.get((den, threads, batch))
            if "keras_twin" in (num, den) and not twin_timed:
                continue  # no twin for this architecture: no row, rather than a "not measured" one
            value = a["median_s"] / b["median_s"] if a and b else None
            goal = target if image_classifier and batch == 1 else None
            met, word = verdict(value, goal)
            twin = ok.get((AA_CONTROL.get(num), threads, batch))
            aa = twin["median_s"] / a["median_s"] if twin and a else None
            out.append({"what": f"{LABELS[num]} / {LABELS[den]}", "numerator": num, "denominator": den,
                        "threads": threads, "batch": batch, "value": _round(value), "target": goal, "met": met,
                        "verdict": word, "aa_control": _round(aa), "within_noise": within_noise(value, goal, aa)})
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def op_diff(ours: dict[str, int], theirs: dict[str, int]) -> list[dict]:
    """Each op whose count differs between two TFLite files, largest difference first (ties by name)."""
    ops = sorted(set(ours) | set(theirs))
    diff = [{"op": op, "ours": ours.get(op, 0), "litert": theirs.get(op, 0),
             "delta": ours.get(op, 0) - theirs.get(op, 0)} for op in ops if ours.get(op, 0) != theirs.get(op, 0)]
    return sorted(diff, key=lambda d: (-abs(d["delta"]), d["op"]))


def op_diff_text(diff: list[dict], limit: int | None = None) -> str:
    """``TRANSPOSE ×4 more (5 vs 1), MEAN ×10 fewer (0 vs 10)``; ``same ops`` when nothing differs."""
    if not diff:
        return "same ops"
    parts = [f"{d['op']} ×{abs(d['delta'])} {'more' if d['delta'] > 0 else 'fewer'} ({d['ours']} vs {d['litert']})"
             for d in diff[:limit]]
    rest = len(diff) - len(parts)
    return ", ".join(parts) + (f", and {rest} more op types" if rest > 0 else "")


def top_ops(histogram: dict[str, int], limit: int = 8) -> str:
    """``AddV2 88, Mul 57, ...``: the most frequent ops first (ties by name)."""
    ranked = sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{op} {n}" for op, n in ranked[:limit]) + (", ..." if len(ranked) > limit else "")


# ---------------------------------------------------------------------------------------------- Markdown


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:,.0f}"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / MIB:.2f} MiB" if n >= MIB / 10 else f"{n / 1024:.1f} KiB"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}x"  # 1.003x is a miss of a 1.0x target; 1.00x would hide it


def _verdict(ratio: dict) -> str:
    return ratio.get("verdict", "-") + (" (within A/A noise)" if ratio.get("within_noise") else "")


def to_markdown(result: dict) -> str:
    """A summary line per model, then per model its timing table, ratios and op difference."""
    cfg = result["config"]
    lines = ["# Zoo serving benchmark", "",
             f"Threads {', '.join(map(str, cfg['threads']))}; {cfg['rounds']} interleaved round(s) of "
             f"{cfg['batch1_calls_per_round']} batch-1 and {cfg['batchN_calls_per_round']} batch-{cfg['batch']} calls "
             "per runtime, each runtime in its own process. Targets at batch 1, image classifiers: SavedModel <= "
             f"{TARGET_SAVED_MODEL_VS_ORT}x onnxruntime, our TFLite fp32 <= {TARGET_TFLITE_VS_LITERT}x litert-torch's.",
             "TF's own Keras build of the architecture, where keras.applications has one, is TensorFlow's floor for "
             "the first ratio.",
             "", "| model | kind | threads | SavedModel / ORT b1 | verdict | TF's own build / ORT b1 "
             "| our TFLite / litert b1 | verdict | ops that differ (ours vs litert-torch) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model in result["models"]:
        lines += _summary_lines(model)
    for model in result["models"]:
        lines += ["", *_model_lines(model)]
    return "\n".join(lines)


def _one_line(text: str | None) -> str:
    return " ".join((text or "?").split()).replace("|", "/")


def _kind(model: dict) -> str:
    return "image classifier" if model.get("image_classifier") else "other (no target)"


def _summary_lines(model: dict) -> list[str]:
    if model.get("error"):
        return [f"| {model['model']} | - | - | FAILED: {_one_line(model['error'])[:120]} | | | | | |"]
    ops = op_diff_text(model["op_diff"], limit=3) if model.get("op_diff") is not None else "-"
    out = []
    for threads in sorted({r["threads"] for r in model["ratios"]}):
        cells = {(r["numerator"], r["denominator"]): r for r in model["ratios"]
                 if r["threads"] == threads and r["batch"] == 1}
        sm, tfl = cells.get(("saved_model", "onnxruntime"), {}), cells.get(("tflite_fp32", "tflite_litert"), {})
        floor = cells.get(("keras_twin", "onnxruntime"), {})
        aa = f" (A/A {_x(tfl['aa_control'])})" if None not in (tfl.get("aa_control"), tfl.get("value")) else ""
        out.append(f"| {model['model']} | {_kind(model)} | {threads} | {_x(sm.get('value'))} | "
                   f"{_verdict(sm)} | {_x(floor.get('value'))} | {_x(tfl.get('value'))}{aa} | {_verdict(tfl)} | {ops} |")
    return out


def _model_lines(model: dict) -> list[str]:
    head = f"## {model['model']}"
    if model.get("error"):
        return [head, "", f"FAILED: {model['error']}"]
    litert = f"; litert-torch export FAILED: {_one_line(model['litert_error'])}" if model.get("litert_error") else ""
    inputs = ", ".join(f"{n} {d}" for n, d in (model.get("inputs") or {}).items())
    about = (f"{_kind(model)}, {model['parameters']:,} parameters, inputs {inputs}; our conversion (fp32, symbolic "
             f"batch) {model.get('convert_s', '-')} s{litert}.")
    return [head, "", about, "", *_timing_table(model["rows"]), "", *_ratio_table(model["ratios"]), *_ops_lines(model)]


def _timing_table(rows: list[dict]) -> list[str]:
    lines = ["| runtime | threads | batch | median µs | p90 µs | µs / sample | calls | mode | size "
             "| max rel err vs eager |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = f"| {LABELS.get(r['runtime'], r['runtime'])} | {r['threads']} | {r['batch']} |"
        if not r["ok"]:
            lines.append(f"{cells} FAILED: {_one_line(r['error'])[:100]} |" + " |" * 6)
            continue
        err = "own weights" if r["runtime"] in OWN_WEIGHTS else "-" if r["max_rel_err_vs_eager"] is None else \
            f"{r['max_rel_err_vs_eager']:.1e}"
        lines.append(f"{cells} {_us(r['median_s'])} | {_us(r['p90_s'])} | {_us(r['median_s'] / r['batch'])} "
                     f"| {r['calls']} | {r['mode']} | {_size(r['size_bytes'])} | {err} |")
    return lines


def _ratio_table(ratios: list[dict]) -> list[str]:
    lines = ["| ratio | threads | batch | value | target | verdict | A/A control (same file twice) |",
             "|---|---|---|---|---|---|---|"]
    for c in ratios:
        target = "-" if c["target"] is None else f"<= {c['target']}x"
        lines.append(f"| {c['what']} | {c['threads']} | {c['batch']} | {_x(c['value'])} | {target} | {_verdict(c)} "
                     f"| {_x(c.get('aa_control'))} |")
    return lines


def _ops_lines(model: dict) -> list[str]:
    """The ops behind the two ratios: TFLite vs TFLite by name; SavedModel vs ONNX by their own vocabularies."""
    hist = model.get("op_histograms") or {}
    if model.get("op_diff") is None:
        lines = ["", "Ops: no litert-torch file to compare with."]
    else:
        totals = " vs ".join(str(sum(hist.get(k, {}).values())) for k in ("tflite_fp32", "tflite_litert"))
        lines = ["", f"Ops, our TFLite fp32 vs litert-torch's (all subgraphs; {totals} ops in all): "
                 f"{op_diff_text(model['op_diff'])}."]
    tf_ops, onnx_ops = hist.get("saved_model"), hist.get("onnxruntime")
    if tf_ops and onnx_ops:
        lines += ["", "Graph ops, SavedModel serving_default (TF kernels, constants and plumbing left out) vs the ONNX "
                  f"graph onnxruntime runs: {sum(tf_ops.values())} vs {sum(onnx_ops.values())}; "
                  f"SavedModel: {top_ops(tf_ops)}; ONNX: {top_ops(onnx_ops)}."]
    shares = [_op_time_text(label, runtime, model) for runtime, label in
              (("saved_model", "SavedModel serving_default"), ("onnxruntime", "onnxruntime"))]
    if any(shares):
        lines += ["", "Where a batch-1 call's time goes, by kernel (a traced copy after warm-up; each op type's share of "
                  "the traced kernel time applied to the runtime's measured median, with its count per call): "
                  + "; ".join(s for s in shares if s) + "."]
    if hist.get("keras_twin"):
        lines += ["", f"TF's own Keras build of the architecture: {sum(hist['keras_twin'].values())} graph ops; "
                  f"{top_ops(hist['keras_twin'])}."]
    if model.get("dynamic_batch_route"):
        lines += ["", f"Symbolic batch route: {model['dynamic_batch_route']}"]
    return lines


def _op_time_text(label: str, runtime: str, model: dict, top: int = 6) -> str | None:
    """``"SavedModel ...: _MklNativeConv2D 2,690 µs (40), ... of 4,800 µs"`` from ``model["op_times"][runtime]``,
    scaled to that runtime's batch-1 median at the profile's thread count; None without either."""
    entry = (model.get("op_times") or {}).get(runtime)
    if not entry:
        return None
    median = next((r.get("median_s") for r in model.get("rows", []) if r["runtime"] == runtime and r["batch"] == 1
                   and r["threads"] == entry["threads"] and r.get("ok")), None)
    traced = sum(t["us"] for t in entry["ops"].values())
    if not median or not traced:
        return None
    scale = median * 1e6 / traced
    parts = [f"{op} {t['us'] * scale:,.0f} µs ({t['count']:g})" for op, t in list(entry["ops"].items())[:top]]
    return f"{label}: {', '.join(parts)} of {median * 1e6:,.0f} µs"
