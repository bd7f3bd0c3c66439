"""The HTML report renders in a real browser: tables present, every inlined image decodes (naturalWidth > 0).

One conversion per module (``--precision fp32,dynamic_int8 --parity-samples 100``) and a tiny synthetic
benchmark result (the benchmark itself is tested in ``test_bench.py``), then headless Chromium
(Debian package ``chromium``; ``scripts/setup`` installs it) dumps the DOM after the page's load event, when
the report's inline script has written every image's decoded size into ``#img-check``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest

from tests.conftest import run_cli

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def fake_bench() -> dict:
    """A benchmark result with the shape ``converter.bench.core.run`` returns (two runtimes, one failed)."""
    from converter.bench.core import environment

    def row(runtime: str, artifact: str, size: int, lat: float, acc: float) -> dict:
        return {"runtime": runtime, "threads": 1, "ok": True, "error": None, "precision": "fp32",
                "artifact": artifact, "batch64_mode": "resized", "accuracy": acc, "accuracy_samples": 100,
                "size_bytes": size, "latency_median_s": lat, "latency_p90_s": lat * 1.2, "throughput_sps": 64 / (lat * 20),
                "batch64_median_s": lat * 20, "floor_b1_s": lat / 2, "latency_vs_floor": 2.0}

    failed = {"runtime": "saved_model_xla", "threads": 1, "ok": False, "error": "RuntimeError: boom",
              "size_bytes": None, "accuracy": None}
    return {"rows": [row("tflite_fp32", "model_fp32.tflite", 2_778_580, 150e-6, 0.93),
                     row("tflite_dynamic_int8", "model_dynamic_int8.tflite", 699_816, 45e-6, 0.929), failed],
            "checks": [{"what": "t=1 dynamic_int8 / fp32 latency", "value": 0.3, "target": 0.6, "met": True, "miss": ""}],
            "config": {"threads": [1]}, "environment": environment(), "work": None, "machine": {}}


@pytest.fixture(scope="module")
def converted(tmp_path_factory, mnist_dir) -> Path:
    import torch

    from reference_models.mnist_cnn import MnistCNN

    work = tmp_path_factory.mktemp("report")
    torch.manual_seed(0)
    torch.save(MnistCNN().state_dict(), work / "w.pt")
    out = work / "conv"
    result = run_cli("convert", "mnist_cnn", "--weights", work / "w.pt", "--out", out, "--precision",
                     "fp32,dynamic_int8", "--parity-data", mnist_dir, "--parity-samples", "100")
    assert (out / "parity.json").is_file(), result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def rendered(converted, tmp_path_factory) -> tuple[Path, str]:
    from converter.parity.html import write_html

    path = write_html(converted, fake_bench())
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (scripts/setup does this)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and "<html" in dom.stdout, dom.stderr[-2000:]
    return path, dom.stdout


def test_report_is_one_self_contained_file(rendered):
    path, _ = rendered
    html = path.read_text()
    assert path.name == "report.html"
    assert not re.search(r"""(src|href)=['"](https?:|//|file:)""", html), "the page must fetch nothing"
    assert html.count("data:image/png;base64,") == 2


def test_parity_table_renders_every_runtime_row(rendered, converted):
    _, dom = rendered
    parity = json.loads((converted / "parity.json").read_text())
    for row in parity["runtimes"]:
        cells = f"<td>{row['runtime']}</td><td>{row['precision']}</td>"
        assert cells in dom, f"parity row {row['runtime']} ({row['precision']}) missing from the rendered page"


def test_benchmark_table_and_checks_render(rendered):
    _, dom = rendered
    assert "<td>tflite_fp32</td><td>1</td><td>model_fp32.tflite</td>" in dom
    assert "<td>tflite_dynamic_int8</td>" in dom
    assert "FAILED: RuntimeError: boom" in dom
    assert "<td>t=1 dynamic_int8 / fp32 latency</td>" in dom


def test_manifest_and_environment_render(rendered, converted):
    _, dom = rendered
    manifest = json.loads((converted / "manifest.json").read_text())
    assert f"<td>{manifest['inputs'][0]['name']}</td><td>[1, 28, 28, 1]</td>" in dom
    assert "FULLY_CONNECTED×2" in dom  # op histogram of the TFLite files
    assert "<td>CPU</td>" in dom and "<td>torch</td>" in dom


def test_every_image_decodes_in_the_browser(rendered):
    _, dom = rendered
    match = re.search(r"<pre id=\"img-check\"[^>]*>(.*?)</pre>", dom, re.S)
    assert match and match.group(1).strip(), "the page's load script did not run"
    images = json.loads(unescape(match.group(1)))
    assert {i["alt"] for i in images} == {"latency", "tradeoff"}
    for image in images:
        assert image["naturalWidth"] > 0 and image["naturalHeight"] > 0, image
