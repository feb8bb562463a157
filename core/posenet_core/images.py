"""Image files as RGB arrays: what the dataset player and the trainer both decode.

OpenCV (``opencv-python-headless``) decodes the files; it is imported inside :func:`read_rgb`,
the one place the library needs it (besides the resize in :mod:`posenet_core.preprocess`), so the
rest of the library imports without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posenet_core.errors import DatasetError

__all__ = ["image_size", "read_rgb"]


def read_rgb(path: Path) -> np.ndarray:
    """The image file as H x W x 3 uint8 RGB (grey and 16-bit images converted to it).

    Raises DatasetError naming the file when it is missing or cannot be decoded.
    """
    import cv2

    path = Path(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        if not path.is_file():
            raise DatasetError(f"{path}: cannot read image (file not found)")
        raise DatasetError(
            f"{path}: cannot read image (not a readable image: it cannot be decoded)"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of the image file (decoded by :func:`read_rgb`: DatasetError naming
    the file when it cannot be read)."""
    height, width = read_rgb(path).shape[:2]
    return width, height
