"""Handing memory back to the operating system between the stages of a conversion.

Each stage leaves garbage: onnx2tf's Keras layers and the traced serving function are reference cycles the collector
only frees on a full pass, and what TensorFlow's TFLite converter frees stays in glibc's heap, counted in the
process's RSS, until something trims it. The next stage then grows from there, so the peak is the sum. On
convnext_tiny the TFLite conversion adds ~1.1 GiB to whatever the process holds: before it, the process held
1.41 GiB, of which 0.7 GiB was garbage or no longer needed (the ONNX proto, the Keras model), and the peak went
2.3-2.4 → 1.9 GiB once they were given back. One call costs 0.01-0.2 s (the first full collection after onnx2tf).
"""

from __future__ import annotations

import ctypes
import gc
import sys


def give_back() -> None:
    """Collect cyclic garbage, then return the free heap to the OS (glibc's ``malloc_trim``; elsewhere only the
    collection)."""
    gc.collect()
    trim()


def trim() -> None:
    """Only return the free heap to the OS: for garbage freed by reference counting (a protobuf graph replaced by
    its rewritten copy), where a full collection would cost more than it finds (0.1 s in a process holding
    TensorFlow)."""
    trim_heap = _malloc_trim()
    if trim_heap is not None:
        trim_heap(0)


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
