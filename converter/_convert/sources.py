"""Where a model comes from: a reference name, ``package.module:callable``, TorchScript, ``.pt2`` or ``.onnx``.

Every loader returns a :class:`LoadedModel` in eval mode or raises :class:`ModelLoadError` with a one-line
message naming the problem and the fix.
"""

from __future__ import annotations

import contextlib
import importlib
import pickle
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from pathlib import Path


from converter.errors import InputError, ModelLoadError, first_line

if TYPE_CHECKING:
    from torch import nn


def _mnist_cnn() -> nn.Module:
    from reference_models.mnist_cnn import MnistCNN

    return MnistCNN()


#: Reference networks known by name: (factory, default input shape in PyTorch layout).
REFERENCE_MODELS: dict[str, tuple[Callable[[], "nn.Module"], tuple[int, ...]]] = {
    "mnist_cnn": (_mnist_cnn, (1, 1, 28, 28)),
}


@dataclass
class LoadedModel:
    """A model ready to export. ``module`` is None only for ``.onnx`` sources."""

    name: str
    kind: str  # reference | callable | torchscript | exported_program | onnx
    module: nn.Module | None
    onnx_path: Path | None = None
    default_input_shapes: tuple[tuple[int, ...], ...] = ()
    spec: str = ""
    weights: str | None = None

    @property
    def reference_name(self) -> str | None:
        return self.name if self.kind == "reference" else None


def load_model(spec: str, weights: str | Path | None = None, *, allow_pickle: bool = False) -> LoadedModel:
    """Resolve ``spec`` to a model; apply ``weights`` (a state_dict file) where that makes sense.

    No file is unpickled with Python's full unpickler unless ``allow_pickle`` (``--allow-pickle``): weights
    and ``.pt2`` archives go through ``torch.load(weights_only=True)``, which builds tensors and plain
    containers only, so a crafted file cannot run code while it is read (see README, Security)."""
    loaded = _load(spec, weights, allow_pickle)
    loaded.spec = spec
    loaded.weights = None if weights is None else str(Path(weights).resolve())
    return loaded


def require_weights_file(weights: str | Path | None) -> None:
    """A ``--weights`` path that is not a file is refused before anything is imported (the command checks it in
    the parent, before the PyTorch child has loaded torch)."""
    if weights is not None and not Path(weights).is_file():
        what = "is a directory" if Path(weights).is_dir() else "does not exist"
        raise ModelLoadError(f"--weights {weights} {what}", "pass the path of a state_dict file (torch.save)")


def refuse_python_file(spec: object) -> None:
    """A ``.py`` path given as the model: one line pointing to the ``module:callable`` form (checked in the parent too)."""
    if isinstance(spec, str) and spec.endswith(".py"):
        stem = Path(spec).stem
        raise ModelLoadError(f"{spec} is a Python source file, not a model",
                             f"name the function that builds the model as module:callable (e.g. {stem}:build), with "
                             "its directory on PYTHONPATH")


def _load(spec: str, weights: str | Path | None, allow_pickle: bool) -> LoadedModel:
    path = Path(spec)
    require_weights_file(weights)
    refuse_python_file(spec)
    if spec in REFERENCE_MODELS:
        factory, shape = REFERENCE_MODELS[spec]
        with seeded_init():
            module = factory()
        if weights is not None:
            load_state_dict_file(module, weights)
        return LoadedModel(spec, "reference", module.eval(), default_input_shapes=(shape,))
    if path.suffix == ".onnx":
        _require_file(path, "an .onnx file")
        _no_weights(weights, "an .onnx file carries its own weights")
        return LoadedModel(path.stem, "onnx", None, onnx_path=path)
    if path.suffix == ".pt2":
        _require_file(path, "a torch.export .pt2 file")
        _no_weights(weights, "a .pt2 ExportedProgram carries its own weights")
        return LoadedModel(path.stem, "exported_program", _load_exported_program(path, allow_pickle))
    if ":" in spec and not path.exists():
        module = _call_factory(spec)
        if weights is not None:
            load_state_dict_file(module, weights)
        return LoadedModel(spec.split(":")[-1], "callable", module.eval())
    if path.suffix in {".pt", ".pth", ".ts", ".torchscript", ".jit"} or path.exists():
        _require_file(path, "a TorchScript file")
        _no_weights(weights, "a TorchScript file carries its own weights")
        return LoadedModel(path.stem, "torchscript", _load_torchscript(path))
    names = ", ".join(REFERENCE_MODELS)
    raise ModelLoadError(
        f"cannot resolve model {spec!r}",
        f"pass a reference name ({names}), package.module:callable, a TorchScript/.pt2 file or an .onnx file",
    )


