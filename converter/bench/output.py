"""What a person reads from an inference benchmark: a Markdown table and two PNG plots.

- ``latency.png``: batch-1 latency per runtime (median bar, p90 whisker) beside batch-64 throughput;
- ``tradeoff.png``: batch-1 latency against artifact size, each point coloured by its accuracy.
"""

from __future__ import annotations

from pathlib import Path

MIB = 1024 * 1024


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:,.0f}"


def _ok_rows(result: dict) -> list[dict]:
    return [r for r in result["rows"] if r["ok"]]


def to_markdown(result: dict) -> str:
    """One row per (runtime, threads); then the target checks and the latency floor it is judged against."""
    base = {r["threads"]: r for r in _ok_rows(result) if r["runtime"] == "pytorch"}
    lines = ["| runtime | threads | artifact | size MiB | b1 median µs | b1 p90 µs | b64 samples/s | batch-64 mode "
             "| accuracy % | Δ vs torch pp | floor µs | median / floor |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if not r["ok"]:
            lines.append(f"| {r['runtime']} | {r['threads']} | FAILED: {(r.get('error') or '?')[:80]} |"
                         + " |" * 9)
            continue
        size = "-" if r["size_bytes"] is None else f"{r['size_bytes'] / MIB:.2f}"
        acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}"
        ref = base.get(r["threads"])
        delta = "-" if r["accuracy"] is None or ref is None else f"{100 * (r['accuracy'] - ref['accuracy']):+.2f}"
        floor = r.get("floor_b1_s")
        vs = "-" if floor is None else f"{r['latency_vs_floor']:.1f}x"
        lines.append(f"| {r['runtime']} | {r['threads']} | {r['artifact'] or 'state_dict'} | {size} "
                     f"| {_us(r['latency_median_s'])} | {_us(r['latency_p90_s'])} | {r['throughput_sps']:,.0f} "
                     f"| {r['batch64_mode']} | {acc} | {delta} | {_us(floor)} | {vs} |")
    lines += ["", "| check | value | target | met |", "|---|---|---|---|"]
    for c in result["checks"]:
        lines.append(f"| {c['what']} | {c['value']} | <= {c['target']} | {'yes' if c['met'] else 'NO: ' + c['miss']} |")
    lines += ["", _work_text(result)]
    return "\n".join(lines)


def _work_text(result: dict) -> str:
    work = result.get("work")
    if not work:
        return "No PyTorch source: no FLOP count / latency floor."
    parts = [f"Work per sample: {work['flops_per_sample']:,} FLOPs ({work['macs_per_sample']:,} MACs; "
             f"{work['convention']}); {work['parameters']:,} parameters = {work['weight_bytes_fp32']:,} bytes fp32."]
    for t, m in sorted(result["machine"].items(), key=lambda kv: int(kv[0])):
        parts.append(f"Machine, {t} thread(s): matmul {m['matmul_flops_s'] / 1e9:.1f} GFLOP/s, copy bandwidth "
                     f"{m['copy_bandwidth_bytes_s'] / 1e9:.1f} GB/s (DRAM, 256 MiB) / "
                     f"{m['cache_bandwidth_bytes_s'] / 1e9:.1f} GB/s (cache, 4 MiB).")
    parts.append("Floor = max(FLOPs / matmul rate, weight bytes / cache bandwidth), batch 1; "
                 "'median / floor' = how far each runtime is from it. int8 rows read 1-byte weights but their compute "
                 "floor uses the fp32 matmul rate, so int8 kernels (VNNI / AMX-INT8) can land under 1.0x.")
    return "\n".join(parts)


