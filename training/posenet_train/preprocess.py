"""Image preprocessing shared by training, evaluation and (by identical algorithm) the ROS node.

:func:`resize_shorter_and_center_crop` must stay byte-for-byte identical to the node's
``posenet_ros/preprocess.py`` (a test checks it), so offline numbers are what the node gets live:

1. scale ``s = resize_shorter / min(h, w)``; new size ``(round(h*s), round(w*s))``;
2. ``cv2.resize`` with ``INTER_AREA`` when shrinking, ``INTER_LINEAR`` when enlarging;
3. centre crop: ``top = int(round((h_r - H) / 2.0))``, ``left`` likewise.

Images are RGB ``uint8`` arrays in HWC layout throughout.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from posenet_train.errors import PoseNetTrainError

__all__ = [
    "DENSE_CROPS",
    "center_crop",
    "crop",
    "dense_crop_offsets",
    "random_crop",
    "resize_shorter",
    "resize_shorter_and_center_crop",
    "to_tensor_chw",
]

# The PoseNet paper's dense evaluation averages 128 uniformly spaced crops.
DENSE_CROPS = 128


def _check_image(rgb_hwc: np.ndarray) -> None:
    if not isinstance(rgb_hwc, np.ndarray) or rgb_hwc.ndim != 3 or rgb_hwc.shape[2] != 3:
        shape = getattr(rgb_hwc, "shape", type(rgb_hwc).__name__)
        raise PoseNetTrainError(f"expected an RGB image of shape (H, W, 3), got {shape}")
    if rgb_hwc.dtype != np.uint8:
        raise PoseNetTrainError(f"expected a uint8 image, got dtype {rgb_hwc.dtype}")
    if min(rgb_hwc.shape[:2]) < 1:
        raise PoseNetTrainError(f"empty image of shape {rgb_hwc.shape}")


def resize_shorter(rgb_hwc: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` pixels, keeping the aspect ratio (see module doc)."""
    _check_image(rgb_hwc)
    if int(size) < 1:
        raise PoseNetTrainError(f"resize size must be >= 1 pixel, got {size}")
    h, w = rgb_hwc.shape[:2]
    scale = float(size) / float(min(h, w))
    new_h, new_w = int(round(h * scale)), int(round(w * scale))
    if (new_h, new_w) == (h, w):
        return rgb_hwc
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(rgb_hwc, (new_w, new_h), interpolation=interpolation)


# The name resize_shorter is also a parameter of resize_shorter_and_center_crop (the node's
# signature); this alias lets that function reach the module-level one.
_resize_shorter = resize_shorter


def crop(rgb_hwc: np.ndarray, top: int, left: int, crop_hw: tuple[int, int]) -> np.ndarray:
    """The ``crop_hw`` window at (top, left); raises if it does not lie inside the image."""
    h, w = rgb_hwc.shape[:2]
    ch, cw = int(crop_hw[0]), int(crop_hw[1])
    if ch < 1 or cw < 1 or top < 0 or left < 0 or top + ch > h or left + cw > w:
        raise PoseNetTrainError(
            f"crop {ch}x{cw} at (top={top}, left={left}) does not fit in an image of {h}x{w};"
            " the resize size must be >= the crop size"
        )
    return rgb_hwc[top : top + ch, left : left + cw]


def center_crop(rgb_hwc: np.ndarray, crop_hw: tuple[int, int]) -> np.ndarray:
    """Centre crop with ``top = int(round((h - H) / 2.0))`` (and the same for left)."""
    h, w = rgb_hwc.shape[:2]
    top = int(round((h - int(crop_hw[0])) / 2.0))
    left = int(round((w - int(crop_hw[1])) / 2.0))
    return crop(rgb_hwc, top, left, crop_hw)


def resize_shorter_and_center_crop(
    rgb_HWC: np.ndarray, resize_shorter: int, input_hw: tuple[int, int]
) -> np.ndarray:
    """Resize the shorter side to ``resize_shorter`` then centre-crop ``input_hw`` (uint8 HWC).

    The node's algorithm and parameter names, byte for byte; returns a contiguous array.
    """
    resized = _resize_shorter(rgb_HWC, resize_shorter)
    return np.ascontiguousarray(center_crop(resized, input_hw))


