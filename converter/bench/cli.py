"""``scripts/benchmark``: argument parsing only; the work is in ``converter.bench.core`` (a converted directory),
``converter.bench.zoo_serving`` (``--zoo``) and ``converter.bench.training`` (``--training``).

    scripts/benchmark OUT_DIR [--json F] [--md F] [--plots DIR] [--html] [--threads 1,2] [--rounds 5]
    scripts/benchmark --zoo NAME[,NAME...] [--threads 2] [--rounds 5] [--json F] [--md F] [--work DIR [--reuse]]
    scripts/benchmark --training [--epochs 2] [--json F] [--md F]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_DATA = Path("/work/shared/data/mnist")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmark", description="Inference benchmark of a converted directory "
                                "(one child process per runtime, interleaved), or --training.")
    p.add_argument("out_dir", nargs="?", type=Path, help="a directory written by convert --out")
    p.add_argument("--zoo", help="serving benchmark of zoo models instead (comma list of converter.zoo names): "
                   "SavedModel / onnxruntime / PyTorch eager / our TFLite fp32 / litert-torch's TFLite at batch 1 "
                   "and 32, and TF's own Keras build of the architecture where keras.applications has one "
                   "(default JSON/Markdown: zoo_serving.json / .md)")
    p.add_argument("--work", type=Path, help="--zoo: keep each model's artifacts and child logs here")
    p.add_argument("--reuse", action="store_true", help="--zoo: reuse the artifacts a previous run left in --work")
    p.add_argument("--json", type=Path, help="default OUT_DIR/bench/bench.json")
    p.add_argument("--md", type=Path, help="default OUT_DIR/bench/bench.md")
    p.add_argument("--plots", type=Path, help="PNG directory (default OUT_DIR/bench/)")
    p.add_argument("--html", action="store_true", help="also write OUT_DIR/report.html (converter.parity.html)")
    p.add_argument("--threads", help="comma list of intra-op thread counts, e.g. 1,2 (default 1; --zoo: 2)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds over all runtimes")
    p.add_argument("--lat-calls", type=int, default=200, help="batch-1 calls per runtime per round")
    p.add_argument("--thr-calls", type=int, default=10, help="batch-64 (--zoo: batch-32) calls per runtime per round")
    p.add_argument("--runtimes", help="comma list (default: all available)")
    p.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else None,
                   help="IDX directory of labelled digits for accuracy (default: the shared MNIST test set)")
    p.add_argument("--accuracy-samples", type=int, default=10_000)
    p.add_argument("--setup-parallel", type=int, default=2, help="children built at once (set-up is never timed)")
    p.add_argument("--quick", action="store_true", help="tiny counts for tests: 1 round, 20/2 calls, 512 digits")
    p.add_argument("--training", action="store_true", help="benchmark the reference trainers instead")
    p.add_argument("--epochs", type=int, default=2, help="--training: epochs per run")
    p.add_argument("--train-rounds", type=int, default=1, help="--training: repeats of every variant")
    p.add_argument("--train-out", type=Path, help="--training: keep the runs' directories here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.training:
        from converter.bench import training as bench_training

        result = bench_training.run(bench_training.TrainingBenchConfig(
            epochs=args.epochs, rounds=args.train_rounds, keep=args.train_out), log=log)
        md = bench_training.to_markdown(result)
        _write(args.json or Path("bench_training.json"), args.md, result, md)
        return 0
    if args.zoo:
        return _zoo(args, log)
    if args.out_dir is None or not (args.out_dir / "manifest.json").is_file():
        print("benchmark: error: pass a directory written by convert --out (it has no manifest.json)", file=sys.stderr)
        return 2
    from converter.bench import core as bench, output as bench_output

    cfg = bench.BenchConfig(out_dir=args.out_dir.resolve(), threads=_threads(args.threads or "1"),
                            rounds=args.rounds, lat_n=args.lat_calls, thr_n=args.thr_calls, data=args.data,
                            accuracy_samples=args.accuracy_samples, setup_parallel=args.setup_parallel, log=log)
    if args.runtimes:
        cfg.runtimes = tuple(r.strip() for r in args.runtimes.split(",") if r.strip())
    if args.quick:
        cfg.rounds, cfg.lat_n, cfg.thr_n, cfg.accuracy_samples = 1, 20, 2, 512
    from converter.errors import ConverterError

    try:
        result = bench.run(cfg)
    except ConverterError as exc:  # e.g. the directory's PyTorch source or weights moved since it was converted
        print(f"benchmark: error: {exc}", file=sys.stderr)
        return exc.exit_code
    bench_dir = args.out_dir / "bench"
    plots = bench_output.write_plots(result, args.plots or bench_dir)
    result["plots"] = [str(p) for p in plots]
    md = bench_output.to_markdown(result)
    _write(args.json or bench_dir / "bench.json", args.md or bench_dir / "bench.md", result, md)
    if args.html:
        from converter.parity.html import write_html

        log(f"benchmark: wrote {write_html(args.out_dir, result)}")
    return 0


def _zoo(args: argparse.Namespace, log) -> int:
    if args.reuse and args.work is None:
        print("benchmark: error: --reuse takes the artifacts of a previous --work DIR; pass --work", file=sys.stderr)
        return 2
    from converter.bench import serving_report, zoo_serving
    from converter.zoo.models import ZOO  # torch only: the zoo's libraries load when an entry is built

    names = tuple(n.strip() for n in args.zoo.split(",") if n.strip())
    known = list(ZOO)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        print(f"benchmark: error: unknown zoo model {unknown[0] if unknown else args.zoo!r}; choose from "
              f"{', '.join(known)}", file=sys.stderr)
        return 2
    cfg = zoo_serving.ZooServingConfig(models=names, threads=_threads(args.threads or "2"), rounds=args.rounds,
                                       batch1_calls=args.lat_calls, batch_n_calls=args.thr_calls,
                                       work=args.work.resolve() if args.work else None, reuse=args.reuse,
                                       setup_parallel=args.setup_parallel, log=log)
    if args.runtimes:
        cfg.runtimes = tuple(r.strip() for r in args.runtimes.split(",") if r.strip())
    if args.quick:
        cfg.rounds, cfg.batch1_calls, cfg.batch_n_calls = 1, 20, 2
    result = zoo_serving.run(cfg)
    _write(args.json or Path("zoo_serving.json"), args.md or Path("zoo_serving.md"), result,
           serving_report.to_markdown(result))
    return 0


def _threads(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(","))


def _write(json_path: Path, md_path: Path | None, result: dict, md: str) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    if md_path is not None:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(md + "\n")
    print(md)
    print(f"benchmark: wrote {json_path}" + (f" and {md_path}" if md_path else ""), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
