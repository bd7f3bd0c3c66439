"""litert-torch as a benchmark peer: its own virtual environment, and the command that converts one zoo model.

litert-torch (Google's PyTorch -> TFLite converter, ``litert_torch.convert(module, sample_args).export(path)``)
cannot be installed beside this project's pinned stack (it brings its own TensorFlow-free TFLite tooling and
other pins), so it lives in a venv of its own, built once with :func:`ensure_venv` and run only as a separate
process (:func:`litert_command`, whose child is ``converter/bench/litert_child.py``; :func:`export` runs it). That
venv holds torch and the zoo's third-party libraries but no TensorFlow and no ONNX: the child imports only torch-side
code (``converter.zoo.models``, or ``converter._convert.sources`` for a converter source such as ``mnist_cnn``).
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from converter._proc import children as child_procs

#: Where the venv is built and reused (outside the repo: it is ~3 GB and shared by every benchmark of a machine).
DEFAULT_VENV = Path.home() / ".cache" / "torch2tf-bench" / "litert-venv"
#: The venv's packages. torch/torchvision at this project's own versions, so both converters trace the same
#: modules; timm, transformers and ultralytics at the zoo's pins (pyproject's ``zoo`` extra), so every zoo entry
#: builds there as it does here.
REQUIREMENTS: tuple[str, ...] = ("torch==2.14.1", "torchvision==0.29.1", "litert-torch==0.10.0", "timm==1.0.31",
                                 "transformers==5.24.0", "ultralytics==8.4.190")
#: Building the venv downloads ~3 GB (about 3 min measured); past this the build counts as failed.
BUILD_TIMEOUT_S = 1800
_CHILD = Path(__file__).with_name("litert_child.py")


class LitertUnavailable(RuntimeError):
    """The venv could not be built or does not hold litert-torch; ``str()`` is a one-line reason and a fix."""


def ensure_venv(root: Path = DEFAULT_VENV, log: Callable[[str], None] = print) -> Path:
    """The venv's ``python``, building or completing the venv first when it lacks a pinned package.

    An existing venv whose installed versions match :data:`REQUIREMENTS` is reused untouched (a check of package
    metadata, well under a second). Otherwise ``python3.11 -m venv`` (a no-op on an existing venv) and ``pip
    install`` of the pins run under a lock beside ``root``, so two benchmarks started together build it once.
    Raises :class:`LitertUnavailable` with a one-line reason when that fails.
    """
    python = root / "bin" / "python"
    if not _missing_pins(python):
        return python
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = _missing_pins(python)
        if missing:
            log(f"litert-torch: building {root} ({', '.join(missing)} missing; ~3 GB, a few minutes)")
            _build(root, python)
        missing = _missing_pins(python)
    if missing:
        raise LitertUnavailable(f"the litert-torch venv {root} still lacks {', '.join(missing)} after pip install; "
                                f"remove {root} and run again")
    return python


def is_ready(root: Path = DEFAULT_VENV) -> bool:
    """Whether the venv at ``root`` has every pin of :data:`REQUIREMENTS` (:func:`ensure_venv` would build nothing)."""
    return not _missing_pins(root / "bin" / "python")


def litert_command(python: Path, name: str, out_path: Path, *, input_shape: tuple[int, ...] | None = None,
                   weights: str | Path | None = None) -> list[str]:
    """argv converting ``name`` with litert-torch into the ``.tflite`` file ``out_path``.

    ``name``: a zoo model; with ``input_shape``, a PyTorch source spec of ``convert`` instead (``mnist_cnn``,
    ``package.module:callable``, ...) with its optional state_dict ``weights``, exported on one seeded input of that
    shape (PyTorch layout). ``python``: the venv's interpreter (:func:`ensure_venv`). Self-contained (no environment
    needed): the child puts this repository on its own path. It exits 0 with the file written, or 2 with one line on
    stderr saying why, e.g. ``litert_child: RuntimeError: ...``."""
    argv = [str(python), "-P", str(_CHILD), name, str(out_path)]
    if input_shape is not None:
        argv += ["--input-shape", ",".join(str(d) for d in input_shape)]
    if weights is not None:
        argv += ["--weights", str(weights)]
    return argv


def export(name: str, out_path: Path, *, timeout_s: float, input_shape: tuple[int, ...] | None = None,
           weights: str | Path | None = None, log: Callable[[str], None] = print) -> Path | str:
    """litert-torch's ``.tflite`` of ``name`` (as :func:`litert_command` reads it) at ``out_path``, or one line saying
    why not (the venv could not be built, the export failed or ran past ``timeout_s``): a benchmark shows it in the
    row instead of stopping."""
    try:
        python = ensure_venv(log=log)
    except LitertUnavailable as exc:
        return f"litert-torch unavailable: {exc}"
    stderr = tempfile.TemporaryFile()
    argv = litert_command(python, name, out_path, input_shape=input_shape, weights=weights)
    proc = subprocess.Popen(argv, env=child_procs.child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=stderr)
    job = child_procs.Spawned(proc, stderr)
    try:
        code = job.wait(timeout_s)
        if code == 0 and out_path.is_file():
            return out_path
        return f"litert-torch export failed ({child_procs.exit_reason(code, timeout_s)}): {job.last_line()[:300]}"
    finally:
        job.close()


def _missing_pins(python: Path) -> list[str]:
    """The pins of :data:`REQUIREMENTS` that ``python`` does not have at the pinned version (all, if no python)."""
    if not python.is_file():
        return list(REQUIREMENTS)
    names = [r.split("==")[0] for r in REQUIREMENTS]
    code = ("import importlib.metadata as m, sys\n"
            "for n in sys.argv[1:]:\n"
            "    try: print(m.version(n))\n"
            "    except m.PackageNotFoundError: print('')\n")
    try:
        done = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return list(REQUIREMENTS)
    versions = done.stdout.splitlines() if done.returncode == 0 else []
    have = dict(zip(names, versions))
    return [r for r in REQUIREMENTS if have.get(r.split("==")[0]) != r.split("==")[1]]


def _build(root: Path, python: Path) -> None:
    base = shutil.which("python3.11")
    if base is None:
        raise LitertUnavailable("python3.11 is not on PATH, which the litert-torch venv needs; install Python 3.11")
    steps = ([base, "-m", "venv", str(root)], [str(python), "-m", "pip", "install", "-q", *REQUIREMENTS])
    for argv in steps:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise LitertUnavailable(f"building the litert-torch venv timed out after {BUILD_TIMEOUT_S} s "
                                    f"({' '.join(argv[:4])} ...)") from None
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
            raise LitertUnavailable(f"building the litert-torch venv failed at {' '.join(argv[:4])} ...: "
                                    f"{lines[-1].strip() if lines else f'exit {done.returncode}'}")