@contextlib.contextmanager
def seeded_init(seed: int = 0) -> Iterator[None]:
    """torch's random generator seeded inside the block (a factory's random init is the same every run, so reports
    are reproducible), and the caller's generator state back after it: loading a model must not change what the
    caller's next ``torch.rand`` returns.

    The CPU generator always; CUDA's only where the caller already initialised CUDA (saving its state would
    initialise it: seconds, and GPU memory, for a model that is converted on the CPU)."""
    import torch  # lazily: the TF side of a conversion never imports torch

    cuda = torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed_all(seed)
        yield


def load_state_dict_file(module: nn.Module, weights: str | Path) -> None:
    """Load a state_dict file into ``module``; name the first mismatched key on failure."""
    import torch  # lazily: the TF side of a conversion never imports torch

    path = Path(weights)
    _require_file(path, "a state_dict file (torch.save(model.state_dict(), PATH))")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"weights file {path} is empty", "pass a file written by torch.save(model.state_dict(), PATH)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt / truncated / foreign files
        asked = _refused_global(exc)
        if asked is not None:  # torch's own message would suggest unpickling it anyway
            raise ModelLoadError(f"weights {path} are a pickle that asks for the Python object {asked}; unpickling "
                                 "it could run code from the file, so it is never loaded",
                                 "save the state_dict alone: torch.save(model.state_dict(), PATH)") from None
        raise ModelLoadError(
            f"cannot read weights {path}: {type(exc).__name__}: {first_line(exc, 160)}",
            "pass a file written by torch.save(model.state_dict(), PATH)",
        ) from None
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    if not isinstance(state, dict):
        raise ModelLoadError(f"weights {path} hold a {type(state).__name__}, not a state_dict",
                             "save with torch.save(model.state_dict(), PATH)")
    check_state_dict(module, state, path)
    module.load_state_dict(state)


def check_state_dict(module: nn.Module, state: dict, path: Path) -> None:
    """Raise naming the first key that is missing, unexpected or of the wrong shape."""
    expected = module.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise ModelLoadError(f"weights {path} do not match the model: key {key!r} is missing",
                                 "pass the state_dict saved from this architecture")
        got = getattr(state[key], "shape", None)
        if got is not None and tuple(got) != tuple(value.shape):
            raise ModelLoadError(
                f"weights {path} do not match the model: {key!r} has shape {tuple(got)}, "
                f"the model expects {tuple(value.shape)}",
                "pass the state_dict saved from this architecture",
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise ModelLoadError(f"weights {path} do not match the model: unexpected key {extra[0]!r}",
                             "pass the state_dict saved from this architecture")


def _call_factory(spec: str) -> nn.Module:
    import torch  # lazily: the TF side of a conversion never imports torch

    module_name, _, attr = spec.partition(":")
    try:
        pymod = importlib.import_module(module_name)
    except Exception as exc:
        raise ModelLoadError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}",
                             "check the module is on PYTHONPATH (run from its project root)") from None
    factory = getattr(pymod, attr, None)
    if factory is None:
        raise ModelLoadError(f"{module_name!r} has no attribute {attr!r}", "name a callable that returns an nn.Module")
    if not callable(factory) and not isinstance(factory, torch.nn.Module):
        raise ModelLoadError(f"{spec} is a {type(factory).__name__}, not a callable",
                             "name a function or class that returns an nn.Module (or an nn.Module instance)")
    try:
        with seeded_init():
            model = factory if isinstance(factory, torch.nn.Module) else factory()
    except Exception as exc:
        raise ModelLoadError(f"{spec} raised {type(exc).__name__}: {exc}",
                             "make the callable work without arguments") from None
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module",
                             "make the callable return an nn.Module instance")
    return model


def _load_torchscript(path: Path) -> nn.Module:
    import torch  # lazily: the TF side of a conversion never imports torch

    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        held, asked = _weights_only(path)
        if isinstance(held, dict) and zipfile.is_zipfile(path):
            raise ModelLoadError(f"{path} is a state_dict, not a TorchScript model",
                                 "pass the architecture (e.g. mnist_cnn or module:callable) with --weights") from None
        if asked is not None:
            raise ModelLoadError(f"{path} is a pickle (torch.save of a whole model?) that asks for the Python object "
                                 f"{asked}; unpickling it could run code from the file, so it is never loaded",
                                 _PICKLE_FIX) from None
        raise ModelLoadError(f"cannot load TorchScript {path}: {type(exc).__name__}",
                             "pass a file written by torch.jit.save, or a .pt2/.onnx file") from None


