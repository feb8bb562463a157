"""The network input size from the data: which ``posenet.resize`` and ``posenet.input_size``.

The model-file contract (:mod:`posenet_core.preprocess`) is "resize the shorter side to R, then
centre-crop H x W". Which R, H, W suit a dataset depends on its camera, so by default the trainer
chooses them from the image sizes of the dataset (:func:`choose_input_geometry`):

- one orientation (all landscape, or all portrait): the **whole frame** at a shorter side of
  :data:`DEFAULT_SHORT_SIDE` pixels (what the middlebury_dino recipe measured, 128x168 at 4:3),
  the long side following the camera's aspect ratio and rounded down to a multiple of
  :data:`LONG_SIDE_MULTIPLE` (at most 7 px of the frame lost, the crop stays centred). A wide
  camera then keeps its whole view (3:1 at 960x320 -> 128x384) instead of a centre 40 %. Above
  :data:`DEFAULT_MAX_PIXELS` (cameras wider than 4:1) the shorter side shrinks so the input
  keeps to that pixel budget. Sets whose images differ slightly in aspect ratio get the largest
  crop that fits all of them;
- both orientations (phone photos): a **square** input of the shorter side, ``S x S`` from a
  resize to ``S``. The contract resizes each image's own shorter side and crops its centre, so
  every image, portrait or landscape, gives the same ``S x S`` window in its own orientation,
  and the node does exactly that with every frame; nothing is rotated and the labels stay as
  they are.

An explicit crop that does not fit an image of the set is refused before training, naming the
resize that would fit (:func:`check_fits`, :func:`resize_that_fits`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from posenet_core.preprocess import resized_shape
from posenet_train.errors import PoseNetTrainError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_SHORT_SIDE",
    "LONG_SIDE_MULTIPLE",
    "InputGeometry",
    "check_fits",
    "choose_input_geometry",
    "image_size_hw",
    "resize_that_fits",
]

#: Shorter side of the network input by default: the middlebury_dino recipe's 128 (measured
#: there: 0.026 m / 2.2 deg; BENCHMARKS.md), which also keeps a CPU epoch cheap.
DEFAULT_SHORT_SIDE = 128
#: Pixel budget of the input: a camera wider than 4:1 gets a smaller shorter side rather than
#: an ever larger input (cost grows with the pixels). BENCHMARKS.md, "Input size from the data".
DEFAULT_MAX_PIXELS = 128 * 512
#: The long side is rounded down to a multiple of this (feature-map strides; 4:3 -> 168).
LONG_SIDE_MULTIPLE = 8

# EXIF orientations 5-8 turn the stored image by 90 degrees; OpenCV's imread (read_rgb) applies
# the tag, so the size the trainer sees is the turned one.
_EXIF_ORIENTATION = 0x0112
_EXIF_TRANSPOSED = (5, 6, 7, 8)


@dataclass(frozen=True)
class InputGeometry:
    """``resize`` (the contract's shorter side) and ``crop_hw`` (its input size), and why."""

    resize: int
    crop_hw: tuple[int, int]
    reason: str


def image_size_hw(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file as :func:`posenet_core.images.read_rgb` decodes it
    (EXIF orientation applied), read from the file's header where Pillow can (no decoding)."""
    path = Path(path)
    try:
        from PIL import Image

        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation in _EXIF_TRANSPOSED:
            width, height = height, width
        return int(height), int(width)
    except Exception:  # noqa: BLE001 - any format Pillow cannot read: decode it as the trainer will
        from posenet_core.images import read_rgb

        rgb = read_rgb(path)  # DatasetError naming the file if it cannot be decoded
        return int(rgb.shape[0]), int(rgb.shape[1])


def _round_down(value: int, multiple: int) -> int:
    return max(multiple, value // multiple * multiple) if value >= multiple else value


def choose_input_geometry(
    sizes_hw: Iterable[tuple[int, int]],
    short_side: int = DEFAULT_SHORT_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> InputGeometry:
    """The input that shows the whole frame of every image size in ``sizes_hw`` (module doc).

    ``short_side`` is the input's shorter side (the contract's resize) unless the pixel budget
    ``max_pixels`` makes it smaller; both orientations in one set give a square input.
    """
    sizes = sorted({(int(h), int(w)) for h, w in sizes_hw})
    if not sizes:
        raise PoseNetTrainError("no images to choose the network input size from")
    if min(min(s) for s in sizes) < 1 or short_side < 1 or max_pixels < 1:
        raise PoseNetTrainError(
            f"image sizes, short side {short_side} and pixel budget {max_pixels} must be positive"
        )
    landscape = any(w > h for h, w in sizes)
    portrait = any(h > w for h, w in sizes)
    smallest = min(min(s) for s in sizes)
    if landscape and portrait:
        side = min(short_side, math.isqrt(max_pixels))
        return InputGeometry(
            side,
            (side, side),
            f"both orientations in the set ({len(sizes)} image sizes): a square {side}x{side} "
            "centre crop of each image's shorter side, in its own orientation",
        )
    # Long/short ratio of the narrowest image: the crop must fit every image.
    aspect = min(max(h, w) / min(h, w) for h, w in sizes)
    side = short_side
    if side * side * aspect > max_pixels:
        side = max(1, math.isqrt(int(max_pixels / aspect)))
    long_side = min(max(resized_shape(h, w, side)) for h, w in sizes)
    long_side = _round_down(long_side, LONG_SIDE_MULTIPLE)
    crop_hw = (long_side, side) if portrait else (side, long_side)
    what = "portrait" if portrait else "landscape" if landscape else "square"
    reason = (
        f"the whole {what} frame ({sizes[0][0]}x{sizes[0][1]}"
        + (f" and {len(sizes) - 1} other sizes" if len(sizes) > 1 else "")
        + f") at shorter side {side}"
    )
    if side < short_side:
        reason += f" (pixel budget {max_pixels})"
    if side > smallest:
        reason += f"; images as small as {smallest} px are enlarged"
    return InputGeometry(side, crop_hw, reason)


def resize_that_fits(sizes_hw: Iterable[tuple[int, int]], crop_hw: tuple[int, int]) -> int | None:
    """The smallest shorter-side resize that lets ``crop_hw`` fit inside every image of
    ``sizes_hw`` (the contract's rounding); None when no resize can (never: a large enough
    resize always covers a crop, but the answer is capped at 16 times the crop)."""
    crop_h, crop_w = int(crop_hw[0]), int(crop_hw[1])
    sizes = {(int(h), int(w)) for h, w in sizes_hw}
    resize = max(crop_h, crop_w) * 16
    # Lower bound per image, then step up past Python's rounding.
    best = min(crop_h, crop_w)
    for h, w in sizes:
        short = min(h, w)
        need = max(math.ceil(crop_h * short / h), math.ceil(crop_w * short / w), 1)
        best = max(best, need)
    for candidate in range(best, resize + 1):
        if all(
            rh >= crop_h and rw >= crop_w
            for rh, rw in (resized_shape(h, w, candidate) for h, w in sizes)
        ):
            return candidate
    return None


def check_fits(sizes_hw: Iterable[tuple[int, int]], resize: int, crop_hw: tuple[int, int]) -> None:
    """Raise PoseNetTrainError when ``crop_hw`` does not fit an image of ``sizes_hw`` resized to
    shorter side ``resize``, naming the image size, the ``--resize`` that would fit, and (for a
    set of both orientations) the square crop that fits without a larger resize."""
    sizes = sorted({(int(h), int(w)) for h, w in sizes_hw})
    crop_h, crop_w = int(crop_hw[0]), int(crop_hw[1])
    for h, w in sizes:
        rh, rw = resized_shape(h, w, int(resize))
        if rh >= crop_h and rw >= crop_w:
            continue
        fits = resize_that_fits(sizes, (crop_h, crop_w))
        message = (
            f"--crop {crop_h},{crop_w} does not fit a {h}x{w} image of this dataset resized to "
            f"shorter side {resize} ({rh}x{rw})"
        )
        if fits is not None:
            message += f"; --resize {fits} fits every image"
        if any(a > b for a, b in sizes) and any(a < b for a, b in sizes):
            side = min(crop_h, crop_w)
            message += (
                f"; the set holds both portrait and landscape images, so a square --crop {side}"
                f" (with --resize {max(side, int(resize))}) fits both,"
                " and leaving --crop and --resize out chooses that itself"
            )
        raise PoseNetTrainError(message)
