"""Conversion options: one frozen dataclass, validated once, shared by the API and the CLI."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from converter.errors import InputError

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "dynamic_int8", "int8")
TARGETS: tuple[str, ...] = ("onnx", "saved_model", "tflite")
LAYOUTS: tuple[str, ...] = ("nhwc", "keep")
#: Input dtypes a ``module:callable`` source can be fed (``--input-dtype``).
INPUT_DTYPES: tuple[str, ...] = ("float32", "float16", "int32", "int64", "bool")
#: ONNX exporters (``--exporter``): ``auto`` tries ``torchscript`` and falls back to ``dynamo`` (torch.export).
EXPORTERS: tuple[str, ...] = ("auto", "dynamo", "torchscript")
DEFAULT_OPSET = 17


#: Parity samples when ``parity_samples`` is left open: the reference net, and any other model
REFERENCE_SAMPLES, DEFAULT_SAMPLES = 1000, 100


@dataclass(frozen=True)
class ConvertOptions:
    """What to build and how to check it.

    Attributes:
        input_names / output_names: names used in every artifact (ONNX, SavedModel signature, TFLite
            signature), in the user's order. Empty: ``input_0..``, ``output_0..``.
        layout: ``nhwc`` (4-D image inputs become NHWC, what TFLite on phones wants) or ``keep``
            (artifacts take exactly the PyTorch shapes). Non-image inputs keep their layout either way.
        dynamic_batch: keep dim 0 symbolic in every artifact; parity then runs at two batch sizes.
        parity_samples: how many samples parity runs through every runtime; None (the default, API and CLI alike):
            1000 for the reference net (``mnist_cnn``), 100 for any other model (:meth:`with_default_samples`).
        precisions / targets: the subset to build. ``precisions=None`` (the default, API and CLI alike): every
            precision, but full int8 only when there is real data to calibrate it on (calibration arrays, or real
            parity data) — int8 ranges from random noise would be a lie (:func:`default_precisions`).
        calibration: representative inputs for full-int8 (list of arrays in PyTorch layout), or None to
            use the parity inputs.
        int8_keep_float: module paths / ONNX scopes to keep in float during full-int8 (selective int8).
        input_dtypes: one dtype per input (``--input-dtype``; empty: float32 for every input of a PyTorch source,
            the file's own for ``.onnx``), e.g. ``("int64", "int64")`` for token ids and an attention mask.
        input_ranges: ``(low, high)`` per input for random integer parity data, drawn uniformly in [low, high)
            (``--input-range``; empty: {0, 1}); ignored for float and bool inputs.
        allow_pickle: let model files be read with Python's full unpickler (a ``.pt2`` whose archive holds
            pickled objects). Off: such a file is refused, since unpickling can run code.
        dynamic_dims: dimensions beyond the batch kept symbolic in every artifact (``--dynamic-dim NAME:AXIS[:LABEL]``;
            in the API also ``{"input_ids": {1: "seq"}}``), kept as ``(input name, axis, label)``; parity then runs
            at the sample's size and at a second one (:mod:`converter._convert.dims`).
        exporter: the torch -> ONNX exporter (``--exporter``): ``torchscript`` (``torch.onnx.export(dynamo=False)``),
            ``dynamo`` (torch.export-based, opset 18 or higher) or ``auto`` (TorchScript, then dynamo if that fails);
            the manifest's ``source.exporter`` records the one used.
        class_axes: which outputs parity judges by top-1 agreement (``--class-axis``), overriding the rule of
            :mod:`converter.parity.classes`: ``(name, axis)``, ``(name, axis, start, stop)`` (classes are channels
            start..stop-1 of ``axis``, e.g. ``("output0", 1, 4, 84)`` for a YOLO head), ``(name, None)`` (judged
            by the error bound and cosine only), or the CLI's text ``"output0:1:4:84"`` / ``"pooler:none"``; kept
            as ``(name, axis, start, stop)`` tuples. Names are checked against the outputs once those are known.
    """

    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    layout: str = "nhwc"
    dynamic_batch: bool = False
    opset: int = DEFAULT_OPSET
    precisions: tuple[str, ...] | None = None
    targets: tuple[str, ...] = TARGETS
    parity: bool = True
    parity_samples: int | None = None
    atol: float | None = None
    rtol: float | None = None
    seed: int = 0
    verbose: bool = False
    localise: bool = False
    int8_keep_float: tuple[str, ...] = field(default_factory=tuple)
    input_dtypes: tuple[str, ...] = ()
    input_ranges: tuple[tuple[int, int], ...] = ()
    allow_pickle: bool = False
    exporter: str = "auto"
    class_axes: tuple[tuple[str, int | None, int, int | None], ...] = ()
    dynamic_dims: tuple[tuple[str, int, str], ...] = ()

    def __post_init__(self) -> None:
        from converter._convert.dims import normalise

        object.__setattr__(self, "dynamic_dims", normalise(self.dynamic_dims))
        entries = (self.class_axes,) if isinstance(self.class_axes, str) else self.class_axes
        object.__setattr__(self, "class_axes", tuple(_class_axis(entry) for entry in entries))
        named = [entry[0] for entry in self.class_axes]
        twice = [n for k, n in enumerate(named) if n in named[:k]]
        if twice:
            raise InputError(f"--class-axis {twice[0]} is given twice", "give one --class-axis per output")
        bad = [p for p in self.precisions or () if p not in PRECISIONS]
        if bad:
            raise InputError(f"unknown precision {bad[0]!r}", f"use a comma list of {', '.join(PRECISIONS)}")
        bad = [t for t in self.targets if t not in TARGETS]
        if bad:
            raise InputError(f"unknown target {bad[0]!r}", f"use a comma list of {', '.join(TARGETS)}")
        if self.layout not in LAYOUTS:
            raise InputError(f"unknown layout {self.layout!r}", "use --layout nhwc or --layout keep")
        if not 7 <= self.opset <= 21:
            raise InputError(f"opset {self.opset} is out of range", "use an ONNX opset between 7 and 21 (default 17)")
        if self.parity_samples is not None and self.parity_samples <= 0:
            raise InputError("--parity-samples must be positive", "pass e.g. --parity-samples 1000")
        for flag, value in (("--atol", self.atol), ("--rtol", self.rtol)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise InputError(f"{flag} {value} is not a finite number >= 0",
                                 f"pass e.g. {flag} 1e-4, or drop {flag} for the default")
        if self.int8_keep_float and "int8" not in self.tflite_precisions:
            raise InputError("--int8-keep-float applies to full int8, which this run does not build",
                             "add int8 to --precision (with --calibration-data FILE.npy), or drop --int8-keep-float")
        if self.exporter not in EXPORTERS:
            raise InputError(f"unknown exporter {self.exporter!r}", f"use --exporter {', '.join(EXPORTERS)}")
        bad = [d for d in self.input_dtypes if d not in INPUT_DTYPES]
        if bad:
            raise InputError(f"unknown --input-dtype {bad[0]!r}", f"use one of {', '.join(INPUT_DTYPES)}")
        for low, high in self.input_ranges:
            if not low < high:
                raise InputError(f"--input-range {low},{high} is empty", "pass LOW,HIGH with LOW < HIGH, e.g. 0,30522")
        _check_names(self.input_names, "input")
        _check_names(self.output_names, "output")
        both = set(self.input_names) & set(self.output_names)
        if both:
            raise InputError(f"{sorted(both)[0]!r} names both an input and an output",
                             "give every input and output its own name")

    @property
    def wants_saved_model(self) -> bool:
        return "saved_model" in self.targets or "tflite" in self.targets

    @property
    def tflite_precisions(self) -> tuple[str, ...]:
        chosen = self.precisions if self.precisions is not None else PRECISIONS
        return chosen if "tflite" in self.targets else ()

    def to_json(self) -> dict:
        return asdict(self)

    def with_default_precisions(self, real_data: bool) -> "ConvertOptions":
        """These options with ``precisions`` decided (:func:`default_precisions`) if the caller left it open."""
        if self.precisions is not None:
            return self
        from dataclasses import replace

        return replace(self, precisions=default_precisions(real_data))

    def with_default_samples(self, reference_net: bool) -> "ConvertOptions":
        """These options with ``parity_samples`` decided if the caller left it open: ``REFERENCE_SAMPLES`` for the
        reference net (its digits are cheap and its accuracy is reported), ``DEFAULT_SAMPLES`` otherwise."""
        if self.parity_samples is not None:
            return self
        from dataclasses import replace

        return replace(self, parity_samples=REFERENCE_SAMPLES if reference_net else DEFAULT_SAMPLES)

    @classmethod
    def from_json(cls, data: dict) -> "ConvertOptions":
        def frozen(v):
            return tuple(frozen(x) for x in v) if isinstance(v, list) else v

        return cls(**{k: frozen(v) for k, v in data.items()})


def default_precisions(real_data: bool) -> tuple[str, ...]:
    """Every precision; full int8 only with real data to calibrate on (calibration arrays or real parity data)."""
    return PRECISIONS if real_data else tuple(p for p in PRECISIONS if p != "int8")


#: Names every artifact accepts as a signature key (TF, TFLite and ONNX alike).
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _class_axis(entry) -> tuple[str, int | None, int, int | None]:
    """One ``class_axes`` entry as ``(name, axis, start, stop)``; ``NAME:AXIS[:START:STOP]`` or ``NAME:none`` text
    is parsed. Only the form is checked here; the name and the axis are checked against the model's outputs
    (:func:`converter.parity.classes.resolve`)."""
    parts = entry.split(":") if isinstance(entry, str) else list(entry) if isinstance(entry, (tuple, list)) else []
    text = entry if isinstance(entry, str) else ":".join("none" if p is None else str(p) for p in parts) or repr(entry)
    fix = "pass NAME:AXIS, NAME:AXIS:START:STOP (classes are channels START..STOP-1 of AXIS) or NAME:none"
    if len(parts) not in (2, 4) or not isinstance(parts[0], str) or not parts[0]:
        raise InputError(f"--class-axis {text} is not NAME:AXIS", fix)
    name, axis, start, stop = (*parts, 0, None) if len(parts) == 2 else parts
    if axis is None or str(axis).lower() == "none":
        return name, None, 0, None
    try:
        axis, start, stop = int(axis), int(start), None if stop is None else int(stop)
    except (TypeError, ValueError):
        raise InputError(f"--class-axis {text} is not NAME:AXIS with integers", fix) from None
    if start < 0 or (stop is not None and stop <= start):
        raise InputError(f"--class-axis {text}: classes {start}:{stop} are empty or negative",
                         "pass START:STOP with 0 <= START < STOP, e.g. output0:1:4:84")
    return name, axis, start, stop


def _check_names(names: tuple[str, ...], kind: str) -> None:
    for name in names:
        if not _NAME.fullmatch(name):
            raise InputError(f"--{kind}-name {name!r} is not a valid name",
                             "use letters, digits and _ (not starting with a digit), e.g. pixel_values")
    seen = [n for k, n in enumerate(names) if n in names[:k]]
    if seen:
        raise InputError(f"--{kind}-name {seen[0]!r} is given twice", f"give every {kind} its own name")
