"""One self-contained HTML page for a converted directory: ``write_html(out_dir, bench) -> out_dir/report.html``.

Sections: parity (``parity.json``), benchmark (table + plots, inlined as base64 PNG; from ``bench`` or
``out_dir/bench/bench.json``), the manifest (I/O names, shapes, layouts, per-artifact op histograms) and
the environment (versions, CPU, threads). Nothing is fetched at view time: no external CSS, fonts or
scripts. A small inline script records every image's decoded size in ``#img-check`` so a headless
browser test can prove the images render (``naturalWidth > 0``) from the dumped DOM alone.
"""

from __future__ import annotations

import base64
import json
import tempfile
from html import escape
from pathlib import Path

from converter.parity.markdown import passed_cell

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f7}tr.fail td{background:#fde8e8}tr.pass td.v{color:#17632a}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}code{font-size:12px}
h2{border-bottom:2px solid #4477aa;padding-bottom:3px;margin-top:1.6em}.muted{color:#777}"""

IMG_CHECK_JS = """window.addEventListener('load', function () {
  var out = [];
  document.querySelectorAll('img').forEach(function (img) {
    img.setAttribute('data-natural-width', img.naturalWidth);
    img.setAttribute('data-natural-height', img.naturalHeight);
    out.push({alt: img.alt, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight});
  });
  document.getElementById('img-check').textContent = JSON.stringify(out);
});"""


def write_html(out_dir: Path, bench: dict | None = None) -> Path:
    """Write ``out_dir/report.html`` and return its path; every section degrades to a note when its data is absent."""
    out_dir = Path(out_dir)
    manifest = _load(out_dir / "manifest.json") or {}
    parity = _load(out_dir / "parity.json")
    bench = bench if bench is not None else _load(out_dir / "bench" / "bench.json")
    title = f"Conversion report: {manifest.get('source', {}).get('name', out_dir.name)}"
    body = [f"<h1>{escape(title)}</h1>", f"<p class='muted'>{escape(str(out_dir.resolve()))}</p>",
            "<h2>Parity</h2>", _parity(parity),
            "<h2>Benchmark</h2>", _bench(bench),
            "<h2>Manifest</h2>", _manifest(manifest),
            "<h2>Environment</h2>", _environment(manifest, bench),
            "<pre id='img-check' class='muted'></pre>"]
    page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) +
            f"\n<script>{IMG_CHECK_JS}</script></body></html>\n")
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def table(headers: list[str], rows: list[list[object]], row_classes: list[str] | None = None) -> str:
    """An HTML table; cells are escaped text (``None`` shows as '-')."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    out = [f"<table><thead><tr>{head}</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = f" class='{row_classes[i]}'" if row_classes else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{escape('-' if c is None else str(c))}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _pct(v: float | None) -> str | None:
    return None if v is None else f"{100 * v:.2f} %"


def _g(v: float | None) -> str | None:
    return None if v is None else f"{v:.3g}"


def _parity(parity: dict | None) -> str:
    if not parity:
        return "<p class='muted'>No parity.json (converted with --no-parity).</p>"
    verdict = "PASSED" if parity["passed"] else "FAILED"
    head = (f"<p>Reference <b>{escape(parity['reference'])}</b> on {parity['samples']} samples "
            f"({escape(parity.get('data', ''))}): <b>{verdict}</b>"
            + (f"; reference accuracy {_pct(parity['reference_accuracy'])}" if parity.get("reference_accuracy") is not None else "")
            + "</p>")
    rows, classes = [], []
    for r in parity["runtimes"]:
        rows.append([r["runtime"], r["precision"], r.get("artifact"), r.get("size_bytes"), _g(r["max_abs_err"]),
                     _g(r["mean_abs_err"]), _g(r["max_rel_err"]), _g(r["cosine_min"]), _pct(r.get("top1_agreement")),
                     _pct(r.get("accuracy")), passed_cell(r["passed"], r.get("reason", ""))])
        classes.append("pass" if r["passed"] else "fail")
    warnings = "".join(f"<p>warning: {escape(w)}</p>" for w in parity.get("warnings", []))
    return head + table(["runtime", "precision", "artifact", "bytes", "max abs err", "mean abs err", "max rel err",
                         "cosine min", "top-1 agree", "accuracy", "passed"], rows, classes) + warnings


def _bench(bench: dict | None) -> str:
    if not bench:
        return "<p class='muted'>No benchmark: run <code>scripts/benchmark OUT_DIR --html</code>.</p>"
    from converter.bench.output import MIB, write_plots

    rows = []
    for r in bench["rows"]:
        if not r["ok"]:
            rows.append([r["runtime"], r["threads"], f"FAILED: {r.get('error')}"] + [None] * 7)
            continue
        rows.append([r["runtime"], r["threads"], r.get("artifact") or "state_dict",
                     None if r["size_bytes"] is None else f"{r['size_bytes'] / MIB:.2f}",
                     f"{r['latency_median_s'] * 1e6:,.0f}", f"{r['latency_p90_s'] * 1e6:,.0f}",
                     f"{r['throughput_sps']:,.0f}", r["batch64_mode"], _pct(r.get("accuracy")),
                     None if r.get("latency_vs_floor") is None else f"{r['latency_vs_floor']:.1f}x"])
    parts = [table(["runtime", "threads", "artifact", "size MiB", "batch-1 median µs", "batch-1 p90 µs",
                    "batch-64 samples/s", "batch-64 mode", "accuracy", "median / floor"], rows)]
    checks = [[c["what"], c["value"], f"<= {c['target']}", "yes" if c["met"] else f"NO: {c['miss']}"]
              for c in bench.get("checks", [])]
    parts.append(table(["check", "value", "target", "met"], checks))
    with tempfile.TemporaryDirectory(prefix="report-plots-") as tmp:
        for png in write_plots(bench, Path(tmp)):
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{escape(png.stem)}' src='data:image/png;base64,{data}'></figure>")
    work = bench.get("work")
    if work:
        parts.append(f"<p>{work['flops_per_sample']:,} FLOPs per sample ({escape(work['convention'])}); "
                     f"{work['parameters']:,} parameters.</p>")
    return "\n".join(parts)


def _manifest(manifest: dict) -> str:
    if not manifest:
        return "<p class='muted'>No manifest.json.</p>"
    src = manifest.get("source", {})
    parts = [f"<p>Source: <code>{escape(str(src.get('spec')))}</code> ({escape(str(src.get('kind')))}), weights "
             f"<code>{escape(str(src.get('weights')))}</code>; layout <b>{escape(str(manifest.get('layout')))}</b>, "
             f"opset {manifest.get('opset')}, dynamic batch {manifest.get('dynamic_batch')}.</p>"]
    io_rows = [[kind, t["name"], t["shape"], t["dtype"], t.get("pytorch_shape"), t.get("perm_from_pytorch")]
               for kind in ("inputs", "outputs") for t in manifest.get(kind, [])]
    parts.append(table(["", "name", "artifact shape", "dtype", "PyTorch shape", "perm from PyTorch"], io_rows))
    art_rows = [[key, a.get("path"), a.get("bytes"), a.get("precision"),
                 ", ".join(f"{op}×{n}" for op, n in a.get("op_histogram", {}).items()) or None]
                for key, a in manifest.get("artifacts", {}).items()]
    parts.append(table(["artifact", "path", "bytes", "precision", "op histogram"], art_rows))
    if manifest.get("timings_s"):
        parts.append(table(["conversion stage", "seconds"], [[k, v] for k, v in manifest["timings_s"].items()]))
    return "\n".join(parts)


def _environment(manifest: dict, bench: dict | None) -> str:
    from converter.bench.core import environment

    env = (bench or {}).get("environment") or environment()
    rows = [["CPU", env["cpu"]], ["CPU flags", ", ".join(env["cpu_flags"])], ["logical CPUs", env["cpu_count"]],
            ["benchmark threads", ", ".join(map(str, (bench or {}).get("config", {}).get("threads", []))) or None],
            ["python", env["python"]], ["platform", env["platform"]]]
    rows += [[pkg, v] for pkg, v in env["versions"].items()]
    rows += [[f"{k} (at conversion)", v] for k, v in manifest.get("versions", {}).items()]
    return table(["", "value"], rows)
