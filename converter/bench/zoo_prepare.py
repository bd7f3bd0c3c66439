"""Child process of the zoo serving benchmark: convert one zoo model for serving and save the inputs it is timed on.

``python -m converter.bench.zoo_prepare NAME OUT_DIR [--batch 32] [--seed 1]`` writes

- ``OUT_DIR/converted/``: ``converter.api.convert`` of the entry as ``converter.zoo.models.run_entry`` builds it
  (live module with cached honest weights; the entry's input names, dtypes and ranges) but fp32 only, with a
  symbolic batch (``dynamic_batch=True``: one SavedModel / TFLite file serves batch 1 and 32) and parity off (the
  benchmark checks every runtime's batch-1 outputs against PyTorch eager itself);
- ``OUT_DIR/inputs.npz``: ``entry.make_inputs(batch, seed)`` by input name, PyTorch layout (token ids stay int64);
- ``OUT_DIR/prepare.json``: whether the entry is an image classifier (the targets apply to those), its
  parameter count and the conversion's seconds.

The module is built before ``convert`` loads TensorFlow: a timm / transformers model built in a process that has
TensorFlow segfaults (:mod:`converter.zoo.thirdparty`). Exit 0 when all is written, 2 with one
``zoo_prepare: ...`` line on stderr when not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from converter._proc.children import die_with_parent

    die_with_parent()
    p = argparse.ArgumentParser(prog="zoo_prepare")
    p.add_argument("name")
    p.add_argument("out", type=Path)
    p.add_argument("--batch", type=int, default=32, help="samples saved in inputs.npz (the largest batch timed)")
    p.add_argument("--seed", type=int, default=1, help="make_inputs seed (run_entry's parity data uses 1)")
    args = p.parse_args(argv)
    try:
        meta = prepare(args.name, args.out, args.batch, args.seed)
    except Exception as exc:  # the report's cell shows this line
        print(f"zoo_prepare: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 2
    (args.out / "prepare.json").write_text(json.dumps(meta, indent=2) + "\n")
    return 0


def prepare(name: str, out: Path, batch: int, seed: int) -> dict:
    """Convert zoo model ``name`` into ``out/converted`` and save its inputs (see the module docstring)."""
    import numpy as np

    from converter._convert.sources import LoadedModel
    from converter.api import convert
    from converter.bench.zoo_child import entry_options
    from converter.zoo.models import ZOO

    entry = ZOO[name]
    module = entry.build().eval()
    inputs = entry.make_inputs(batch, seed)
    options = entry_options(entry, module, precisions=("fp32",), parity=False, seed=seed, dynamic_batch=True)
    loaded = LoadedModel(name, "callable", module, default_input_shapes=tuple(entry.input_shapes))
    start = time.perf_counter()
    convert(loaded, out_dir=out / "converted", options=options, input_shapes=list(entry.input_shapes), force=True)
    convert_s = time.perf_counter() - start
    np.savez(out / "inputs.npz", **dict(zip(entry.input_names, inputs)))
    return {"model": name, "image_classifier": is_image_classifier(entry.input_shapes, entry.task is not None),
            "parameters": sum(p.numel() for p in module.parameters()), "convert_s": round(convert_s, 1),
            "inputs": {n: str(x.dtype) for n, x in zip(entry.input_names, inputs)}}


def is_image_classifier(input_shapes: list[tuple[int, ...]], labelled: bool) -> bool:
    """One 4-D image input and a class label task: the entries the serving targets are set for (the torchvision
    and timm classifiers); detectors, segmenters and text models are reported without a verdict."""
    return labelled and len(input_shapes) == 1 and len(input_shapes[0]) == 4


if __name__ == "__main__":
    raise SystemExit(main())
