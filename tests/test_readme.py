"""The README's Python example runs as written (with a model of this repository in place of ``mypkg.nets:build``)."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_the_pytest_gate_example_runs(tmp_path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    gate = next(b for b in blocks if "assert_parity" in b)
    namespace: dict = {}
    exec(gate.replace("mypkg.nets:build", "tests.toy_models:segmentation_head"), namespace)  # noqa: S102
    test = next(v for k, v in namespace.items() if k.startswith("test_"))
    test(tmp_path)  # raises ParityFailed (with the table) if any row fails
    assert (tmp_path / "out" / "model_fp32.tflite").is_file() and (tmp_path / "out" / "parity.json").is_file()
