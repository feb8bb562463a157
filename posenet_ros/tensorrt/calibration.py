"""Calibration images for TensorRT's INT8 calibrator, in equal batches.

The file itself (``<model stem>_calibration.npy`` from posenet_train.export) is checked by
:func:`posenet_core.calibration.read_calibration_images`, as the quantiser and verify_engine
check it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posenet_core.calibration import read_calibration_images
from posenet_core.errors import CalibrationDataError
from posenet_ros.tensorrt.errors import EngineError
from posenet_ros.tensorrt.options import DEFAULT_CALIBRATION_BATCH

__all__ = ["CalibrationBatcher", "load_calibration_images"]


def load_calibration_images(path: str | Path, input_hw: tuple[int, int]) -> np.ndarray:
    """The calibration images posenet_train.export wrote: float32 ``[N,3,H,W]`` RGB, 0..1.

    :func:`posenet_core.calibration.read_calibration_images` checks them (and their JSON
    description); EngineError names the file, the bad value and what is expected.
    """
    try:
        return read_calibration_images(path, input_hw)
    except CalibrationDataError as exc:
        raise EngineError(str(exc)) from None


class CalibrationBatcher:
    """Calibration images in equal batches for TensorRT's calibrator.

    TensorRT calibrates a dynamic-batch network at one fixed shape (the calibration profile), so
    every batch has ``batch_size`` images: ``min(batch_size, N)``; the last ``dropped`` images
    that do not fill a batch are left out.
    """

    def __init__(self, images: np.ndarray, batch_size: int = DEFAULT_CALIBRATION_BATCH) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EngineError(f"calibration batch size {batch_size!r} must be an integer >= 1")
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[0] < 1 or images.dtype != np.float32:
            raise EngineError(
                f"calibration images must be float32 [N,3,H,W] with N >= 1, got "
                f"{images.dtype} {list(images.shape)}"
            )
        self.images = images
        self.batch_size = min(batch_size, images.shape[0])
        self.num_batches = images.shape[0] // self.batch_size
        self.dropped = images.shape[0] - self.num_batches * self.batch_size
        self._next = 0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape of every batch, ``(batch_size, 3, H, W)``."""
        return (self.batch_size, *(int(d) for d in self.images.shape[1:]))  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        """Bytes of one batch."""
        return int(np.prod(self.shape)) * self.images.itemsize

    def next_batch(self) -> np.ndarray | None:
        """The next batch (C-contiguous float32), or None when all were handed out."""
        if self._next >= self.num_batches:
            return None
        start = self._next * self.batch_size
        self._next += 1
        return np.ascontiguousarray(self.images[start : start + self.batch_size])

    def reset(self) -> None:
        """Start again from the first batch."""
        self._next = 0
