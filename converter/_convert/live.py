"""Live Python objects as a conversion's source: what ``converter.convert(model, sample_inputs)`` accepts.

``model`` is an ``nn.Module`` (a TorchScript ``ScriptModule`` is one), an ``ExportedProgram``, a
:class:`LoadedModel`, or a source spec string / path (``mypkg.nets:build``, ``model.onnx``, ...).
``sample_inputs`` is what ``torch.onnx.export`` and ``litert_torch.convert`` take: one tensor, a tuple of tensors
(positional arguments), or a dict of keyword tensors; NumPy arrays work too. The input shapes, dtypes and names
come from them, and integer inputs without an explicit range get one from their name and the sample
(:meth:`Samples.ranges`: a 0/1 mask feeds padding masks, a Hugging Face model's token ids its whole vocabulary, any
other integer input the sample's own [min, max + 1)).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from converter._convert.sources import LoadedModel, load_model
from converter.parity.data import is_padding_mask
from converter.errors import InputError
from converter.options import INPUT_DTYPES, ConvertOptions

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Samples:
    """Sample inputs as NumPy arrays in call order; ``names`` when they came as keywords (a dict)."""

    arrays: tuple[np.ndarray, ...]
    names: tuple[str, ...] | None = None

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(int(d) for d in a.shape) for a in self.arrays]

    @property
    def dtypes(self) -> tuple[str, ...]:
        return tuple(str(a.dtype) for a in self.arrays)

    def ranges(self, config: Any = None) -> tuple[tuple[int, int], ...]:
        """The value range random parity data draws each integer input from (float and bool inputs get a placeholder
        the data ignores): by its name, a 0/1 ``*_mask`` [N, seq] is [0, 2), so parity feeds padding masks (an
        all-ones sample mask would test no padding); ``input_ids`` / ``token_type_ids`` of a model with a Hugging
        Face ``config`` are the whole vocabulary [0, vocab_size) / [0, type_vocab_size); any other integer input the
        sample's [min, max + 1)."""
        names = self.names or ("",) * len(self.arrays)
        return tuple(_range(a, name, config) for a, name in zip(self.arrays, names))


#: integer inputs whose range a Hugging Face config states: input name -> the config's attribute
_CONFIG_RANGES = {"input_ids": "vocab_size", "token_type_ids": "type_vocab_size"}


def _range(array: np.ndarray, name: str, config: Any) -> tuple[int, int]:
    if not np.issubdtype(array.dtype, np.integer) or not array.size:
        return (0, 1)
    low, high = int(array.min()), int(array.max()) + 1
    if 0 <= low and high <= 2 and is_padding_mask(name, array.shape, array.dtype, (0, 2)):
        return (0, 2)
    size = getattr(config, _CONFIG_RANGES.get(name, ""), None)
    if isinstance(size, int) and not isinstance(size, bool) and size >= high and low >= 0:
        return (0, size)
    return (low, high)


def path_argument(value: Any, name: str, example: str) -> Path:
    """``value`` as a Path, or a one-line :class:`InputError` naming the argument when it is not a path (an
    ``nn.Module`` or a tensor in the wrong place: ``os.fspath`` would raise a bare TypeError)."""
    if isinstance(value, str | os.PathLike):
        return Path(value)
    raise InputError(f"{name} is a {type(value).__name__}, not a path", f"pass {name} as a str or Path, e.g. {example}")


def reject_weights_for_live(model: Any, weights: Any) -> None:
    """``weights=`` names a file that is loaded into a model the toolkit builds from a spec; a live module is
    converted with the weights it holds, so a file beside it would be silently ignored: refuse that."""
    if weights is None or isinstance(model, str | os.PathLike | LoadedModel):
        return
    raise InputError(f"weights= was given with a live {type(model).__name__}, which is converted with the weights it "
                     "holds", "load them into the module first (module.load_state_dict(torch.load(path, "
                     "weights_only=True))), or pass a spec such as 'mypkg.nets:build' with weights=")


@contextlib.contextmanager
def modes_kept(model: Any) -> Iterator[None]:
    """Run the block (which puts a live ``model`` in eval mode: :func:`as_source`), then give every submodule its
    train/eval flag back, as ``torch.onnx.export`` leaves a module as it found it."""
    modules = list(model.modules()) if callable(getattr(model, "modules", None)) else []
    flags = [getattr(m, "training", None) for m in modules]
    try:
        yield
    finally:
        for module, flag in zip(modules, flags):
            if flag is not None and module.training != flag:
                module.training = flag


