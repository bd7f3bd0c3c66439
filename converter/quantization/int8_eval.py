"""How a TFLite variant does against the float model: accuracy, top-1 agreement, output error.

Every variant runs in a child process (:mod:`converter._proc.isolated`): some int8 graphs make the interpreter
abort, and a search over variants must survive them (they score as unrunnable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Pass criterion for outputs that are not class scores (no top-1): relative L2 error against float
#: (:func:`converter.parity.metrics.relative_error` with ``reduction="l2"``, which says why L2).
MAX_OUTPUT_REL_ERR = 0.05


@dataclass
class Score:
    """How a TFLite variant does against the float model on the evaluation inputs."""

    accuracy: float | None
    accuracy_drop_pp: float | None
    top1_agreement: float | None
    output_rel_err: float
    size_bytes: int
    runnable: bool = True  # False: the interpreter (XNNPACK) refuses the model
    #: as in the parity report: agreement over predictions that are not near-ties, and per-sample cosine
    decisive_agreement: float | None = None
    cosine_min: float | None = None

    def passes(self, target_drop_pp: float, min_agreement: float) -> bool:
        """The parity judge's int8 criteria: accuracy drop with labels; else top-1 agreement (near-ties excused,
        as in :mod:`converter.parity.judge`) and cosine; outputs without classes: relative L2 error."""
        from converter.parity.judge import TOLERANCES

        if not self.runnable:
            return False
        if self.accuracy_drop_pp is not None:
            return self.accuracy_drop_pp <= target_drop_pp
        if self.top1_agreement is not None:
            judged = self.top1_agreement if self.decisive_agreement is None else self.decisive_agreement
            cosine_ok = self.cosine_min is None or self.cosine_min >= TOLERANCES["int8"]["cosine_min"]
            return judged >= min_agreement and cosine_ok
        return self.output_rel_err <= MAX_OUTPUT_REL_ERR


def run_tflite(model: bytes, graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Outputs (PyTorch layout) of a TFLite flatbuffer built from ``graph`` on PyTorch-layout ``inputs``.

    Runs in a child process with the default delegates, as parity and users run it; raises
    :class:`converter._proc.isolated.InterpreterAborted` (a ``RuntimeError``) when the interpreter refuses or
    aborts on the model, which some int8 variants do (see :mod:`converter._proc.isolated`).
    """
    from converter._proc import isolated

    return isolated.run(model, isolated.ports(graph.inputs), isolated.ports(graph.outputs),
                        [np.asarray(x) for x in inputs], graph.inputs[0].torch_shape[0])


def score(outputs: list[np.ndarray], reference: list[np.ndarray], labels: np.ndarray | None,
          float_accuracy: float | None, size: int) -> Score:
    """Accuracy (with labels), top-1 agreement and relative output error against the float model."""
    from converter.parity.judge import TOLERANCES, accuracy_of, cosine_min, decisive_agreement, top1_agreement
    from converter.parity.metrics import relative_error

    agreement = top1_agreement(reference[:1], outputs[:1])
    _, decisive = decisive_agreement(reference[:1], outputs[:1], TOLERANCES["int8"]["tie_margin"])
    accuracy = accuracy_of(outputs[0], labels)
    drop = None if accuracy is None or float_accuracy is None else (float_accuracy - accuracy) * 100
    rel = relative_error(reference, outputs, reduction="l2")
    n = reference[0].shape[0]
    cos = cosine_min(np.concatenate([r.reshape(n, -1) for r in reference], axis=1).astype(np.float64),
                     np.concatenate([o.reshape(n, -1) for o in outputs], axis=1).astype(np.float64))
    return Score(accuracy, drop, agreement, rel, size, decisive_agreement=decisive, cosine_min=cos)


def safe_score(model: bytes, graph, inputs, reference, labels, float_accuracy) -> Score:
    """:func:`score` of ``model``, or an unrunnable score (infinite error) when the interpreter refuses it."""
    try:
        outputs = run_tflite(model, graph, inputs)
    except RuntimeError:
        return Score(None, None, None, float("inf"), len(model), runnable=False)
    return score(outputs, reference, labels, float_accuracy, len(model))