def write_plots(result: dict, out_dir: Path) -> list[Path]:
    """Write ``latency.png`` and ``tradeoff.png`` into ``out_dir``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_latency_plot(result, out_dir / "latency.png"), _tradeoff_plot(result, out_dir / "tradeoff.png")]


def _label(r: dict, many_threads: bool) -> str:
    return f"{r['runtime']} ({r['threads']}t)" if many_threads else r["runtime"]


def _latency_plot(result: dict, path: Path) -> Path:
    import matplotlib.pyplot as plt

    rows = sorted(_ok_rows(result), key=lambda r: r["latency_median_s"])
    many = len({r["threads"] for r in rows}) > 1
    labels = [_label(r, many) for r in rows]
    med = [r["latency_median_s"] * 1e6 for r in rows]
    p90 = [(r["latency_p90_s"] - r["latency_median_s"]) * 1e6 for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 2), sharey=True)
    ax1.barh(labels, med, xerr=[[0] * len(rows), p90], color="#4477aa", capsize=3)
    right = max(med) * 6  # p90 whiskers of a noisy neighbour may run off the chart; the medians never do
    t0 = min(r["threads"] for r in rows)
    floors = {r.get("precision"): r.get("floor_b1_s") for r in rows if r.get("floor_b1_s") and r["threads"] == t0}
    for precision, color in (("fp32", "#cc3311"), ("dynamic_int8", "#ee7733")):
        if precision in floors:
            ax1.axvline(floors[precision] * 1e6, color=color, linestyle="--",
                        label=f"latency floor, {precision} weights, {t0} thread(s) ({floors[precision] * 1e6:,.0f} µs)")
    if floors:
        ax1.legend(loc="upper right", fontsize=8)
    left = min([*med, *(f * 1e6 for f in floors.values())]) / 2
    ax1.set_xlim(left, right)
    for y, v in enumerate(med):  # the median, written inside the bar's base where no whisker can cover it
        ax1.text(left * 1.08, y, f"{v:,.0f}", va="center", fontsize=8, color="white", fontweight="bold")
    ax1.set_xscale("log")
    ax1.set_xlabel("batch-1 latency, µs (bar: median, whisker: p90; log scale)")
    ax1.invert_yaxis()
    tput = [r["throughput_sps"] for r in rows]
    ax2.barh(labels, tput, color="#228833")
    for y, v in enumerate(tput):
        ax2.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
    ax2.set_xlabel("batch-64 throughput, samples/s")
    ax2.set_xlim(0, max(tput) * 1.25)
    threads = ",".join(str(t) for t in sorted({r["threads"] for r in rows}))
    fig.suptitle(f"Inference per runtime ({threads} thread(s); lower latency / higher throughput is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tradeoff_plot(result: dict, path: Path) -> Path:
    """x: latency, y: artifact size, colour: accuracy; labels staggered where points share a size."""
    import matplotlib.pyplot as plt

    rows = [r for r in _ok_rows(result) if r["size_bytes"]]
    t0 = min((r["threads"] for r in rows), default=1)
    rows = sorted((r for r in rows if r["threads"] == t0), key=lambda r: (r["size_bytes"], r["latency_median_s"]))
    fig, ax = plt.subplots(figsize=(10, 6))
    lats = [r["latency_median_s"] * 1e6 for r in rows]
    sizes = [r["size_bytes"] / MIB for r in rows]
    accs = [100 * r["accuracy"] if r["accuracy"] is not None else float("nan") for r in rows]
    from matplotlib.ticker import FuncFormatter

    known = [a for a in accs if a == a]
    lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
    pad = max(0.05, 0.1 * (hi - lo))  # identical accuracies must not stretch the colour bar to 80-100 %
    points = ax.scatter(lats, sizes, c=accs, cmap="viridis", s=110, edgecolors="black", zorder=3,
                        vmin=lo - pad, vmax=hi + pad)
    rank: dict[float, int] = {}
    for x, y, r, acc in zip(lats, sizes, rows, accs):
        k = rank[round(y, 1)] = rank.get(round(y, 1), -1) + 1
        dy = (12 + 13 * (k // 2)) * (1 if k % 2 == 0 else -1)
        text = r["runtime"] + ("" if acc != acc else f" ({acc:.2f}%)")
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, dy), fontsize=8,
                    va="center", arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(min(lats) / 1.6, max(lats) * 3)
    ax.set_ylim(min(sizes) / 1.6, max(sizes) * 1.8)
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    sparse = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")  # 2, 5, 20, 50, ...
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(sparse)
    ax.tick_params(which="minor", labelsize=7)
    ax.set_xlabel("batch-1 median latency, µs (log scale; left is faster)")
    ax.set_ylabel("artifact size, MiB (log scale; lower is smaller)")
    if any(a == a for a in accs):
        fig.colorbar(points, ax=ax, label="top-1 accuracy, %")
    ax.set_title(f"Accuracy vs size vs latency ({t0} thread(s))")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
