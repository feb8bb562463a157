"""Image -> network input, exactly as the model-file contract says.

The contract (``posenet.resize``, ``posenet.input_size``): resize the image so its shorter side
is ``resize_shorter`` pixels, keeping the aspect ratio, centre-crop ``input_hw``, and feed RGB
float32 values in 0..1 as ``[1, 3, H, W]``. Mean/std normalisation is NOT done here: it lives
inside the ONNX graph so every runtime does the same. The trainer copies
``resize_shorter_and_center_crop`` verbatim; change both or neither.
"""

from __future__ import annotations

import cv2
import numpy as np

from posenet_ros.errors import PreprocessError


def resized_shape(height: int, width: int, resize_shorter: int) -> tuple[int, int]:
    """(height, width) after scaling the shorter side to ``resize_shorter`` (Python ``round``)."""
    scale = resize_shorter / min(height, width)
    return round(height * scale), round(width * scale)


def center_crop_offsets(height: int, width: int, input_hw: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of the centred ``input_hw`` window; torchvision ``CenterCrop``'s rounding."""
    crop_h, crop_w = input_hw
    return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))


def _check_rgb(rgb_HWC: np.ndarray) -> None:
    if (
        not isinstance(rgb_HWC, np.ndarray)
        or rgb_HWC.ndim != 3
        or rgb_HWC.shape[2] != 3
        or rgb_HWC.dtype != np.uint8
    ):
        shape = getattr(rgb_HWC, "shape", None)
        dtype = getattr(rgb_HWC, "dtype", type(rgb_HWC).__name__)
        raise PreprocessError(
            f"expected an H x W x 3 uint8 RGB image, got shape {shape} dtype {dtype}"
        )
    if rgb_HWC.shape[0] == 0 or rgb_HWC.shape[1] == 0:
        raise PreprocessError(f"image of shape {rgb_HWC.shape} is empty")


def resize_shorter_and_center_crop(
    rgb_HWC: np.ndarray, resize_shorter: int, input_hw: tuple[int, int]
) -> np.ndarray:
    """Resize so the shorter side is ``resize_shorter``, then centre-crop to ``input_hw``.

    Algorithm (the contract; the trainer does exactly the same):
    ``scale = resize_shorter / min(h, w)``; resized size ``(round(h * scale), round(w * scale))``
    with Python's ``round``; ``cv2.resize`` with ``INTER_AREA`` when shrinking and
    ``INTER_LINEAR`` when enlarging (no resize when the size is unchanged); then the crop at
    ``top = int(round((h_r - H) / 2.0))``, ``left = int(round((w_r - W) / 2.0))``.

    Returns an ``input_hw`` x 3 uint8 array (a view into the resized image). Raises
    PreprocessError for a malformed image, a non-positive size, or when the resized image is
    smaller than ``input_hw`` in a dimension (possible for non-square inputs even when
    ``resize_shorter >= min(input_hw)``).
    """
    _check_rgb(rgb_HWC)
    crop_h, crop_w = (int(v) for v in input_hw)
    if resize_shorter <= 0 or crop_h <= 0 or crop_w <= 0:
        raise PreprocessError(
            f"resize_shorter {resize_shorter} and input size {crop_h}x{crop_w} must be positive"
        )
    height, width = rgb_HWC.shape[:2]
    resized_h, resized_w = resized_shape(height, width, resize_shorter)
    if resized_h < crop_h or resized_w < crop_w:
        raise PreprocessError(
            f"a {height}x{width} image resized to shorter side {resize_shorter} is "
            f"{resized_h}x{resized_w}, smaller than the network input {crop_h}x{crop_w} "
            "(H x W); the model's posenet.resize is too small for this image's aspect ratio"
        )
    if (resized_h, resized_w) == (height, width):
        resized = rgb_HWC
    else:
        shrinking = resize_shorter < min(height, width)
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        resized = cv2.resize(rgb_HWC, (resized_w, resized_h), interpolation=interpolation)
    top, left = center_crop_offsets(resized_h, resized_w, (crop_h, crop_w))
    return resized[top : top + crop_h, left : left + crop_w]


def to_input_tensor(rgb_HWC: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """H x W x 3 uint8 RGB -> float32 ``[1, 3, H, W]`` in 0..1 (``value / 255``).

    Division (not multiplication by 1/255) so the values are bit-identical to torchvision's
    ``ToTensor``. When ``out`` is given (float32, C-contiguous, shape ``[1, 3, H, W]``) it is
    filled and returned, so the node allocates no tensor per frame.
    """
    _check_rgb(rgb_HWC)
    height, width = rgb_HWC.shape[:2]
    expected_shape = (1, 3, height, width)
    if out is None:
        out = np.empty(expected_shape, dtype=np.float32)
    elif (
        not isinstance(out, np.ndarray)
        or out.shape != expected_shape
        or out.dtype != np.float32
        or not out.flags.c_contiguous
    ):
        raise PreprocessError(
            f"output buffer must be a C-contiguous float32 array of shape {expected_shape}, got "
            f"shape {getattr(out, 'shape', None)} dtype {getattr(out, 'dtype', None)}"
        )
    np.divide(rgb_HWC.transpose(2, 0, 1), np.float32(255.0), out=out[0], dtype=np.float32)
    return out


def preprocess(
    rgb_HWC: np.ndarray,
    resize_shorter: int,
    input_hw: tuple[int, int],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``resize_shorter_and_center_crop`` then ``to_input_tensor``: image -> ``image_BCHW``."""
    cropped = resize_shorter_and_center_crop(rgb_HWC, resize_shorter, input_hw)
    return to_input_tensor(cropped, out=out)
