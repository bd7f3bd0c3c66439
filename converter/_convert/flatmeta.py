"""TFLite's conversion metadata, added to a flatbuffer without unpacking it.

After every conversion, TF 2.21's ``TFLiteConverterBase._convert_and_export_metrics`` unpacks the whole flatbuffer
into Python objects to add one buffer: the conversion metadata (``CONVERSION_METADATA``: TF's version, the
converter's options, the sparsity modes and a hash of the model's structure), and packs every object again. On
convnext_tiny (110 MB of weights) that is 0.47 s of a 3.4 s conversion, and 0.16 GiB the process keeps afterwards.

:func:`with_conversion_metadata` computes the same hash and sparsity modes through the flatbuffer's reader and
writes a new root table *in front of* the converter's bytes: it points at their operator codes, subgraphs and
buffer tables as they are (a flatbuffer's offsets point forward, so the untouched bytes can follow), with the
buffers and metadata vectors one entry longer. The result holds the same model as TF's, field for field; only where
its bytes sit differs (a test unpacks both). A flatbuffer this cannot handle (more Model fields than this schema
knows, conversion metadata already present, buffers stored outside the flatbuffer) takes TF's own path.
"""

from __future__ import annotations

import struct

import numpy as np

#: The metadata entry TF names its conversion metadata with, and the one that marks buffers stored past the end
NAME, BUFFER_LOCATION = b"CONVERSION_METADATA", b"buffer_location"
_FILE_IDENTIFIER = b"TFL3"
#: Fields of the Model table in TF 2.21's schema: version (a uint32), then nine offsets
_MODEL_FIELDS = 10
_BUFFERS, _METADATA = 4, 6
#: The largest alignment in a TFLite flatbuffer (constant buffers): a prefix of a multiple of it keeps every byte
#: after it as aligned as it was
_ALIGN = 16
_MASK = (1 << 64) - 1
_HASH_CONSTANT = 0x9E3779B97F4A7800


def with_conversion_metadata(tflite: bytes, metadata) -> bytes | None:
    """``tflite`` with ``metadata`` (a ``ConversionMetadataT``, completed here with the model's hash and sparsity
    modes, as TF does) added as its ``CONVERSION_METADATA`` entry; None where TF's own path must do it."""
    from tensorflow.lite.python import schema_py_generated as schema

    if tflite[4:8] != _FILE_IDENTIFIER:
        return None
    model = schema.Model.GetRootAs(tflite, 0)
    table = model._tab.Pos  # noqa: SLF001
    vtable = table - struct.unpack_from("<i", tflite, table)[0]
    if struct.unpack_from("<H", tflite, vtable)[0] > 4 + 2 * _MODEL_FIELDS:
        return None
    names = [model.Metadata(k).Name() for k in range(model.MetadataLength())]
    if NAME in names or BUFFER_LOCATION in names:
        return None
    metadata.options.modelOptimizationModes.extend(sparsity_modes(model))
    metadata.environment.modelHash = model_hash(model)
    return _prefixed(tflite, table, vtable, _packed(metadata))


def model_hash(model) -> int:
    """TF's ``get_model_hash`` of a ``schema.Model`` (the reader, not the object form): a 64-bit mix of the operator
    and tensor counts, every operator's input and output indices, each tensor's buffer size and shape."""
    h = 0

    def mix(value: int) -> None:
        nonlocal h
        h = (h ^ ((value & _MASK) + _HASH_CONSTANT + (h << 10) + (h >> 4))) & _MASK

    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        if not subgraph.OperatorsIsNone():
            mix(subgraph.OperatorsLength())
            for o in range(subgraph.OperatorsLength()):
                operator = subgraph.Operators(o)
                for indices in (None if operator.InputsIsNone() else operator.InputsAsNumpy(),
                                None if operator.OutputsIsNone() else operator.OutputsAsNumpy()):
                    for index in () if indices is None else indices.tolist():
                        mix(index)
        if not subgraph.TensorsIsNone():
            mix(subgraph.TensorsLength())
            for t in range(subgraph.TensorsLength()):
                tensor = subgraph.Tensors(t)
                buffer = model.Buffers(tensor.Buffer())
                if not buffer.DataIsNone():
                    mix(buffer.DataLength())
                if not tensor.ShapeIsNone():
                    for size in tensor.ShapeAsNumpy().tolist():
                        mix(size)
        if not subgraph.InputsIsNone():
            mix(subgraph.InputsLength())
        if not subgraph.OutputsIsNone():
            mix(subgraph.OutputsLength())
    return h


def sparsity_modes(model) -> list[int]:
    """TF's ``get_sparsity_modes``: random or block sparsity, as some tensor uses them (none without metadata)."""
    from tensorflow.lite.python import conversion_metadata_schema_py_generated as fb

    if model.MetadataLength() == 0:
        return []
    modes = set()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for t in range(subgraph.TensorsLength()):
            sparsity = subgraph.Tensors(t).Sparsity()
            if sparsity is not None:
                block = not sparsity.BlockMapIsNone() and sparsity.BlockMapLength() > 0
                modes.add(fb.ModelOptimizationMode.BLOCK_SPARSITY if block else fb.ModelOptimizationMode.RANDOM_SPARSITY)
    return sorted(modes)


