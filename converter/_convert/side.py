"""What the PyTorch side hands the TensorFlow side: the contract between the two stages (NumPy only).

:mod:`converter._convert.torchstage` fills a :class:`TorchSide` (in the PyTorch child, or in-process for a live
module); :mod:`converter._convert.artifacts` and :mod:`converter.parity.run` read it. Neither side imports the
other's framework through it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from converter.parity.data import ParityData

#: With ``--dynamic-batch`` every runtime is fed at these batch sizes (the reference at the first).
DYNAMIC_BATCHES = (1, 3)
#: Chunk size for runtimes that take any batch when the artifacts have a fixed batch (PyTorch eager, TorchScript).
#: 16, not 64: the PyTorch child computes these rows beside the TensorFlow process's translation, and their
#: activations at 64 were the tree's peak on small CNNs (squeezenet1_1 with parity: 2.25 against 1.71 GiB;
#: convnext_tiny's rows 0.17 against 0.06 GiB) at the same speed. The reference's last bits follow the chunk: on
#: the MNIST net every max error stays the same and the mean errors move in the 4th significant digit.
FREE_CHUNK = 16


@dataclass(frozen=True)
class GraphFacts:
    """What the TF side reads of ``model.onnx`` before translating it, from the side that exported and checked it
    (the TF process then does not parse the file only for these: 0.18 s on convnext_tiny's 110 MB)."""

    #: the default-domain opset the file declares (the dynamo exporter writes at least 18, whatever ``--opset``)
    opset: int | None
    op_types: tuple[str, ...]
    nodes: int

    @classmethod
    def of(cls, model) -> GraphFacts:
        """The facts of an ``onnx.ModelProto``."""
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        return cls(opset, tuple(sorted({n.op_type for n in model.graph.node})), len(model.graph.node))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> GraphFacts:
        return cls(data["opset"], tuple(data["op_types"]), int(data["nodes"]))


@dataclass
class TorchSide:
    """Everything the TF side needs from PyTorch, as plain arrays (picklable to a file)."""

    kind: str
    input_names: list[str]
    output_names: list[str]
    shapes: list[tuple[int, ...]]
    dtypes: list[str]
    data: ParityData
    #: runtime -> batch chunk -> outputs, for ``pytorch`` (also the reference) and ``torchscript``
    outputs: dict[str, dict[int, list[np.ndarray]]] = field(default_factory=dict)
    #: the reference net's weights (numpy state_dict) for the ``keras_native`` route
    keras_state: dict[str, np.ndarray] | None = None
    reference_name: str | None = None
    #: the manifest's ``source`` (:class:`converter._convert.manifest.Source` as JSON): name, kind, spec, weights,
    #: and, when this side exported ``model.onnx``, the ``exporter`` that wrote it (and ``exporter_fallback``)
    source: dict = field(default_factory=dict)
    #: with ``--dynamic-dim``: parity data with every dynamic dimension at its second size, the PyTorch outputs on it
    #: (runtime -> outputs), and the sizes in words (``seq = 16 and 8``)
    resized: ParityData | None = None
    resized_outputs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    dynamic_dims: str = ""
    #: the ``model.onnx`` this side exported, after :func:`converter._convert.export.check_onnx` passed on it; None
    #: when it did not export the file (an ``.onnx`` source, ``--check``): the TF side then checks and runs it itself
    graph: GraphFacts | None = None
    #: onnxruntime's outputs on the sample (the first ``shapes[0][0]`` parity samples) from the exported
    #: ``model.onnx``, once they matched PyTorch's. The child hands its side over before that check (the TF side's
    #: translation does not need them until onnx2tf has built the graph): there they come later, through
    #: :meth:`converter._convert.torchstage.IsolatedStage.onnx_outputs`
    onnx_outputs: list[np.ndarray] | None = None

    @property
    def exporter(self) -> str | None:
        """``torchscript`` or ``dynamo`` when this side exported ``model.onnx``, else None."""
        return self.source.get("exporter")

    def chunks(self, dynamic: bool) -> tuple[int, ...]:
        return DYNAMIC_BATCHES if dynamic else (FREE_CHUNK,)


def take(x: np.ndarray, batch: int) -> np.ndarray:
    """The first ``batch`` samples (repeated if there are fewer), contiguous."""
    if len(x) >= batch:
        return np.ascontiguousarray(x[:batch])
    return np.ascontiguousarray(np.concatenate([x] * (batch // len(x) + 1))[:batch])
