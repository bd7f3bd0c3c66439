"""Which outputs are class scores, and what their top-1 predictions are: the class-axis rule of parity.

Top-1 agreement says something only about class scores. On hidden states, embeddings, boxes, masks or a
detection head's raw output, an argmax picks among unrelated numbers (or near-equal ones: random-init scores), so
a flip there proves nothing; those outputs are judged by the error bound and cosine alone. The rule, first match:

1. the user's ``--class-axis NAME:AXIS`` (``ConvertOptions.class_axes``), optionally with a channel slice for a
   detection head whose class scores share an axis with box coordinates (``output0:1:4:84``: classes are
   channels 4..83 of axis 1, one prediction per anchor), or ``NAME:none`` to judge an output by the bound only;
2. the output's name: ``logits``, ``scores``, ``probs``, ``probabilities``, a name ending in ``_logits``,
   ``_scores`` or ``_probs``, or starting with ``logits_`` (Hugging Face's ``start_logits``, ``pred_logits``,
   ``logits_per_image``): classes on the last axis, on axis 1 of a 4-D output (segmentation logits [N, C, H, W]);
3. a default name (``output``, ``output_N``, ``outputN``, a bare number, or none) on a 2-D [N, C] output: the
   last axis (an image classifier's logits, as the toolkit always judged them).

Everything else is error bound and cosine only: ``last_hidden_state``, ``pooler_output``, ``hidden_states``,
``embeddings``, ``boxes``, a default-named 3-D or 4-D output, ... Axes are those of the PyTorch layout.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from converter.errors import InputError

_CLASS_NAME = re.compile(r"(logits|scores|probs|probabilities)|.*_(logits|scores|probs)|logits_.*", re.I)
_DEFAULT_NAME = re.compile(r"(output_?\d*|\d+)?")


@dataclass(frozen=True)
class ClassAxis:
    """Where an output's class scores are: ``axis`` (>= 1, PyTorch layout), channels ``start:stop`` of it, and
    ``by`` which rule said so (``user``, ``name`` or ``shape``)."""

    axis: int
    start: int = 0
    stop: int | None = None
    by: str = "shape"

    def scores(self, output: np.ndarray) -> np.ndarray:
        """The class scores with the classes last: [N, ..., C]."""
        return np.moveaxis(output, self.axis, -1)[..., self.start:self.stop]

    def top1(self, output: np.ndarray) -> np.ndarray:
        """Predicted class per sample (and per position/anchor): the output's shape without the class axis."""
        return np.argmax(self.scores(output), axis=-1)

    def lead(self, output: np.ndarray) -> np.ndarray:
        """How far each prediction's top score is ahead of the runner-up (shape of :meth:`top1`)."""
        ranked = np.sort(self.scores(output), axis=-1)
        return ranked[..., -1] - ranked[..., -2]

    def scale(self, output: np.ndarray) -> np.ndarray:
        """Each sample's largest |class score|, shaped to broadcast against :meth:`lead`."""
        scores = self.scores(output)
        return np.abs(scores.reshape(len(scores), -1)).max(axis=1).reshape((-1,) + (1,) * (scores.ndim - 2))

    def describe(self) -> str:
        channels = "" if self.start == 0 and self.stop is None else f", classes {self.start}:{self.stop}"
        return f"axis {self.axis}{channels}"

    def to_json(self) -> dict:
        return {"axis": self.axis, "classes": None if self.start == 0 and self.stop is None else [self.start, self.stop],
                "by": self.by}


def by_rule(name: str | None, shape: Sequence[int]) -> ClassAxis | None:
    """Rules 2 and 3 of the module docstring: the class axis ``name`` and ``shape`` imply, or None."""
    ndim = len(shape)
    if ndim < 2:
        return None
    if name is not None and _CLASS_NAME.fullmatch(name):
        axis = ClassAxis(1 if ndim == 4 else ndim - 1, by="name")
    elif (name is None or _DEFAULT_NAME.fullmatch(name)) and ndim == 2:
        axis = ClassAxis(1, by="shape")
    else:
        return None
    return axis if shape[axis.axis] >= 2 else None


def resolve(names: Sequence[str | None], shapes: Sequence[Sequence[int]],
            declared: Sequence[tuple[str, int | None, int, int | None]] = ()) -> list[ClassAxis | None]:
    """One entry per output: its :class:`ClassAxis` (``declared``: ``ConvertOptions.class_axes``, then the rule),
    or None where it is judged by the error bound and cosine only.

    Raises :class:`InputError` for a declared name that is no output, an axis out of range (or the batch axis),
    and channels beyond the axis: the first moment these can be checked is once the output names are known."""
    given = {entry[0]: entry for entry in declared}
    unknown = [n for n in given if n not in names]
    if unknown:
        listed = ", ".join(str(n) for n in names)
        raise InputError(f"--class-axis {unknown[0]}: the model has no output {unknown[0]!r} (its outputs: {listed})",
                         "name one of its outputs, e.g. --class-axis logits:1 (--output-name sets the names)")
    axes = []
    for name, shape in zip(names, shapes):
        entry = given.get(name)
        axes.append(by_rule(name, shape) if entry is None else _declared(entry, shape))
    return axes


def _declared(entry: tuple[str, int | None, int, int | None], shape: Sequence[int]) -> ClassAxis | None:
    name, axis, start, stop = entry
    if axis is None:
        return None
    flag = f"--class-axis {name}:{axis}" + ("" if start == 0 and stop is None else f":{start}:{stop}")
    ndim = len(shape)
    if not (1 <= axis < ndim or -ndim < axis <= -1):
        raise InputError(f"{flag}: output {name!r} has shape {list(shape)}, so axis {axis} is "
                         f"{'the batch axis' if axis in (0, -ndim) else 'out of range'}",
                         f"pass a class axis in 1..{ndim - 1}" if ndim > 1 else "this output has no class axis; "
                         f"pass --class-axis {name}:none")
    axis %= ndim
    size = shape[axis]
    end = size if stop is None else stop
    if end > size or end - start < 2:
        raise InputError(f"{flag}: axis {axis} of output {name!r} has {size} channels, so classes {start}:{end} "
                         f"{'exceed it' if end > size else 'are fewer than 2'}",
                         f"pass START:STOP within 0..{size} with at least 2 classes, e.g. {name}:{axis}:4:{size}")
    return ClassAxis(axis, start, None if start == 0 and stop is None else end, by="user")
