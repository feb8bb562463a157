"""Image -> network input, exactly as the model-file contract says.

The contract (``posenet.resize``, ``posenet.input_size``): resize the image so its shorter side
is ``resize_shorter`` pixels, keeping the aspect ratio, centre-crop ``input_hw``, and feed RGB
float32 values in 0..1 as ``[N, 3, H, W]``. Mean/std normalisation is NOT done here: it lives
inside the ONNX graph so every runtime does the same. The node (every frame), the trainer
(training crops, evaluation, export checks, calibration images) and the quantiser all use these
functions, so offline numbers are what the node gets live:

1. scale ``s = resize_shorter / min(h, w)``; new size ``(round(h*s), round(w*s))`` (Python's
   ``round``): :func:`resized_shape`;
2. ``cv2.resize`` with ``INTER_AREA`` when shrinking, ``INTER_LINEAR`` when enlarging, no resize
   when the size is unchanged: :func:`resize_shorter`;
3. centre crop at ``top = int(round((h_r - H) / 2.0))``, ``left`` likewise (torchvision
   ``CenterCrop``'s rounding): :func:`center_crop_offsets`, :func:`center_crop`;
4. ``value / 255`` in float32 (bit-identical to torchvision's ``ToTensor``):
   :func:`to_input_tensor`.

Images are RGB ``uint8`` arrays in HWC layout throughout. OpenCV is imported inside
:func:`resize_shorter`, the one function that resamples.
"""

from __future__ import annotations

import numpy as np

from posenet_core.errors import PreprocessError

__all__ = [
    "center_crop",
    "center_crop_offsets",
    "crop",
    "has_image_layout",
    "preprocess",
    "resize_shorter",
    "resize_shorter_and_center_crop",
    "resized_shape",
    "to_input_tensor",
]


def resized_shape(height: int, width: int, resize_shorter: int) -> tuple[int, int]:
    """(height, width) after scaling the shorter side to ``resize_shorter`` (Python ``round``)."""
    scale = resize_shorter / min(height, width)
    return round(height * scale), round(width * scale)


def center_crop_offsets(height: int, width: int, input_hw: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of the centred ``input_hw`` window; torchvision ``CenterCrop``'s rounding."""
    crop_h, crop_w = input_hw
    return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))


def has_image_layout(array: object, *, ndim: int, channel_axis: int, dtype: type) -> bool:
    """Whether ``array`` is a numpy array of rank ``ndim`` and type ``dtype`` with the 3 RGB
    channels on ``channel_axis`` (HWC images: 3, 2, uint8; network batches: 4, 1, float32)."""
    return (
        isinstance(array, np.ndarray)
        and array.ndim == ndim
        and array.shape[channel_axis] == 3
        and array.dtype == dtype
    )


def _check_rgb(rgb_HWC: np.ndarray) -> None:
    if not has_image_layout(rgb_HWC, ndim=3, channel_axis=2, dtype=np.uint8):
        shape = getattr(rgb_HWC, "shape", None)
        dtype = getattr(rgb_HWC, "dtype", type(rgb_HWC).__name__)
        raise PreprocessError(
            f"expected an H x W x 3 uint8 RGB image (shape (H, W, 3)), got shape {shape} "
            f"dtype {dtype}"
        )
    if rgb_HWC.shape[0] == 0 or rgb_HWC.shape[1] == 0:
        raise PreprocessError(f"image of shape {rgb_HWC.shape} is empty")


def resize_shorter(rgb_HWC: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` pixels, keeping the aspect ratio (steps 1-2 of the
    module doc); the image itself when the size is unchanged."""
    import cv2

    _check_rgb(rgb_HWC)
    if int(size) < 1:
        raise PreprocessError(f"resize size must be >= 1 pixel, got {size}")
    height, width = rgb_HWC.shape[:2]
    resized_h, resized_w = resized_shape(height, width, int(size))
    if (resized_h, resized_w) == (height, width):
        return rgb_HWC
    interpolation = cv2.INTER_AREA if int(size) < min(height, width) else cv2.INTER_LINEAR
    return cv2.resize(rgb_HWC, (resized_w, resized_h), interpolation=interpolation)


def crop(rgb_HWC: np.ndarray, top: int, left: int, crop_hw: tuple[int, int]) -> np.ndarray:
    """The ``crop_hw`` window at (top, left) (a view); raises if it does not lie inside."""
    height, width = rgb_HWC.shape[:2]
    crop_h, crop_w = int(crop_hw[0]), int(crop_hw[1])
    if (
        crop_h < 1
        or crop_w < 1
        or top < 0
        or left < 0
        or top + crop_h > height
        or left + crop_w > width
    ):
        raise PreprocessError(
            f"crop {crop_h}x{crop_w} at (top={top}, left={left}) does not fit in an image of "
            f"{height}x{width}; the resize size must be >= the crop size"
        )
    return rgb_HWC[top : top + crop_h, left : left + crop_w]


def center_crop(rgb_HWC: np.ndarray, crop_hw: tuple[int, int]) -> np.ndarray:
    """The centred ``crop_hw`` window (step 3 of the module doc; a view)."""
    top, left = center_crop_offsets(*rgb_HWC.shape[:2], (int(crop_hw[0]), int(crop_hw[1])))
    return crop(rgb_HWC, top, left, crop_hw)


# The name resize_shorter is also a parameter of resize_shorter_and_center_crop (the contract's
# name); this alias lets that function reach the module-level one.
_resize_shorter = resize_shorter


def resize_shorter_and_center_crop(
    rgb_HWC: np.ndarray, resize_shorter: int, input_hw: tuple[int, int]
) -> np.ndarray:
    """Resize so the shorter side is ``resize_shorter``, then centre-crop to ``input_hw``.

    Returns a C-contiguous ``input_hw`` x 3 uint8 array. Raises PreprocessError for a malformed
    image, a non-positive size, or when the resized image is smaller than ``input_hw`` in a
    dimension (possible for non-square inputs even when ``resize_shorter >= min(input_hw)``).
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
    resized = _resize_shorter(rgb_HWC, resize_shorter)
    return np.ascontiguousarray(center_crop(resized, (crop_h, crop_w)))


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
