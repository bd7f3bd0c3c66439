"""``patch_onnx2tf_offline``: an offline guard for onnx2tf (no calibration download, no network)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np


class NetworkBlockedError(RuntimeError):
    """Raised when code running under ``patch_onnx2tf_offline`` tries to open a network connection."""


def _calibration_stand_in() -> np.ndarray:
    """What onnx2tf's download returns (20 MS-COCO crops, 20x128x128x3 float32 in [0, 1]), as smooth seeded fields."""
    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.linspace(0, 1, 128), np.linspace(0, 1, 128), indexing="ij")
    images = np.zeros((20, 128, 128, 3), np.float64)
    for _ in range(6):
        fy, fx = rng.uniform(0.5, 4.0, size=(2, 20, 1, 1, 3))
        phase = rng.uniform(0, 2 * np.pi, size=(20, 1, 1, 3))
        images += np.cos(2 * np.pi * (fy * yy[None, :, :, None] + fx * xx[None, :, :, None]) + phase)
    lo = images.min(axis=(1, 2, 3), keepdims=True)
    hi = images.max(axis=(1, 2, 3), keepdims=True)
    return ((images - lo) / (hi - lo)).astype(np.float32)


@contextlib.contextmanager
def patch_onnx2tf_offline(calibration: np.ndarray | None = None) -> Iterator[None]:
    """Context manager: while active, onnx2tf cannot reach the network.

    onnx2tf downloads 20 MS-COCO crops whenever every model input looks like an NHWC RGB image (to drive its
    per-op accuracy checks and int8 calibration). ``download_test_image_data`` is imported by name into
    ``onnx2tf.onnx2tf``, so it is replaced in both modules by ``calibration`` (NHWC float32 in [0, 1]) or a seeded
    stand-in of the same shape, dtype and range (built only when onnx2tf asks: 0.3 s). Any other connection attempt
    raises ``NetworkBlockedError`` at once instead of waiting for a timeout. The socket patch is process-wide while
    the context is active.
    """
    import socket
    from unittest import mock

    import onnx2tf.onnx2tf
    import onnx2tf.utils.common_functions

    data = None if calibration is None else np.asarray(calibration, np.float32)
    if data is not None and (data.ndim != 4 or data.shape[-1] != 3):
        raise ValueError(f"calibration must be NHWC RGB images (N, H, W, 3), got shape {data.shape}")

    def download_test_image_data() -> np.ndarray:
        return _calibration_stand_in() if data is None else data.copy()

    def blocked(*args: object, **kwargs: object) -> None:
        raise NetworkBlockedError(f"network access is disabled during conversion (attempted: {args[:2]!r})")

    with contextlib.ExitStack() as stack:
        for module in (onnx2tf.onnx2tf, onnx2tf.utils.common_functions):
            stack.enter_context(mock.patch.object(module, "download_test_image_data", download_test_image_data))
        for name in ("getaddrinfo", "create_connection"):
            stack.enter_context(mock.patch.object(socket, name, blocked))
        stack.enter_context(mock.patch.object(socket.socket, "connect", blocked))
        yield
