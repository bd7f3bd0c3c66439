"""Convert one model with litert-torch, in the litert venv:

    python -P litert_child.py NAME OUT.tflite                                          # a zoo entry
    python -P litert_child.py SPEC OUT.tflite --input-shape 1,1,28,28 [--weights W.pt]  # a convert source

Started by :func:`converter.bench.litert.litert_command` with the venv's interpreter, which has torch and
litert-torch but neither TensorFlow nor ONNX: only torch-side code of this repository is imported
(``converter.zoo.models``, or ``converter._convert.sources`` for a source spec such as ``mnist_cnn``, the module
the reference-net benchmark's PyTorch rows load). Timed from the outside like any candidate, so it does what a user
of litert-torch does and nothing more: build the module, ``litert_torch.convert(module, sample_args)``,
``.export(path)``. Exit 0 with the file written; exit 2 with one ``litert_child: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def source_module(spec: str, weights: str | None, input_shape: tuple[int, ...]) -> tuple[object, tuple]:
    """(module in eval mode, one seeded float32 sample of ``input_shape``) for a ``convert`` source spec: the same
    loader, seeded initialisation and ``weights_only`` weights as the benchmark's PyTorch rows."""
    import torch

    from converter._convert.sources import load_model

    module = load_model(spec, weights).module
    if module is None:
        raise ValueError(f"{spec} is not a PyTorch module (an .onnx source): litert-torch converts PyTorch modules")
    sample = torch.randn(input_shape, generator=torch.Generator().manual_seed(0))
    return module.eval(), (sample,)


def _zoo_module(name: str) -> tuple[object, tuple]:
    from converter.zoo.models import ZOO

    entry = ZOO[name]
    return entry.build().eval(), entry.sample_inputs()


def main(argv: list[str]) -> int:
    from converter._proc.children import die_with_parent

    die_with_parent()
    p = argparse.ArgumentParser(prog="litert_child")
    p.add_argument("name", help="a zoo model; with --input-shape, a convert source spec (e.g. mnist_cnn)")
    p.add_argument("out", help="the .tflite file to write")
    p.add_argument("--input-shape", help="the source's input shape, PyTorch layout, e.g. 1,1,28,28")
    p.add_argument("--weights", help="the source's state_dict file")
    args = p.parse_args(argv)
    try:
        import litert_torch

        if args.input_shape:
            shape = tuple(int(d) for d in args.input_shape.split(","))
            module, sample = source_module(args.name, args.weights, shape)
        else:
            module, sample = _zoo_module(args.name)
        litert_torch.convert(module, sample).export(args.out)
    except Exception as exc:  # the benchmark's cell shows this line: one line, the exception's own words
        print(f"litert_child: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # run as a file by another venv's python: this repository's root goes on the path first (not the script's
    # own directory, whose module names would shadow installed packages)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    raise SystemExit(main(sys.argv[1:]))
