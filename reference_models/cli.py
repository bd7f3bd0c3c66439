"""``train-reference``: train the reference MNIST net in PyTorch or Keras and write its artifacts.

    train-reference --framework torch|keras --out DIR [--epochs 10] [--batch-size 64] [--lr 1e-3]
                    [--train-data auto|embedded|PATH] [--eval-data auto|embedded|PATH] [--seed 0]
                    [--force] [--verbose] ...

Argument parsing and error reporting only; the work is in ``train_torch`` / ``train_keras``. Exit codes:
0 success, 2 bad input (one line on stderr, no traceback, nothing written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from reference_models.config import DEVICES, FRAMEWORKS, LR_SCHEDULES, STRATEGIES, TrainConfig
from reference_models.errors import ReferenceModelError, UsageError

PROG = "train-reference"
_TORCH_ONLY = {"device": "auto", "loader": "tensor", "workers": 0, "threads": None, "compile": False, "amp": False,
               "channels_last": True}
_KERAS_ONLY = {"jit_compile": False, "mixed_precision": False, "eager_debug": False, "strategy": "none"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print the whole usage first)
        self.exit(2, f"{PROG}: error: {message} (see {PROG} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Train the reference MNIST CNN (the guide's net) in PyTorch or Keras.")
    p.add_argument("--framework", required=True, choices=FRAMEWORKS)
    p.add_argument("--out", required=True, type=Path, help="output directory (must not exist unless --force)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="global batch (split across DDP/multi-worker)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-data", default="auto", help="auto | embedded | DIR with IDX files")
    p.add_argument("--eval-data", default="auto", help="auto | embedded | DIR with IDX files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--verbose", action="store_true", help="let TensorFlow's logs through")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="none")
    p.add_argument("--stop-below-loss", type=float, default=None, help="stop once an epoch's loss is below this")
    t = p.add_argument_group("torch only")
    t.add_argument("--device", choices=DEVICES, default="auto")
    t.add_argument("--loader", choices=("tensor", "torchvision"), default="tensor",
                   help="tensor (default, fast): pre-normalised tensors; torchvision: Dataset+transforms+DataLoader")
    t.add_argument("--workers", type=int, default=0, help="DataLoader workers for --loader torchvision")
    t.add_argument("--threads", type=int, default=None, help="intra-op threads (default: usable cores)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--amp", action="store_true", help="autocast: bfloat16 on CPU, float16 on CUDA")
    t.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="NHWC memory format for model and batches (default on: the max-pool is ~10x faster)")
    k = p.add_argument_group("keras only")
    k.add_argument("--jit-compile", action="store_true", help="XLA")
    k.add_argument("--mixed-precision", action="store_true", help="mixed_bfloat16 on CPU, mixed_float16 on GPU")
    k.add_argument("--eager-debug", action="store_true", help="tf.config.run_functions_eagerly(True)")
    k.add_argument("--strategy", choices=STRATEGIES, default="none", help="multi-worker reads TF_CONFIG")
    return p


def to_config(args: argparse.Namespace) -> TrainConfig:
    """Validate the parsed options (raise :class:`UsageError`) and freeze them into a :class:`TrainConfig`."""
    if args.epochs <= 0:
        raise UsageError(f"--epochs must be a positive integer, got {args.epochs}")
    if args.batch_size <= 0:
        raise UsageError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if not args.lr > 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if args.workers < 0 or (args.threads is not None and args.threads <= 0):
        raise UsageError("--workers must be >= 0 and --threads > 0")
    other = _KERAS_ONLY if args.framework == "torch" else _TORCH_ONLY
    for name, default in other.items():
        if getattr(args, name) != default:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} does not apply to --framework {args.framework}")
    if args.strategy == "multi-worker":
        _check_tf_config(os.environ.get("TF_CONFIG", ""))
    world = int(os.environ.get("WORLD_SIZE", 1)) if args.framework == "torch" else 1
    if args.batch_size % world:
        raise UsageError(f"--batch-size {args.batch_size} is not divisible by the {world} DDP processes")
    fields = {k: v for k, v in vars(args).items() if k not in ("out", "force")}
    return TrainConfig(**fields)


def _check_tf_config(raw: str) -> None:
    """``--strategy multi-worker`` needs ``TF_CONFIG`` = JSON with ``cluster`` and ``task``."""
    try:
        tf_config = json.loads(raw) if raw.strip() else None
    except json.JSONDecodeError as err:
        raise UsageError(f"TF_CONFIG is not valid JSON ({err.msg}); see reference_models/README.md 'Scaling out'") from None
    if not isinstance(tf_config, dict) or "cluster" not in tf_config or "task" not in tf_config:
        raise UsageError("--strategy multi-worker needs TF_CONFIG with 'cluster' and 'task'; see reference_models/README.md 'Scaling out'")


def main(argv: list[str] | None = None) -> int:
    """The ``train-reference`` command; its process is the command's own (warning filters may be set)."""
    from converter._convert import interrupts
    from reference_models.quiet import own_process

    own_process()
    args = build_parser().parse_args(argv)
    try:
        with interrupts.remembered():  # SIGTERM too: staged output is removed, exit 143
            return _run(args)
    except KeyboardInterrupt as exc:
        print(f"{PROG}: interrupted; nothing written", file=sys.stderr)
        return interrupts.exit_code(exc)
    except Exception as err:
        signalled = interrupts.interrupted_by()  # an error the interrupt caused (e.g. a half-finished import)
        if signalled is not None:
            print(f"{PROG}: interrupted; nothing written", file=sys.stderr)
            return signalled.exit_code
        if not isinstance(err, ReferenceModelError):
            raise
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    finally:
        interrupts.forget()


def _run(args: argparse.Namespace) -> int:
    from reference_models.data import load_mnist
    from reference_models.staging import check_out_dir, staged_dir

    config = to_config(args)
    writes = int(os.environ.get("RANK", 0)) == 0 or config.framework == "keras"
    out = check_out_dir(args.out, force=args.force) if writes else args.out
    via = "torchvision" if config.framework == "torch" else "keras"
    # Explicit directories first: a bad path must fail before any "auto" fallback notice is printed.
    order = sorted((("train", config.train_data), ("eval", config.eval_data)), key=lambda s: s[1] == "auto")
    loaded = {split: load_mnist(source, split, via=via) for split, source in order}
    train_data, eval_data = loaded["train"], loaded["eval"]
    trainer = _trainer(config)
    with staged_dir(out, enabled=writes, force=args.force) as staging:
        metrics = trainer.train(config, train_data, eval_data, staging)
    if writes:
        print(f"{config.framework}: test accuracy {metrics.test_accuracy:.2%} on {metrics.eval_source}, "
              f"final loss {metrics.final_loss:.4f}, {metrics.samples_per_second:,.0f} samples/s; wrote {out}")
    return 0


def _trainer(config: TrainConfig):
    if config.framework == "torch":
        # OpenMP threads that busy-wait at barriers collapse throughput when another process holds a core
        # (measured 10x on 2 shared cores); passive waiting costs little when the cores are free. It is
        # read once, when torch loads its OpenMP runtime, hence here, before the import.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from reference_models import train_torch

        return train_torch
    from reference_models import train_keras
    from reference_models.quiet import import_tensorflow

    import_tensorflow(config.verbose, legacy_keras=config.strategy == "multi-worker")
    return train_keras


if __name__ == "__main__":
    sys.exit(main())
