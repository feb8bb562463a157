"""Tests of posenet_train.preprocess (random and dense crops, torch tensors), including
byte-for-byte agreement of its tensors with posenet_core's, which the node feeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posenet_core.preprocess import center_crop, resize_shorter_and_center_crop, to_input_tensor
from posenet_train.errors import PoseNetTrainError
from posenet_train.preprocess import dense_crop_offsets, random_crop, to_tensor_chw

# (image H, W, resize shorter, crop H, W): shrinking, enlarging, unchanged size, portrait,
# odd sizes (rounding of the resized size and of the centre offset), non-square crops.
SIZES = [
    (480, 640, 256, 224, 224),
    (1080, 1920, 256, 224, 224),
    (100, 150, 256, 224, 224),
    (256, 341, 256, 224, 224),
    (640, 480, 256, 224, 224),
    (257, 333, 255, 201, 199),
    (37, 91, 64, 63, 64),
    (301, 301, 300, 299, 299),
]


def random_image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(("h", "w", "resize", "crop_h", "crop_w"), SIZES)
def test_tensor_matches_the_contract_byte_for_byte(h, w, resize, crop_h, crop_w) -> None:
    # The trainer's torch tensor vs posenet_core's to_input_tensor (what the node feeds).
    for seed in range(3):
        ours = resize_shorter_and_center_crop(random_image(h, w, seed), resize, (crop_h, crop_w))
        assert ours.shape == (crop_h, crop_w, 3) and ours.dtype == np.uint8
        assert to_tensor_chw(ours).numpy().tobytes() == to_input_tensor(ours)[0].tobytes()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: random_crop(np.zeros((4, 4, 3), np.uint8), (4, 5)), "larger than"),
        (lambda: dense_crop_offsets((4, 4), (5, 4)), "larger than"),
        (lambda: dense_crop_offsets((8, 8), (4, 4), 0), ">= 1"),
    ],
)
def test_bad_input(call, message) -> None:
    with pytest.raises(PoseNetTrainError, match=message):
        call()


def test_random_crop_is_seeded_and_inside() -> None:
    image = random_image(20, 30, 1)
    first = [random_crop(image, (8, 8), torch.Generator().manual_seed(7)) for _ in range(2)]
    assert first[0].tobytes() == first[1].tobytes()
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        window = random_crop(image, (8, 8), generator)
        assert window.shape == (8, 8, 3)
        # Locate the window to check it is a real sub-image.
        for top in range(13):
            for left in range(23):
                if np.array_equal(image[top : top + 8, left : left + 8], window):
                    seen.add((top, left))
    assert len(seen) > 10


@pytest.mark.parametrize(
    ("image_hw", "crop_hw", "grid"),
    [
        ((256, 341), (224, 224), (8, 16)),
        ((341, 256), (224, 224), (16, 8)),
        ((224, 300), (224, 224), (1, 128)),
    ],
)
def test_dense_crop_offsets_grid(image_hw, crop_hw, grid) -> None:
    offsets = dense_crop_offsets(image_hw, crop_hw)
    assert offsets.shape == (128, 2)
    tops, lefts = np.unique(offsets[:, 0]), np.unique(offsets[:, 1])
    # Rounded linspace: the grid spans the full range of valid offsets.
    assert tops.min() == 0 and tops.max() == image_hw[0] - crop_hw[0]
    assert lefts.min() == 0 and lefts.max() == image_hw[1] - crop_hw[1]
    if grid[0] > 1:
        assert len(tops) == grid[0]
    assert len(lefts) == min(grid[1], image_hw[1] - crop_hw[1] + 1)
    spacing = np.diff(lefts)
    assert spacing.max() - spacing.min() <= 1


def test_dense_crop_offsets_square_and_exact_fit() -> None:
    assert (dense_crop_offsets((224, 224), (224, 224)) == 0).all()
    offsets = dense_crop_offsets((256, 256), (224, 224), count=4)
    assert sorted(map(tuple, offsets)) == [(0, 0), (0, 32), (32, 0), (32, 32)]


def test_random_crop_with_max_shift_stays_near_the_centre() -> None:
    rows, cols = np.meshgrid(np.arange(20), np.arange(30), indexing="ij")
    image = np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    generator = torch.Generator().manual_seed(3)
    centre = center_crop(image, (10, 10))
    assert np.array_equal(random_crop(image, (10, 10), generator, max_shift_px=0), centre)
    corners = set()
    for _ in range(300):
        window = random_crop(image, (10, 10), generator, max_shift_px=2)
        corners.add((int(window[0, 0, 0]), int(window[0, 0, 1])))
    assert {t for t, _ in corners} == {3, 4, 5, 6, 7}
    assert {x for _, x in corners} == {8, 9, 10, 11, 12}
    with pytest.raises(PoseNetTrainError, match="max_shift_px"):
        random_crop(image, (10, 10), generator, max_shift_px=-1)
