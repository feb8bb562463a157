"""posenet_core.preprocess: the contract's resize, centre crop and tensor layout vs independent
references (moved from test/test_preprocess.py and training/tests/test_preprocess.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from posenet_core.errors import PoseNetError, PreprocessError
from posenet_core.errors import PoseNetError as PoseNetTrainError
from posenet_core.preprocess import (
    center_crop,
    center_crop_offsets,
    crop,
    preprocess,
    resize_shorter,
    resize_shorter_and_center_crop,
    resized_shape,
    to_input_tensor,
)

torch = pytest.importorskip("torch")
tvf = pytest.importorskip("torchvision.transforms.functional")
torch.set_num_threads(1)


def _coordinate_image(height: int, width: int) -> np.ndarray:
    """R = row, G = column (mod 256), B = 7: a crop's offsets can be read off its pixels."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([yy % 256, xx % 256, np.full_like(yy, 7)], axis=2).astype(np.uint8)


def _smooth_image(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.stack(
        [
            127 + 120 * np.sin(xx / 37.0),
            127 + 120 * np.cos(yy / 23.0),
            (xx + yy) * 255.0 / (height + width),
        ],
        axis=2,
    )
    return image.round().astype(np.uint8)


@pytest.mark.parametrize(
    "height, width, resize_shorter, expected",
    [
        (480, 640, 256, (256, 341)),  # 341.33 -> 341
        (640, 480, 256, (341, 256)),
        (480, 640, 224, (224, 299)),  # 298.67 -> 299 (round, not truncate)
        (100, 100, 36, (36, 36)),
        (4, 5, 2, (2, 2)),  # 2.5 -> 2: Python's round (half to even)
        (4, 7, 2, (2, 4)),  # 3.5 -> 4
        (10, 20, 30, (30, 60)),  # enlarging
        (1080, 1920, 256, (256, 455)),  # 455.1
    ],
)
def test_resized_shape_rule(height, width, resize_shorter, expected):
    assert resized_shape(height, width, resize_shorter) == expected


@pytest.mark.parametrize(
    "height, width, crop_hw, expected",
    [
        (36, 36, (32, 32), (2, 2)),
        (36, 41, (32, 32), (2, 4)),  # (41 - 32) / 2 = 4.5 -> 4 (half to even, like torchvision)
        (36, 43, (32, 32), (2, 6)),  # 5.5 -> 6
        (33, 32, (32, 32), (0, 0)),  # 0.5 -> 0
        (35, 32, (32, 32), (2, 0)),  # 1.5 -> 2
        (256, 341, (224, 224), (16, 58)),  # 58.5 -> 58
    ],
)
def test_center_crop_offsets_rule(height, width, crop_hw, expected):
    assert center_crop_offsets(height, width, crop_hw) == expected


@pytest.mark.parametrize(
    "height, width, crop_hw",
    [(36, 41, (32, 32)), (36, 43, (32, 32)), (33, 32, (32, 32)), (35, 50, (20, 40))],
)
def test_crop_offsets_exact_on_coordinate_image(height, width, crop_hw):
    # resize_shorter == the shorter side: no resampling, so the crop's pixels give its offsets.
    image = _coordinate_image(height, width)
    crop = resize_shorter_and_center_crop(image, min(height, width), crop_hw)
    assert crop.shape == (*crop_hw, 3)
    top, left = int(crop[0, 0, 0]), int(crop[0, 0, 1])
    assert (top, left) == center_crop_offsets(height, width, crop_hw)
    # Same window as torchvision's CenterCrop, computed by torchvision.
    reference = tvf.center_crop(torch.from_numpy(image).permute(2, 0, 1), list(crop_hw))
    np.testing.assert_array_equal(crop, reference.permute(1, 2, 0).numpy())


@pytest.mark.parametrize(
    "height, width, resize_shorter, crop_hw",
    [
        (480, 640, 256, (224, 224)),
        (640, 480, 256, (224, 224)),
        (120, 160, 36, (32, 32)),
        (30, 40, 64, (60, 60)),  # enlarging
        (240, 320, 100, (100, 120)),  # non-square crop
    ],
)
def test_against_torchvision_resize_and_center_crop(height, width, resize_shorter, crop_hw):
    image = _smooth_image(height, width)
    ours = resize_shorter_and_center_crop(image, resize_shorter, crop_hw)
    assert ours.shape == (*crop_hw, 3) and ours.dtype == np.uint8

    tensor = torch.from_numpy(image).permute(2, 0, 1)
    # torchvision's own shorter-side resize truncates the long side; it agrees within 1 pixel.
    tv_resized = tvf.resize(tensor, resize_shorter, antialias=True)
    expected_hw = resized_shape(height, width, resize_shorter)
    assert min(tv_resized.shape[1:]) == resize_shorter
    assert abs(tv_resized.shape[1] - expected_hw[0]) <= 1
    assert abs(tv_resized.shape[2] - expected_hw[1]) <= 1

    # Same size as ours: the crop must be the same window, the values close (different filters).
    tv_same_size = tvf.resize(tensor, list(expected_hw), antialias=True)
    tv_crop = tvf.center_crop(tv_same_size, list(crop_hw)).permute(1, 2, 0).numpy()
    assert np.abs(ours.astype(float) - tv_crop.astype(float)).mean() < 2.0


def test_resampling_filters():
    image = _smooth_image(120, 160)
    shrunk = resize_shorter_and_center_crop(image, 60, (60, 80))
    np.testing.assert_array_equal(
        shrunk, cv2.resize(image, (80, 60), interpolation=cv2.INTER_AREA)
    )
    enlarged = resize_shorter_and_center_crop(image, 240, (240, 320))
    np.testing.assert_array_equal(
        enlarged, cv2.resize(image, (320, 240), interpolation=cv2.INTER_LINEAR)
    )
    unchanged = resize_shorter_and_center_crop(image, 120, (120, 160))
    np.testing.assert_array_equal(unchanged, image)


@pytest.mark.parametrize(
    "image, resize_shorter, crop_hw, words",
    [
        (np.zeros((100, 100, 3), np.uint8), 36, (32, 64), ["36x36", "32x64", "posenet.resize"]),
        (np.zeros((100, 300, 3), np.uint8), 36, (48, 48), ["36x108", "48x48"]),
        (np.zeros((10, 10), np.uint8), 36, (32, 32), ["H x W x 3", "(10, 10)"]),
        (np.zeros((10, 10, 4), np.uint8), 36, (32, 32), ["(10, 10, 4)"]),
        (np.zeros((10, 10, 3), np.float32), 36, (32, 32), ["float32"]),
        (np.zeros((0, 10, 3), np.uint8), 36, (32, 32), ["empty"]),
        ([[1, 2, 3]], 36, (32, 32), ["list"]),
        (np.zeros((10, 10, 3), np.uint8), 0, (32, 32), ["resize_shorter 0", "positive"]),
        (np.zeros((10, 10, 3), np.uint8), 36, (0, 32), ["0x32", "positive"]),
    ],
)
def test_bad_preprocess_input_rejected(image, resize_shorter, crop_hw, words):
    with pytest.raises(PreprocessError) as info:
        resize_shorter_and_center_crop(image, resize_shorter, crop_hw)
    assert isinstance(info.value, PoseNetError)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_to_input_tensor_matches_torchvision_to_tensor_exactly():
    image = _smooth_image(24, 31)
    tensor = to_input_tensor(image)
    assert tensor.shape == (1, 3, 24, 31) and tensor.dtype == np.float32
    assert tensor.flags.c_contiguous
    reference = tvf.to_tensor(image).numpy()[None]
    np.testing.assert_array_equal(tensor, reference)
    assert tensor.min() >= 0.0 and tensor.max() <= 1.0


def test_to_input_tensor_reuses_out_buffer():
    out = np.full((1, 3, 8, 9), -1.0, dtype=np.float32)
    first = _smooth_image(8, 9)
    result = to_input_tensor(first, out=out)
    assert result is out
    np.testing.assert_array_equal(out, to_input_tensor(first))
    second = 255 - first
    to_input_tensor(second, out=out)
    np.testing.assert_array_equal(out, to_input_tensor(second))


@pytest.mark.parametrize(
    "out",
    [
        np.zeros((1, 3, 8, 8), np.float32),
        np.zeros((3, 8, 9), np.float32),
        np.zeros((1, 3, 8, 9), np.float64),
        np.zeros((1, 3, 9, 8), np.float32).transpose(0, 1, 3, 2),
        [[0.0]],
    ],
    ids=["wrong-width", "no-batch", "float64", "non-contiguous", "list"],
)
def test_bad_out_buffer_rejected(out):
    with pytest.raises(PreprocessError, match=r"\(1, 3, 8, 9\)"):
        to_input_tensor(_smooth_image(8, 9), out=out)


def test_preprocess_is_both_steps_into_out():
    image = _smooth_image(48, 64)
    out = np.empty((1, 3, 32, 32), np.float32)
    result = preprocess(image, 36, (32, 32), out=out)
    assert result is out
    expected = to_input_tensor(resize_shorter_and_center_crop(image, 36, (32, 32)))
    np.testing.assert_array_equal(out, expected)
    assert preprocess(image, 36, (32, 32)).shape == (1, 3, 32, 32)


# ----------------------------------------------- moved from training/tests/test_preprocess.py


def random_image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("h", "w", "size", "expected_hw"),
    [(480, 640, 256, (256, 341)), (640, 480, 256, (341, 256)), (100, 150, 256, (256, 384))],
)
def test_resize_shorter_sizes(h, w, size, expected_hw) -> None:
    assert resize_shorter(random_image(h, w, 0), size).shape == (*expected_hw, 3)


def test_center_crop_offsets() -> None:
    image = np.arange(5 * 8 * 3, dtype=np.uint8).reshape(5, 8, 3)
    # top = round(1.5) = 2 (banker's rounding), left = round(2.5) = 2.
    np.testing.assert_array_equal(center_crop(image, (2, 3)), image[2:4, 2:5])
    np.testing.assert_array_equal(center_crop(image, (3, 4)), image[1:4, 2:6])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: resize_shorter(np.zeros((4, 4), np.uint8), 8), r"shape \(H, W, 3\)"),
        (lambda: resize_shorter(np.zeros((4, 4, 3), np.float32), 8), "uint8"),
        (lambda: resize_shorter(np.zeros((0, 4, 3), np.uint8), 8), "empty"),
        (lambda: resize_shorter(np.zeros((4, 4, 3), np.uint8), 0), ">= 1"),
        (lambda: center_crop(np.zeros((4, 4, 3), np.uint8), (5, 4)), "does not fit"),
        (lambda: crop(np.zeros((4, 4, 3), np.uint8), -1, 0, (2, 2)), "does not fit"),
    ],
)
def test_bad_input(call, message) -> None:
    with pytest.raises(PoseNetTrainError, match=message):
        call()