def as_source(model: Any) -> LoadedModel | str:
    """``model`` as the pipeline takes it: a spec string, or a :class:`LoadedModel` around a live module."""
    if isinstance(model, LoadedModel | str):
        return model
    if isinstance(model, Path):
        return str(model)
    import torch

    exported = sys.modules.get("torch.export")  # never imported here: beside TensorFlow that can segfault
    if exported is not None and isinstance(model, exported.ExportedProgram):
        from converter._convert.sources import _Unexported

        return LoadedModel(type(model).__name__, "exported_program", _Unexported(model.module()))
    if isinstance(model, torch.jit.ScriptModule):
        return LoadedModel(model.original_name or "torchscript", "torchscript", model.eval())
    if isinstance(model, torch.nn.Module):
        return LoadedModel(type(model).__name__, "module", model.eval())
    raise InputError(f"cannot convert a {type(model).__name__}",
                     "pass an nn.Module, a TorchScript module, an ExportedProgram, an .onnx path or a source spec "
                     "such as 'mypkg.nets:build'")


def samples_of(sample_inputs: Any) -> Samples:
    """``sample_inputs`` (a tensor, a tuple/list of tensors, or a dict of keyword tensors) as :class:`Samples`."""
    if isinstance(sample_inputs, dict):
        names = tuple(str(k) for k in sample_inputs)
        return Samples(tuple(_array(v, k) for k, v in sample_inputs.items()), names)
    if isinstance(sample_inputs, (tuple, list)):
        if not sample_inputs:
            raise InputError("sample_inputs is empty", "pass one tensor per forward() argument, e.g. (x,)")
        return Samples(tuple(_array(v, f"#{k}") for k, v in enumerate(sample_inputs)))
    return Samples((_array(sample_inputs, "#0"),))


def with_samples(source: LoadedModel | str, samples: Samples, options: ConvertOptions, *,
                 allow_pickle: bool = False, weights=None, random_data: bool = True) -> tuple[LoadedModel, ConvertOptions]:
    """The source loaded (a spec is loaded here, in this process) and the options its sample inputs imply: input
    shapes' dtypes, names (a dict's keys unless ``input_names`` is set) and, when parity draws ``random_data``,
    integer ranges (unless given; real parity data is never held to the sample's range)."""
    loaded = source if isinstance(source, LoadedModel) else load_model(source, weights, allow_pickle=allow_pickle)
    if options.input_dtypes and tuple(np.dtype(d).name for d in options.input_dtypes) != samples.dtypes:
        raise InputError(f"input_dtypes {','.join(options.input_dtypes)} differ from the sample inputs' "
                         f"{','.join(samples.dtypes)}", "drop input_dtypes: the sample inputs carry their dtypes")
    config = getattr(loaded.module, "config", None)  # a Hugging Face model's: its vocabulary sizes
    if samples.names is not None and loaded.module is not None:
        loaded = replace(loaded, module=keyword_call(loaded.module, samples.names))
    if samples.names is not None and loaded.kind == "onnx":
        samples = _in_graph_order(loaded, samples)
    changes: dict = {"input_dtypes": samples.dtypes}
    if samples.names is not None and not options.input_names:
        changes["input_names"] = samples.names
    if random_data and not options.input_ranges:
        changes["input_ranges"] = samples.ranges(config)
    return replace(loaded, default_input_shapes=tuple(samples.shapes)), replace(options, **changes)


def _array(value: Any, label: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor, without importing torch for NumPy callers
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray | np.generic):
        raise InputError(f"sample input {label} is a {type(value).__name__}, not a tensor",
                         "pass tensors (or NumPy arrays): one, a tuple of them, or a dict of keyword tensors")
    array = np.asarray(value)
    if array.dtype.name not in INPUT_DTYPES:
        raise InputError(f"sample input {label} has dtype {array.dtype}",
                         f"pass {', '.join(INPUT_DTYPES)} tensors (e.g. x.float() or ids.long())")
    if array.ndim == 0:
        raise InputError(f"sample input {label} is a scalar", "pass tensors with a batch dimension, e.g. x[None]")
    return np.ascontiguousarray(array)


def _in_graph_order(loaded: LoadedModel, samples: Samples) -> Samples:
    """Keyword samples for an ``.onnx`` source, reordered to the graph's inputs (matched by name)."""
    import onnx

    from converter._convert.export import graph_input_names

    graph = graph_input_names(onnx.load(str(loaded.onnx_path), load_external_data=False))
    if sorted(graph) != sorted(samples.names or ()):
        raise InputError(f"sample input names {', '.join(samples.names or ())} do not match "
                         f"{loaded.onnx_path.name}'s inputs {', '.join(graph)}",
                         "pass a dict keyed by the graph's input names, or a tuple in their order")
    by_name = dict(zip(samples.names or (), samples.arrays))
    return Samples(tuple(by_name[n] for n in graph), tuple(graph))


def keyword_call(module: nn.Module, names: tuple[str, ...]) -> nn.Module:
    """``module`` called as ``module(**dict(zip(names, args)))``: the exporters and every runner pass inputs
    positionally, while a Hugging Face model is called with ``input_ids=..., attention_mask=...``."""
    import torch

    class KeywordCall(torch.nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(**dict(zip(names, args)))

    return KeywordCall(module).eval()