def _load_exported_program(path: Path, allow_pickle: bool) -> nn.Module:
    import torch  # lazily: the TF side of a conversion never imports torch

    try:
        with contextlib.nullcontext() if allow_pickle else _weights_only_unpickling():
            graph_module = torch.export.load(str(path)).module()
    except PickleRefused as exc:
        raise ModelLoadError(f"{path} holds a pickled Python object ({exc}) that could run code when loaded",
                             "re-save it with torch.export.save from plain tensors, or pass --allow-pickle "
                             "if you trust the file") from None
    except Exception as exc:
        raise ModelLoadError(f"cannot load ExportedProgram {path}: {type(exc).__name__}",
                             "pass a file written by torch.export.save") from None
    return _Unexported(graph_module)


class PickleRefused(Exception):
    """A member of a model archive needs Python's full unpickler (arbitrary code on load)."""


@contextlib.contextmanager
def _weights_only_unpickling() -> Iterator[None]:
    """While ``torch.export.load`` reads an archive, every unpickling it does is weights-only.

    torch 2.14 reads a ``.pt2``'s weights, constants and sample inputs with ``torch.load(weights_only=False)``
    (after a weights-only attempt, for sample inputs) and opaque constants with ``pickle.loads``: a crafted
    member runs code (``__reduce__``) during the load. Here ``torch.load`` is weights-only whatever the caller
    asks, and ``pickle.loads`` in the archive reader refuses; the graph itself is JSON and loads as usual.
    What a real export writes (tensors, tuples, dicts of tensors) loads unchanged."""
    import torch
    from torch.export.pt2_archive import _package

    real_load, real_pickle = torch.load, _package.pickle

    def weights_only_load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        try:
            return real_load(f, *args, **kwargs)
        except pickle.UnpicklingError as exc:
            found = re.search(r"GLOBAL (\S+)", str(exc))
            raise PickleRefused(found.group(1) if found else "a Python object") from None

    class _NoPickle:
        def __getattr__(self, name):
            return getattr(pickle, name)

        @staticmethod
        def loads(*_args, **_kwargs):
            raise PickleRefused("an opaque Python object")

    torch.load, _package.pickle = weights_only_load, _NoPickle()
    try:
        yield
    finally:
        torch.load, _package.pickle = real_load, real_pickle


def _Unexported(graph_module) -> nn.Module:
    """An eval-mode ``nn.Module`` around an ExportedProgram's graph module.

    ``ExportedProgram.module()`` refuses ``train()``/``eval()``, which the ONNX exporter calls; the wrapper
    keeps the graph module out of its own submodules so those calls stop at the wrapper.
    """
    import torch

    for param in graph_module.parameters():  # traced as constants: they must not require grad
        param.requires_grad_(False)

    class Unexported(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            object.__setattr__(self, "_inner", inner)

        def forward(self, *args):
            return self._inner(*args)

    return Unexported(graph_module).eval()


_PICKLE_FIX = ("save the weights alone (torch.save(model.state_dict(), PATH)) and pass the architecture as "
               "module:callable with --weights PATH, or save the model with torch.jit.save or torch.export.save")
#: the object a weights-only unpickler refused, in torch's message ("Unsupported global: GLOBAL posix.system ...")
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _weights_only(path: Path) -> tuple[object, str | None]:
    """``path`` read by PyTorch's weights-only unpickler (nothing in the file runs): (what it holds, None), or (None,
    the Python object it refused: ``torchvision.models.resnet.ResNet`` for ``torch.save(model)``, ``posix.system``
    for a crafted file), or (None, None) when it cannot be read at all (a corrupt file)."""
    import torch  # lazily: the TF side of a conversion never imports torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True), None
    except Exception as exc:
        return None, _refused_global(exc)


def _refused_global(exc: Exception) -> str | None:
    """The Python object named in a weights-only unpickler's refusal; None for any other failure (a corrupt file)."""
    found = _REFUSED_GLOBAL.search(str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
    return found.group(1) if found else None


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist", f"pass the path of {what}")


def _no_weights(weights: object, why: str) -> None:
    if weights is not None:
        raise InputError(f"--weights cannot be used here: {why}", "drop --weights")
