"""TFLite's SavedModel converter without the reads and copies our SavedModels do not need.

Before its MLIR conversion, TF 2.21's ``TFLiteSavedModelConverterV2.convert`` reads the SavedModel three more times
in Python: it parses it to check its version, imports its graph into a ``tf.Graph`` to list the signature's tensors
(which only the legacy, non-MLIR path uses), and restores its whole object graph (``tf.saved_model.load``) for the
stack traces of error messages. After it, it deduplicates the read-only buffers in Python (flatbuffer -> objects ->
flatbuffer) even when no two are equal. On convnext_tiny (110 MB of weights in the graph) that is 3-4 s of an 11 s
fp32 conversion, for every TFLite file.

:func:`saved_model_converter` returns a converter that parses the SavedModel once, converts it with the same MLIR
conversion, quantisation and conversion metadata (added in place: :mod:`converter._convert.flatmeta`), and deduplicates
only when some buffers are equal. The flatbuffer then has the same tensors, ops and buffer contents; only the
placement of its bytes can differ.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path


def saved_model_converter(path: str | Path, tags: set[str], signature_key: str):
    """A ``TFLiteConverter`` for ``signature_key`` of the SavedModel at ``path``: what
    ``TFLiteConverter.from_saved_model`` returns (also its "converted from a SavedModel" metadata) without its
    extra reads of the SavedModel."""
    from tensorflow.lite.python import conversion_metadata_schema_py_generated as metadata
    from tensorflow.lite.python.lite import TFLiteConverterBase

    # what from_saved_model does: a class attribute the constructor reads into the file's metadata; put back
    # after, so the next converter anyone in this process builds does not inherit it
    previous = TFLiteConverterBase._original_model_type  # noqa: SLF001
    TFLiteConverterBase._set_original_model_type(metadata.ModelType.TF_SAVED_MODEL)  # noqa: SLF001
    try:
        return _converter_class()(str(path), tags, [signature_key])
    finally:
        TFLiteConverterBase._original_model_type = previous  # noqa: SLF001


def duplicate_buffers(tflite_bytes: bytes) -> bool:
    """Whether two non-empty buffers of a TFLite flatbuffer hold the same bytes (read through the flatbuffer, no
    copy). Only buffers of equal size whose first bytes are equal too are hashed: a network's weights of one shape
    (every block's) differ in their first bytes, and hashing them all was 0.2 s of convnext_tiny's conversion."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(tflite_bytes, 0)
    groups: dict[tuple[int, bytes], list] = {}
    for k in range(model.BuffersLength()):
        buffer = model.Buffers(k)
        if buffer.DataLength():
            data = buffer.DataAsNumpy()
            groups.setdefault((len(data), data[:PREFIX].tobytes()), []).append(data)
    for group in groups.values():
        if len(group) > 1:
            digests = {hashlib.blake2b(data, digest_size=16).digest() for data in group}
            if len(digests) < len(group):
                return True
    return False


#: Bytes compared before two buffers of one size are hashed
PREFIX = 64


def ops_only(graph):
    """A ``GraphDef`` holding ``graph``'s node and function-node names and ops, nothing else: all that
    ``_convert_from_saved_model`` reads of the graph it is given (whether it holds fake-quantisation ops; "used only
    for stats"), while MLIR reads the SavedModel from disk. The whole graph, held through the conversion and TF's
    metadata pass after it, was one more copy of every weight (110 MB on convnext_tiny) at the process's peak."""
    from tensorflow.core.framework import graph_pb2

    skeleton = graph_pb2.GraphDef()
    for node in graph.node:
        skeleton.node.add(name=node.name, op=node.op)
    for function in graph.library.function:
        copy = skeleton.library.function.add()
        copy.signature.name = function.signature.name
        for node in function.node_def:
            copy.node_def.add(name=node.name, op=node.op)
    return skeleton


@functools.cache
def _converter_class():
    from tensorflow.lite.python import lite
    from tensorflow.python.saved_model import loader_impl

    from converter._convert import flatmeta

    class LeanSavedModelConverter(lite.TFLiteSavedModelConverterV2):
        """``TFLiteSavedModelConverterV2`` that parses its SavedModel once; see the module's docstring."""

        def _parse_saved_model_args(self, always_enable_saved_model_import: bool = False) -> None:
            # the parent parses the file here and again in convert; the MLIR importer reads it a third time
            saved_model = loader_impl.parse_saved_model(self.saved_model_dir)
            self._saved_model_exported_names = self._saved_model_exported_names or []
            self._saved_model_version = saved_model.saved_model_schema_version
            if self._saved_model_version not in (1, 2):
                raise ValueError(f"SavedModel file format({self._saved_model_version}) is not supported")
            graph = next(m.graph_def for m in saved_model.meta_graphs
                         if set(self._saved_model_tags) <= set(m.meta_info_def.tags))
            self._ops_only = ops_only(graph)

        @lite._export_metrics  # noqa: SLF001  (the conversion metadata and metrics, as the parent's convert)
        def convert(self):
            from converter._convert import memory

            model = self._convert_from_saved_model(self._ops_only)
            # what MLIR freed goes back before TF's metadata pass unpacks and repacks the whole flatbuffer in Python
            memory.trim()
            return model

        def _convert_and_export_metrics(self, convert_func, *args, **kwargs):
            # TF's metadata pass unpacks and repacks the whole flatbuffer in Python: flatmeta adds the same entry to
            # the converter's bytes as they are
            excluded, self.exclude_conversion_metadata = self.exclude_conversion_metadata, True
            try:
                result = super()._convert_and_export_metrics(convert_func, *args, **kwargs)
            finally:
                self.exclude_conversion_metadata = excluded
            if excluded or self._experimental_use_buffer_offset or not result:
                return result
            added = flatmeta.with_conversion_metadata(result, self._metadata)
            if added is not None:
                return added
            return super()._convert_and_export_metrics(lambda *_: result)  # TF's own path, on the same bytes

        def _optimize_tflite_model(self, model, quant_mode, *args, **kwargs):
            if (self._experimental_use_buffer_offset or self.representative_dataset is not None
                    or duplicate_buffers(model)):
                return super()._optimize_tflite_model(model, quant_mode, *args, **kwargs)
            # nothing to deduplicate: TF 2.21 reads this flag here only to skip its deduplication
            self._experimental_use_buffer_offset = True
            try:
                return super()._optimize_tflite_model(model, quant_mode, *args, **kwargs)
            finally:
                self._experimental_use_buffer_offset = False

    return LeanSavedModelConverter
