"""``manifest.json``: what a conversion built and how to feed it, as one typed object.

The manifest is the contract between the stages and the tools that read an output directory later (``--check``,
the benchmark, the HTML report): :mod:`converter._convert.artifacts` builds it, everything else reads its fields.
:meth:`Manifest.to_json` writes the same JSON layout the files on disk have always had; :meth:`Manifest.from_json`
refuses a file that is not one (``ValueError`` naming the missing entry).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = "torch2tf-manifest/1"


@dataclass
class TensorInfo:
    """One input or output: its name in every artifact, the artifact's shape and dtype, and how to get there from
    the PyTorch layout (``np.transpose(x_torch, perm_from_pytorch)``)."""

    name: str
    shape: list[int | None]
    dtype: str
    perm_from_pytorch: list[int]
    pytorch_shape: list[int]

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "perm_from_pytorch": list(self.perm_from_pytorch), "pytorch_shape": list(self.pytorch_shape)}

    @classmethod
    def from_json(cls, data: dict) -> "TensorInfo":
        return cls(str(data["name"]), list(data["shape"]), str(data["dtype"]), [int(p) for p in data["perm_from_pytorch"]],
                   [int(d) for d in data["pytorch_shape"]])


@dataclass
class Source:
    """Where the model came from, as ``convert`` was told (``--check`` without a model loads it again), and which
    ONNX exporter wrote ``model.onnx`` (``torchscript`` or ``dynamo``; None for an ``.onnx`` source and in manifests
    written before the choice existed, which all used ``torchscript``). ``exporter_fallback``: why ``--exporter auto``
    left the TorchScript exporter, when it did."""

    name: str
    kind: str
    spec: str
    weights: str | None = None
    exporter: str | None = None
    exporter_fallback: str | None = None

    def to_json(self) -> dict:
        optional = {"exporter": self.exporter, "exporter_fallback": self.exporter_fallback}
        return {"name": self.name, "kind": self.kind, "spec": self.spec, "weights": self.weights,
                **{k: v for k, v in optional.items() if v is not None}}

    @classmethod
    def from_json(cls, data: dict) -> "Source":
        if not isinstance(data.get("spec"), str):
            raise ValueError("source.spec is missing")
        return cls(str(data.get("name", "")), str(data.get("kind", "")), data["spec"], data.get("weights"),
                   data.get("exporter"), data.get("exporter_fallback"))


@dataclass
class Artifact:
    """One file (or the SavedModel directory) of the output. ``details``: what only some artifacts carry (a TFLite
    file's op histogram, signature, I/O dtype, int8 selection, ...), written beside the common fields."""

    path: str
    bytes: int | None = None
    sha256: str | None = None
    precision: str | None = None
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        common = {"path": self.path, "bytes": self.bytes, "sha256": self.sha256, "precision": self.precision}
        return {**{k: v for k, v in common.items() if v is not None}, **self.details}

    @classmethod
    def from_json(cls, data: dict) -> "Artifact":
        rest = {k: v for k, v in data.items() if k not in ("path", "bytes", "sha256", "precision")}
        return cls(str(data["path"]), data.get("bytes"), data.get("sha256"), data.get("precision"), rest)


@dataclass
class Manifest:
    """What a conversion built. ``inputs``/``outputs`` describe the TF artifacts (after the layout decision);
    ``onnx_inputs``/``onnx_outputs`` the ONNX graph (PyTorch layout)."""

    source: Source
    layout: str
    dynamic_batch: bool
    opset: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    onnx_inputs: list[TensorInfo]
    onnx_outputs: list[TensorInfo]
    artifacts: dict[str, Artifact]
    versions: dict[str, str] = field(default_factory=dict)
    rewrites: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    #: artifacts that could not be built (the others stand; parity reports these as failed rows)
    failed_artifacts: dict[str, str] = field(default_factory=dict)
    #: how a symbolic batch was reached when onnx2tf could not build it directly
    dynamic_batch_route: dict | None = None
    format: str = FORMAT
    #: how onnx2tf translated the graph: ``{"strict_mode": False}`` (the fast route), or strict mode and why the
    #: fast route was not kept (:func:`converter._convert.tensorflow.onnx_to_keras`)
    translation: dict | None = None

    @property
    def fixed_batch(self) -> int | None:
        """The batch every artifact is built for, or None with ``--dynamic-batch``."""
        return None if self.dynamic_batch else self.inputs[0].pytorch_shape[0]

    def tflite_artifacts(self) -> list[Artifact]:
        return [a for a in self.artifacts.values() if a.precision is not None]

    def artifact_bytes(self, path: str | None) -> int | None:
        return next((a.bytes for a in self.artifacts.values() if a.path == path), None)

    def to_json(self) -> dict:
        data = {
            "format": self.format, "source": self.source.to_json(), "layout": self.layout,
            "dynamic_batch": self.dynamic_batch, "opset": self.opset,
            "inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs],
            "onnx": {"inputs": [t.to_json() for t in self.onnx_inputs],
                     "outputs": [t.to_json() for t in self.onnx_outputs]},
            "artifacts": {k: a.to_json() for k, a in self.artifacts.items()},
            "versions": dict(self.versions), "rewrites": list(self.rewrites), "timings_s": dict(self.timings_s),
        }
        if self.failed_artifacts:
            data["failed_artifacts"] = dict(self.failed_artifacts)
        if self.dynamic_batch_route is not None:
            data["dynamic_batch_route"] = self.dynamic_batch_route
        if self.translation is not None:
            data["translation"] = self.translation
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Manifest":
        """Parse a manifest; ``ValueError`` naming the first problem when ``data`` is not one."""
        try:
            if not str(data.get("format", "")).startswith("torch2tf-manifest/"):
                raise ValueError("format is not torch2tf-manifest")
            onnx = data["onnx"]
            return cls(
                Source.from_json(data["source"]), str(data["layout"]), bool(data["dynamic_batch"]), int(data["opset"]),
                [TensorInfo.from_json(t) for t in data["inputs"]], [TensorInfo.from_json(t) for t in data["outputs"]],
                [TensorInfo.from_json(t) for t in onnx["inputs"]], [TensorInfo.from_json(t) for t in onnx["outputs"]],
                {str(k): Artifact.from_json(a) for k, a in data["artifacts"].items()},
                dict(data.get("versions", {})), list(data.get("rewrites", [])), dict(data.get("timings_s", {})),
                dict(data.get("failed_artifacts", {})), data.get("dynamic_batch_route"), str(data["format"]),
                data.get("translation"))
        except KeyError as exc:
            raise ValueError(f"{exc.args[0]!r} is missing") from None
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"an entry has the wrong type ({exc})") from None

    def write(self, out_dir: Path) -> None:
        (Path(out_dir) / "manifest.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def read(cls, out_dir: Path) -> "Manifest":
        """``out_dir/manifest.json``; ``OSError`` if unreadable, ``ValueError`` if it is not a manifest."""
        return cls.from_json(json.loads((Path(out_dir) / "manifest.json").read_text()))
