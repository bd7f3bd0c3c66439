"""``ZooEntry``: one zoo architecture, its I/O contract and its data (the row type of the zoo's table)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from converter.zoo.data import MakeInputs, Task


@dataclass(frozen=True)
class ZooEntry:
    """One architecture: how to build it (with honest weights), its I/O contract and its data.

    ``output_names``: the names of the artifacts' outputs; a model returning a dict (a Hugging Face ``ModelOutput``)
    names them by its keys, which the converter takes by itself (tests/test_zoo.py checks they are these).
    ``input_dtypes``: one numpy dtype name per input (empty: float32 for all), what ``make_inputs`` returns and
    what the conversion declares (``ConvertOptions.input_dtypes``). ``input_ranges``: ``(low, high)`` per input,
    the values ``make_inputs`` draws integer inputs from, [low, high) (token ids: ``(0, vocab)``, an attention
    mask: ``(0, 2)``); passed on as ``ConvertOptions.input_ranges``, empty when every input is float.
    """

    name: str
    build: Callable[[], nn.Module]
    input_shapes: list[tuple[int, ...]]
    input_names: list[str]
    output_names: list[str]
    make_inputs: MakeInputs = field(repr=False)
    fast: bool = False
    task: Task | None = field(default=None, repr=False)  # labels for the parity data (trained entries)
    trained_as: str = ""  # whose cached training it uses, when not its own name's (a variant of another entry)
    input_dtypes: tuple[str, ...] = ()
    input_ranges: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        count = len(self.input_shapes)
        if len(self.input_names) != count or len(self.input_dtypes) not in (0, count) \
                or len(self.input_ranges) not in (0, count):
            raise ValueError(f"zoo entry {self.name}: give one name (and dtype / range, if any) per input shape")

    @property
    def dtypes(self) -> list[np.dtype]:
        """The numpy dtype of each input, in order."""
        return [np.dtype(d) for d in self.input_dtypes] or [np.dtype(np.float32)] * len(self.input_shapes)

    def sample_inputs(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """One batch (batch size of ``input_shapes``) as torch tensors, e.g. for ``torch.onnx.export``."""
        return tuple(torch.from_numpy(x) for x in self.make_inputs(self.input_shapes[0][0], seed))
