"""What a person reads from an inference benchmark: a Markdown table and two PNG plots.

- ``latency.png``: batch-1 latency per runtime (median bar, p90 whisker) beside batch-64 throughput;
- ``tradeoff.png``: accuracy against artifact size, each point coloured by its batch-1 latency.
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
                 "'median / floor' = how far each runtime is from it.")
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
    for y, v in enumerate(med):
        ax1.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
    floors = [r.get("floor_b1_s") for r in rows]
    if all(f is not None for f in floors):
        ax1.axvline(min(floors) * 1e6, color="#cc3311", linestyle="--", label="latency floor (fp32)")
        ax1.legend(loc="lower right", fontsize=8)
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
    import matplotlib.pyplot as plt

    rows = [r for r in _ok_rows(result) if r["size_bytes"] and r["accuracy"] is not None]
    if not rows:  # no labelled data: size against latency only
        rows = [dict(r, accuracy=0.0) for r in _ok_rows(result) if r["size_bytes"]]
    t0 = min(r["threads"] for r in rows) if rows else 1
    rows = [r for r in rows if r["threads"] == t0]
    fig, ax = plt.subplots(figsize=(9, 6))
    sizes = [r["size_bytes"] / MIB for r in rows]
    accs = [100 * r["accuracy"] for r in rows]
    lats = [r["latency_median_s"] * 1e6 for r in rows]
    points = ax.scatter(sizes, accs, c=lats, cmap="viridis_r", s=90, edgecolors="black",
                        norm=matplotlib_lognorm(lats))
    for x, y, r, lat in zip(sizes, accs, rows, lats):
        ax.annotate(f"{r['runtime']}\n{lat:,.0f} µs", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("artifact size, MiB (log scale)")
    ax.set_ylabel("top-1 accuracy, %")
    pad = max(0.05, (max(accs) - min(accs)) * 0.3) if accs else 1
    if accs:
        ax.set_ylim(min(accs) - pad, max(accs) + pad)
    fig.colorbar(points, ax=ax, label="batch-1 median latency, µs (darker = faster)")
    ax.set_title(f"Accuracy vs size vs latency ({t0} thread(s))")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def matplotlib_lognorm(values: list[float]):
    from matplotlib.colors import LogNorm

    lo, hi = (min(values), max(values)) if values else (1, 10)
    return LogNorm(vmin=lo, vmax=max(hi, lo * 1.01))
