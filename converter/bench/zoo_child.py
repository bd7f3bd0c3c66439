"""Our candidate in the zoo conversion benchmark: one zoo model through ``converter.api.convert``, in a child.

``python -m converter.bench.zoo_child NAME OUT_DIR [--precisions fp32,fp16] [--parity-samples N | --no-parity]``
``python -m converter.bench.zoo_child NAME OUT_DIR --argv FILE.json [--parity-samples N | --no-parity]``: write the
``convert`` command line that converts the same entry instead (the spec ``converter.zoo.factories:NAME``, its input
shapes, names, dtypes and ranges, and with parity the same samples as an ``.npz`` beside FILE), untimed; the
benchmark then times that command, what a user of the CLI runs.

Converts as ``converter.zoo.models.run_entry`` does (a live module with cached honest weights, the entry's input
names, dtypes and ranges, parity on the zoo's realistic labelled samples) and nothing else: no scoreboard row,
no reference statistics, so the process's time and memory are the conversion's. Timed from the outside
(:func:`converter.bench.proc.run_measured`) like the peers, whose children also build the module first.
Exit 0 when the artifacts are written (a parity failure included: the benchmark measures cost; ``parity.json``
says whether it passed), 2 with one ``zoo_child: ...`` line on stderr when the conversion fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from converter._proc.children import die_with_parent

    die_with_parent()
    p = argparse.ArgumentParser(prog="zoo_child")
    p.add_argument("name")
    p.add_argument("out", type=Path)
    p.add_argument("--precisions", default="fp32,fp16")
    parity = p.add_mutually_exclusive_group(required=True)
    parity.add_argument("--parity-samples", type=int)
    parity.add_argument("--no-parity", action="store_true")
    p.add_argument("--argv", type=Path, help="write the convert command line as JSON here instead of converting")
    args = p.parse_args(argv)
    if args.argv is not None:
        args.argv.write_text(json.dumps(convert_argv(args.name, args.out, tuple(args.precisions.split(",")),
                                                     None if args.no_parity else args.parity_samples,
                                                     args.argv.with_suffix(".npz"))))
        return 0
    try:
        convert_entry(args.name, args.out, tuple(args.precisions.split(",")),
                      None if args.no_parity else args.parity_samples)
    except Exception as exc:  # the benchmark's cell shows this line
        print(f"zoo_child: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 2
    return 0


def returns_dict(entry, module) -> bool:
    """Whether the module returns a dict (a Hugging Face ``ModelOutput``): it then names its outputs itself, as in
    ``converter.zoo.models.run_entry``, and the entry's output names are not passed."""
    import torch

    with torch.no_grad():
        return isinstance(module(*entry.sample_inputs()), dict)


def entry_options(entry, module, **fields):
    """The ``ConvertOptions`` ``run_entry`` gives ``entry`` (its input names, dtypes and ranges; its output names
    unless the module names them), with ``fields`` (precisions, parity, ...) on top."""
    from converter.options import ConvertOptions

    return ConvertOptions(input_names=tuple(entry.input_names),
                          output_names=() if returns_dict(entry, module) else tuple(entry.output_names),
                          input_dtypes=entry.input_dtypes, input_ranges=entry.input_ranges, **fields)


def convert_argv(name: str, out: Path, precisions: tuple[str, ...], parity_samples: int | None,
                 npz: Path) -> list[str]:
    """The ``convert`` arguments (after the command itself) for zoo model ``name``; with parity, its samples are
    written to ``npz`` (one array per input name, the seed ``run_entry`` uses)."""
    import numpy as np

    from converter.zoo.models import ZOO

    entry = ZOO[name]
    argv = [f"converter.zoo.factories:{name}", "--out", str(out), "--precision", ",".join(precisions)]
    for k, (shape, input_name) in enumerate(zip(entry.input_shapes, entry.input_names)):
        argv += ["--input-shape", ",".join(map(str, shape)), "--input-name", input_name]
        if entry.input_dtypes:
            argv += ["--input-dtype", entry.input_dtypes[k]]
        if entry.input_ranges:
            argv += ["--input-range", ",".join(map(str, entry.input_ranges[k]))]
    if not returns_dict(entry, entry.build()):
        for output_name in entry.output_names:
            argv += ["--output-name", output_name]
    if parity_samples is None:
        return [*argv, "--no-parity"]
    np.savez(npz, **dict(zip(entry.input_names, entry.make_inputs(parity_samples, 1))))
    return [*argv, "--parity-data", str(npz), "--parity-samples", str(parity_samples)]


def convert_entry(name: str, out: Path, precisions: tuple[str, ...], parity_samples: int | None) -> None:
    """Convert zoo model ``name`` into ``out``; ``parity_samples=None``: parity off (``--no-parity``)."""
    from converter._convert.sources import LoadedModel
    from converter.api import convert
    from converter.parity.data import ParityData
    from converter.zoo.models import ZOO

    entry = ZOO[name]
    module = entry.build()
    options = entry_options(entry, module, precisions=precisions, parity=parity_samples is not None,
                            parity_samples=parity_samples or 1)
    parity_data: str | ParityData = "random"  # parity off: convert feeds one seeded sample to the export
    if parity_samples is not None:
        data = entry.make_inputs(parity_samples, 1)  # the seed run_entry uses (its seed 0 + 1)
        labels = entry.task(data) if entry.task is not None else None
        parity_data = ParityData(data, labels, f"zoo {name}: {parity_samples} seeded realistic samples", real=True)
    loaded = LoadedModel(name, "callable", module, default_input_shapes=tuple(entry.input_shapes))
    convert(loaded, out_dir=out, options=options, input_shapes=list(entry.input_shapes), parity_data=parity_data,
            force=True)


if __name__ == "__main__":
    raise SystemExit(main())
