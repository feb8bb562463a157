"""Preprocessing that only training and offline evaluation need: random and dense crops, and
images as torch tensors.

The contract's resize, centre crop and ``/255`` (what the node does to every frame) are
:mod:`posenet_core.preprocess`; :func:`to_tensor_chw` gives the same values as its
``to_input_tensor`` (a test checks it). Images are RGB ``uint8`` arrays in HWC layout
throughout.
"""

from __future__ import annotations

import numpy as np
import torch

from posenet_core.preprocess import crop
from posenet_train.errors import PoseNetTrainError

__all__ = ["DENSE_CROPS", "dense_crop_offsets", "random_crop", "to_tensor_chw"]

# The PoseNet paper's dense evaluation averages 128 uniformly spaced crops.
DENSE_CROPS = 128


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
