"""Convert one zoo model with litert-torch: ``python -P litert_child.py NAME OUT.tflite`` in the litert venv.

Started by :func:`converter.bench.litert.litert_command` with the venv's interpreter, which has torch and
litert-torch but neither TensorFlow nor ONNX: only torch-side code of this repository is imported
(``converter.zoo.models``). Timed from the outside like any candidate, so it does what a user of litert-torch
does and nothing more: build the module (cached weights), ``litert_torch.convert(module, sample_args)``,
``.export(path)``. Exit 0 with the file written; exit 2 with one ``litert_child: ...`` line on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from converter._proc.children import die_with_parent

    die_with_parent()
    if len(argv) != 2:
        print("litert_child: usage: litert_child.py NAME OUT.tflite", file=sys.stderr)
        return 2
    name, out = argv
    try:
        import litert_torch

        from converter.zoo.models import ZOO

        entry = ZOO[name]
        module = entry.build().eval()
        litert_torch.convert(module, entry.sample_inputs()).export(out)
    except Exception as exc:  # the benchmark's cell shows this line: one line, the exception's own words
        print(f"litert_child: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # run as a file by another venv's python: this repository's root goes on the path first (not the script's
    # own directory, whose module names would shadow installed packages)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    raise SystemExit(main(sys.argv[1:]))
