"""``convert``: argument parsing and exit codes only; the work is in :mod:`converter.api`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from converter._convert import interrupts, torchchild
from converter.errors import EXIT_BAD_INPUT, ConverterError, InputError
from converter.options import DEFAULT_OPSET, EXPORTERS, INPUT_DTYPES, PRECISIONS, TARGETS, ConvertOptions

EXAMPLES = """examples:
  convert mnist_cnn --weights runs/torch/model.pt --out out/mnist
  convert mymodels.net:build --input-shape 1,3,224,224 --dynamic-batch --out out/net
  convert model.onnx --precision fp32,fp16 --layout keep --out out/onnx
  convert mnist_cnn --weights runs/torch/model.pt --out out/mnist --check   # CI gate on existing artifacts
exit codes: 0 converted and parity passed, 1 parity failed or --check found a changed artifact (artifacts
kept), 2 bad input or conversion error (nothing written), 130/143 interrupted by SIGINT/SIGTERM (nothing written)
"""


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is the same one line as every other error (exit 2), not a usage block."""

    def error(self, message: str):
        print(f"convert: error: {message} — see convert --help", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="convert", description="PyTorch -> ONNX -> TF SavedModel + TFLite, with a "
                                "parity report across every runtime.", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="mnist_cnn | package.module:callable | model.torchscript.pt | model.pt2 | model.onnx")
    p.add_argument("--weights", help="state_dict file for a reference name or module:callable")
    p.add_argument("--out", required=True, type=Path, help="output directory (written atomically)")
    p.add_argument("--force", action="store_true", help="replace an existing --out that convert wrote (one with its "
                   "manifest.json); any other directory is refused")
    p.add_argument("--input-shape", action="append", default=[], help="e.g. 1,1,28,28 (repeat per input)")
    p.add_argument("--input-dtype", action="append", default=[], metavar="DTYPE",
                   help=f"one per input, in order ({', '.join(INPUT_DTYPES)}; default float32), e.g. int64 for token ids")
    p.add_argument("--input-range", action="append", default=[], metavar="LOW,HIGH",
                   help="one per input, in order: random integer parity data is drawn in [LOW, HIGH), e.g. 0,30522 "
                        "for a vocabulary (default 0,2); a float input takes a 0,1 placeholder")
    p.add_argument("--input-name", action="append", default=[], help="input names, in order (repeatable)")
    p.add_argument("--output-name", action="append", default=[], help="output names, in order (repeatable)")
    p.add_argument("--dynamic-batch", action="store_true", help="keep the batch dimension symbolic everywhere")
    p.add_argument("--dynamic-dim", action="append", default=[], metavar="NAME:AXIS[:LABEL]",
                   help="keep axis AXIS (PyTorch layout) of input NAME symbolic everywhere, e.g. input_ids:1 "
                        "(repeatable; same LABEL or, unlabelled, same size = one dimension); parity runs at two sizes")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--exporter", default="auto", metavar="|".join(EXPORTERS),
                   help="torch -> ONNX exporter: torchscript, dynamo (torch.export; opset >= 18) or auto (default: "
                        "torchscript, then dynamo if it fails); the manifest records the one used")
    p.add_argument("--layout", choices=["nhwc", "keep"], default="nhwc",
                   help="nhwc: 4-D image inputs become NHWC (default); keep: exactly the PyTorch shapes")
    p.add_argument("--precision", help=f"TFLite precisions, comma list of {','.join(PRECISIONS)} (default: all; "
                   "int8 only when real calibration data is at hand)")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"artifacts to write ({','.join(TARGETS)})")
    p.add_argument("--parity-data", help="mnist | random | IDX directory | file.npy | file.npz (one array per input "
                   "name, PyTorch layout, the input's dtype) (default: mnist for mnist_cnn, random otherwise)")
    p.add_argument("--parity-samples", type=int, help="default 1000 for mnist_cnn, 100 otherwise")
    p.add_argument("--calibration-data", type=Path, help=".npy of representative inputs for full int8")
    p.add_argument("--int8-keep-float", metavar="auto|N|MODULES",
                   help="selective int8: keep the most damaging layers in float (auto: as few as keep the accuracy "
                        "drop <= 1 pp; N: the N worst; or a comma list of PyTorch module paths)")
    p.add_argument("--no-parity", action="store_true", help="convert only")
    p.add_argument("--check", action="store_true", help="re-run parity on an existing --out")
    p.add_argument("--atol", type=float, help="override the fp32 absolute tolerance")
    p.add_argument("--rtol", type=float, help="override the fp32 relative tolerance")
    p.add_argument("--class-axis", action="append", default=[], metavar="NAME:AXIS[:START:STOP]",
                   help="judge output NAME by top-1 agreement along AXIS (PyTorch layout; START:STOP: the class "
                        "channels, e.g. output0:1:4:84 for a YOLO head), or NAME:none for the error bound only "
                        "(repeatable; default: outputs named logits/scores/probs/*_logits and default-named [N, C])")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", choices=["html"], help="also write OUT/report.html (parity, manifest, environment; "
                   "benchmark plots when scripts/benchmark has run)")
    p.add_argument("--localise", action="store_true",
                   help="name the first PyTorch module where each runtime diverges (automatic on a parity failure)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="let a .pt2 file be read with Python's full unpickler; only for files you trust: a crafted "
                        "file runs code while it is read (default: tensors only, such files are refused)")
    p.add_argument("--verbose", action="store_true", help="show onnx2tf/TF output")
    p.add_argument("--quiet", action="store_true",
                   help="no progress display (on a terminal: a status line with the stage and the elapsed time; "
                        "otherwise one line per stage)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from converter._convert.quiet import quiet_tensorflow

    quiet_tensorflow(args.verbose)
    try:
        with interrupts.remembered():
            if args.model is not None and torchchild.has_torch_side(args.model):
                torchchild.prestart()  # the PyTorch child imports torch from now on, beside this process's imports
            return _run(args)
    except KeyboardInterrupt as exc:
        print("convert: interrupted — nothing was written to --out", file=sys.stderr)
        return interrupts.exit_code(exc)
    except Exception as exc:
        signalled = interrupts.interrupted_by()  # an error the interrupt caused: the child died of the same SIGTERM
        if signalled is not None:
            print("convert: interrupted — nothing was written to --out", file=sys.stderr)
            return signalled.exit_code
        if isinstance(exc, ConverterError):
            print(f"convert: error: {exc}", file=sys.stderr)
            return exc.exit_code
        # a bug, or a library failing in a way not mapped yet: still one line, exit 2
        if args.verbose:
            raise
        from converter._convert.outdir import disk_full

        if disk_full(exc):
            print("convert: error: the disk is full — free some space or choose an --out on another disk",
                  file=sys.stderr)
        else:
            text = " ".join(str(exc).split())[:300]
            print(f"convert: error: unexpected {type(exc).__name__}: {text} — rerun with --verbose for the "
                  "traceback, and report it", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        torchchild.discard()
        interrupts.forget()


def _run(args: argparse.Namespace) -> int:
    from converter import api

    spec = args.model
    if spec is None and not args.check:
        raise InputError("no model given", "pass the model, e.g. convert mnist_cnn --weights model.pt --out DIR")
    recorded = _recorded_source(args) if spec is None else {}
    is_ref = (spec or recorded.get("spec")) in ("mnist_cnn",)
    options = ConvertOptions(
        input_names=tuple(args.input_name), output_names=tuple(args.output_name), layout=args.layout,
        dynamic_batch=args.dynamic_batch, opset=args.opset, precisions=_precisions(args),
        targets=_csv(args.targets, "--targets"), parity=not args.no_parity,
        parity_samples=args.parity_samples, atol=args.atol, rtol=args.rtol,
        seed=args.seed, verbose=args.verbose, localise=args.localise,
        input_dtypes=tuple(args.input_dtype), input_ranges=_ranges(args.input_range),
        int8_keep_float=() if args.int8_keep_float is None else _csv(args.int8_keep_float, "--int8-keep-float"), allow_pickle=args.allow_pickle,
        exporter=args.exporter, dynamic_dims=tuple(args.dynamic_dim), class_axes=tuple(args.class_axis))
    parity_data = args.parity_data or ("mnist" if is_ref else "random")
    if args.check:
        result = api.check(spec, args.out, options, weights=args.weights, parity_data=parity_data, isolate=True)
    else:
        result = api.convert(spec, out_dir=args.out, options=options, weights=args.weights, input_shapes=_shapes(args.input_shape) or None,
                             parity_data=parity_data, calibration=args.calibration_data, force=args.force, isolate=True,
                             progress=not args.quiet)
    if result.parity is not None:
        from converter.parity.judge import to_markdown

        print(to_markdown(result.parity))
        for row in result.parity.failures():
            print(f"convert: parity FAILED for {row.runtime} ({row.precision}): {row.reason}", file=sys.stderr)
        for warning in result.parity.warnings:
            print(f"convert: parity FAILED: {warning}", file=sys.stderr)
    for note in result.notes:
        print(f"convert: note: {note}", file=sys.stderr)
    if args.report == "html":
        from converter.parity.html import write_html

        print(f"convert: wrote {write_html(result.out_dir)}", file=sys.stderr)
    done = "checked" if args.check else "wrote"
    print(f"convert: {done} {result.out_dir}", file=sys.stderr)
    return result.exit_code


def _precisions(args: argparse.Namespace) -> tuple[str, ...] | None:
    """``--precision`` as given, or None: the shared default (:func:`converter.options.default_precisions`)."""
    return None if args.precision is None else _csv(args.precision, "--precision")


def _csv(text: str, flag: str) -> tuple[str, ...]:
    """A comma list; an empty one (``''``, ``','``) is refused rather than read as "all" or "none"."""
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if not items:
        raise InputError(f"{flag} {text!r} names nothing", f"pass a comma list, or drop {flag} for the default")
    return items


def _ranges(items: list[str]) -> tuple[tuple[int, int], ...]:
    ranges = []
    for item in items:
        try:
            low, high = (int(v) for v in item.split(","))
        except ValueError:
            raise InputError(f"--input-range {item!r} is not LOW,HIGH", "write e.g. --input-range 0,30522") from None
        ranges.append((low, high))
    return tuple(ranges)


def _shapes(items: list[str]) -> list[tuple[int, ...]]:
    shapes = []
    for item in items:
        try:
            dims = tuple(int(d) for d in item.replace("x", ",").split(","))
        except ValueError:
            raise InputError(f"--input-shape {item!r} is not a comma list of integers", "write e.g. 1,3,224,224") from None
        if not dims or any(d <= 0 for d in dims):
            raise InputError(f"--input-shape {item!r} has a non-positive dimension", "write e.g. 1,3,224,224")
        shapes.append(dims)
    return shapes


def _recorded_source(args) -> dict:
    from converter.api import read_manifest

    return read_manifest(args.out).source.to_json()


def entry() -> None:
    """The ``convert`` console command: :func:`main`, then exit without the interpreter's teardown.

    Why: once every file is written, closed and moved into place, tearing down TensorFlow's module graph
    and thread pools takes ~0.9 s on 2 cores (measured: ``cli.main`` returned at 5.05 s, the process ended
    at 5.95 s) and does nothing for the user. The atexit hooks still run (autograph removes its generated
    files in one); only the module teardown is skipped. The process is the command's own, so TensorFlow loads
    without the optional imports a conversion never uses (:func:`converter._convert.quiet.own_process`). Library callers
    of :func:`main` are unaffected by both."""
    from converter._convert.quiet import exit_without_teardown, own_process

    own_process()
    exit_without_teardown(main())


if __name__ == "__main__":
    entry()