def _packed(metadata) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(0)
    builder.Finish(metadata.Pack(builder))
    return bytes(builder.Output())


class _Prefix:
    """The bytes written in front of the old flatbuffer: a position here is the same in the result, where the old
    flatbuffer's position ``q`` is ``base + q`` (``base``: this prefix's final length)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def align(self, n: int) -> None:
        self.data += bytes(-len(self.data) % n)

    def put(self, fmt: str, *values) -> int:
        at = len(self.data)
        self.data += struct.pack("<" + fmt, *values)
        return at

    def offset(self, at: int, target: int) -> None:
        """The uoffset at ``at`` pointing forward to ``target`` (both positions in the result)."""
        struct.pack_into("<I", self.data, at, target - at)


def _prefixed(old: bytes, table: int, vtable: int, conversion_metadata: bytes) -> bytes:
    """The new root Model table, buffers and metadata vectors, metadata entry and buffer, then ``old`` unchanged."""
    (vtable_size,) = struct.unpack_from("<H", old, vtable)
    slots = [struct.unpack_from("<H", old, vtable + 4 + 2 * k)[0] for k in range((vtable_size - 4) // 2)]

    def target(slot: int) -> int | None:
        """Where the old table's offset field ``slot`` points, in ``old``."""
        if slot >= len(slots) or not slots[slot]:
            return None
        at = table + slots[slot]
        return at + struct.unpack_from("<I", old, at)[0]

    def elements(vector: int | None) -> np.ndarray:
        """Where each table of the old vector of tables at ``vector`` is, in ``old``."""
        if vector is None:
            return np.zeros(0, np.int64)
        count = struct.unpack_from("<I", old, vector)[0]
        at = vector + 4 + 4 * np.arange(count, dtype=np.int64)
        return at + np.frombuffer(old, "<u4", count, vector + 4).astype(np.int64)

    buffers, entries = elements(target(_BUFFERS)), elements(target(_METADATA))
    # an offset field the old table did not have stays absent (vtable entry 0), as TF's repack leaves it
    present = [slot in (0, _BUFFERS, _METADATA) or target(slot) is not None for slot in range(_MODEL_FIELDS)]
    p = _Prefix()
    root = p.put("I", 0)
    p.data += _FILE_IDENTIFIER
    p.align(2)
    new_vtable = p.put(f"{2 + _MODEL_FIELDS}H", 4 + 2 * _MODEL_FIELDS, 4 + 4 * _MODEL_FIELDS,
                       *(4 + 4 * k if present[k] else 0 for k in range(_MODEL_FIELDS)))
    p.align(4)
    new_table = p.put("i", 0)
    struct.pack_into("<i", p.data, new_table, new_table - new_vtable)
    fields = [p.put("I", 0) for _ in range(_MODEL_FIELDS)]
    p.align(4)
    buffer_vector = p.put("I", len(buffers) + 1)
    buffer_slots = [p.put("I", 0) for _ in range(len(buffers) + 1)]
    metadata_vector = p.put("I", len(entries) + 1)
    metadata_slots = [p.put("I", 0) for _ in range(len(entries) + 1)]
    # the new metadata entry: {name, buffer index}, then its name
    entry_vtable = p.put("4H", 8, 12, 4, 8)
    entry = p.put("iII", 0, 0, len(buffers))
    struct.pack_into("<i", p.data, entry, entry - entry_vtable)
    name = p.put("I", len(NAME))
    p.data += NAME + b"\0"
    p.align(4)
    # the new buffer: {data}, its bytes aligned as constant buffers are
    buffer_vtable = p.put("3H", 6, 8, 4)
    p.align(4)
    buffer = p.put("iI", 0, 0)
    struct.pack_into("<i", p.data, buffer, buffer - buffer_vtable)
    p.data += bytes(-(len(p.data) + 4) % _ALIGN)
    data = p.put("I", len(conversion_metadata))
    p.data += conversion_metadata
    p.align(_ALIGN)
    base = len(p.data)

    p.offset(root, new_table)
    version = table + slots[0] if slots and slots[0] else None
    struct.pack_into("<I", p.data, fields[0], 0 if version is None else struct.unpack_from("<I", old, version)[0])
    for slot in range(1, _MODEL_FIELDS):
        if slot == _BUFFERS:
            p.offset(fields[slot], buffer_vector)
        elif slot == _METADATA:
            p.offset(fields[slot], metadata_vector)
        elif (found := target(slot)) is not None:
            p.offset(fields[slot], base + found)
    _point(p, buffer_slots, buffers, base)
    p.offset(buffer_slots[-1], buffer)
    _point(p, metadata_slots, entries, base)
    p.offset(metadata_slots[-1], entry)
    p.offset(entry + 4, name)
    p.offset(buffer + 4, data)
    return bytes(p.data) + old


def _point(p: _Prefix, slots: list[int], targets: np.ndarray, base: int) -> None:
    """The first ``len(targets)`` of ``slots`` point at the old tables ``targets``."""
    if len(targets):
        at = np.asarray(slots[:len(targets)], np.int64)
        values = (base + targets - at).astype("<u4")
        start = slots[0]
        p.data[start:start + 4 * len(targets)] = values.tobytes()