def random_crop(
    rgb_hwc: np.ndarray,
    crop_hw: tuple[int, int],
    generator: torch.Generator | None = None,
    max_shift_px: int | None = None,
) -> np.ndarray:
    """A random ``crop_hw`` window, drawn from ``generator`` (torch's default if None).

    With ``max_shift_px`` None the window is uniform over the image (the PoseNet paper's random
    crop); otherwise it is the centre crop moved by at most ``max_shift_px`` in each direction.
    A shifted crop shows the scene as from a slightly rotated camera while the label stays the
    same, so large shifts act as orientation label noise; small ones still regularise.

    Drawing from torch's RNG keeps DataLoader workers deterministic: PyTorch seeds each worker's
    torch RNG from the loader's generator.
    """
    h, w = rgb_hwc.shape[:2]
    ch, cw = int(crop_hw[0]), int(crop_hw[1])
    if ch > h or cw > w:
        raise PoseNetTrainError(f"crop {ch}x{cw} is larger than the image {h}x{w}")
    if max_shift_px is not None and max_shift_px < 0:
        raise PoseNetTrainError(f"max_shift_px must be >= 0 or None, got {max_shift_px}")

    def draw(size: int, crop_size: int) -> int:
        if max_shift_px is None:
            return int(torch.randint(0, size - crop_size + 1, (1,), generator=generator))
        centre = int(round((size - crop_size) / 2.0))
        low = max(0, centre - max_shift_px)
        high = min(size - crop_size, centre + max_shift_px)
        return int(torch.randint(low, high + 1, (1,), generator=generator))

    top = draw(h, ch)
    left = draw(w, cw)
    return crop(rgb_hwc, top, left, crop_hw)


def _grid_counts(range_h: int, range_w: int, count: int) -> tuple[int, int]:
    best: tuple[float, int, int] | None = None
    for rows in range(1, count + 1):
        if count % rows:
            continue
        cols = count // rows
        step_h = range_h / (rows - 1) if rows > 1 else (float("inf") if range_h else 0.0)
        step_w = range_w / (cols - 1) if cols > 1 else (float("inf") if range_w else 0.0)
        key = (max(step_h, step_w), rows, cols)
        if best is None or key[0] < best[0]:
            best = key
    assert best is not None
    return best[1], best[2]


def dense_crop_offsets(
    image_hw: tuple[int, int], crop_hw: tuple[int, int], count: int = DENSE_CROPS
) -> np.ndarray:
    """``(count, 2)`` int array of (top, left) offsets of uniformly spaced crops.

    The crops form a rows x cols grid (rows * cols = count) spanning the full range of valid
    offsets, with the factorisation that makes the largest spacing between neighbouring crops
    smallest (for a 256x341 image and 224x224 crops: 8 x 16). Offsets are rounded to pixels, so
    neighbouring crops can coincide when the range is smaller than the grid.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    ch, cw = int(crop_hw[0]), int(crop_hw[1])
    if count < 1:
        raise PoseNetTrainError(f"dense crop count must be >= 1, got {count}")
    if ch > h or cw > w:
        raise PoseNetTrainError(f"crop {ch}x{cw} is larger than the image {h}x{w}")
    rows, cols = _grid_counts(h - ch, w - cw, count)
    tops = np.rint(np.linspace(0, h - ch, rows)).astype(np.int64)
    lefts = np.rint(np.linspace(0, w - cw, cols)).astype(np.int64)
    if rows == 1:
        tops[:] = int(round((h - ch) / 2.0))
    if cols == 1:
        lefts[:] = int(round((w - cw) / 2.0))
    grid_top, grid_left = np.meshgrid(tops, lefts, indexing="ij")
    return np.stack([grid_top.ravel(), grid_left.ravel()], axis=1)


def to_tensor_chw(rgb_hwc: np.ndarray) -> torch.Tensor:
    """uint8 HWC RGB -> float32 CHW tensor in 0..1 (no mean/std: that is inside the model)."""
    return torch.from_numpy(np.ascontiguousarray(rgb_hwc.transpose(2, 0, 1))).float().div_(255.0)
