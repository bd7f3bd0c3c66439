"""Dynamic dimensions beyond the batch (``--dynamic-dim NAME:AXIS[:LABEL]``, ``dynamic_dims=`` in the API).

A dynamic dimension is symbolic in ``model.onnx`` (the exporter's dynamic axes), in the SavedModel signature
(``None``) and in every TFLite file (a resizable input: ``shape_signature`` -1); parity then runs at the sample's
size and at a second size (:func:`second_size`), so a graph that only works at the traced length fails a row.

Dimensions with the same label are one dimension (``input_ids:1:seq`` and ``attention_mask:1:seq`` change together).
Without a label, dynamic dimensions of the same size share one: token ids and their mask are almost always that.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from converter.errors import InputError

#: one ``--dynamic-dim`` entry, as :class:`converter.options.ConvertOptions` keeps it
Entry = tuple[str, int, str]

_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def normalise(value: object) -> tuple[Entry, ...]:
    """``dynamic_dims`` as ``(input name, axis, label)`` tuples, from any form a caller may pass: the API's
    ``{"input_ids": {1: "seq"}}`` or ``{"input_ids": [1]}``, the CLI's ``"input_ids:1[:seq]"`` texts, or tuples.
    Only the form is checked here; names and axes against the model in :func:`resolve`."""
    if isinstance(value, Mapping):
        entries = []
        for name, axes in value.items():
            pairs = axes.items() if isinstance(axes, Mapping) else [(a, "") for a in
                                                                    (axes if isinstance(axes, Sequence) else [axes])]
            entries.extend((str(name), axis, label or "") for axis, label in pairs)
        value = entries
    if isinstance(value, str):
        value = (value,)
    return tuple(_entry(item) for item in value or ())


def _entry(item: object) -> Entry:
    parts = item.split(":") if isinstance(item, str) else list(item) if isinstance(item, Sequence) else []
    text = item if isinstance(item, str) else ":".join(map(str, parts)) or repr(item)
    fix = "pass NAME:AXIS or NAME:AXIS:LABEL, e.g. --dynamic-dim input_ids:1 (axis in the PyTorch layout)"
    if len(parts) == 2:
        parts = [*parts, ""]
    if len(parts) != 3 or not isinstance(parts[0], str) or not parts[0]:
        raise InputError(f"--dynamic-dim {text} is not NAME:AXIS", fix)
    name, axis, label = parts
    try:
        axis = int(axis)
    except (TypeError, ValueError):
        raise InputError(f"--dynamic-dim {text}: the axis is not an integer", fix) from None
    if axis == 0:
        raise InputError(f"--dynamic-dim {text}: axis 0 is the batch", "use --dynamic-batch for the batch dimension")
    if axis < 0:
        raise InputError(f"--dynamic-dim {text}: the axis is negative", fix)
    if label and not _LABEL.fullmatch(str(label)):
        raise InputError(f"--dynamic-dim {text}: label {label!r} is not a valid name", "use letters, digits and _")
    return name, axis, str(label or "")


@dataclass(frozen=True)
class DynamicDims:
    """Resolved dynamic dimensions: ``axes[input index] = {axis: label}``, and each label's size in the sample."""

    axes: tuple[dict[int, str], ...]
    sizes: dict[str, int]

    def resized(self, shapes: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
        """``shapes`` at each label's :func:`second_size`."""
        return [tuple(second_size(self.sizes[axes[k]]) if k in axes else d for k, d in enumerate(shape))
                for shape, axes in zip(shapes, self.axes)]

    def describe(self) -> str:
        """``seq = 16 and 8`` for each label: the sizes parity runs at."""
        return ", ".join(f"{label} = {size} and {second_size(size)}" for label, size in self.sizes.items())


def second_size(size: int) -> int:
    """The second size parity checks a dynamic dimension at: half the sample's (at least 1), or 2 for a size 1."""
    return size // 2 if size >= 2 else 2


def resolve(entries: Sequence[Entry], input_names: Sequence[str], shapes: Sequence[Sequence[int]]) -> DynamicDims:
    """Check ``entries`` against the model's inputs (one-line errors: an unknown name, an axis it does not have, two
    sizes under one label) and give unlabelled dimensions their label (``dim<size>``: same size, same dimension)."""
    axes: list[dict[int, str]] = [{} for _ in input_names]
    sizes: dict[str, int] = {}
    for name, axis, label in entries:
        if name not in input_names:
            raise InputError(f"--dynamic-dim {name}:{axis}: the model has no input {name!r}",
                             f"use one of the input names: {', '.join(input_names)}")
        k = list(input_names).index(name)
        if axis >= len(shapes[k]):
            raise InputError(f"--dynamic-dim {name}:{axis}: input {name!r} has {len(shapes[k])} dimensions "
                             f"({'x'.join(map(str, shapes[k]))})", f"pass an axis between 1 and {len(shapes[k]) - 1}")
        size = int(shapes[k][axis])
        label = label or f"dim{size}"
        if sizes.setdefault(label, size) != size:
            raise InputError(f"--dynamic-dim {name}:{axis}:{label}: {label} is {sizes[label]} elsewhere but {size} here",
                             "give dimensions of different sizes different labels")
        axes[k][axis] = label
    return DynamicDims(tuple(axes), sizes)
