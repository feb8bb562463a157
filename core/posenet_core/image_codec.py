"""sensor_msgs/Image and CompressedImage payloads -> numpy RGB, with numpy and OpenCV only.

The one decoder of raw image messages: the node decodes its camera topic with it, the SfM
labeller (``posenet_train.sfm.rosbag``) the raw images of a recorded bag, so both read an encoding
the same way.

cv_bridge is deliberately not used: the PyPI copy is ROS 1's and breaks on numpy 2, and ROS 2's
is not installable everywhere the node runs. Every function here is duck-typed on the message
fields, so nothing in this module imports rclpy. OpenCV (``opencv-python-headless``) is imported
inside the functions, so importing ``posenet_core`` does not need it.

Encodings (``SUPPORTED_ENCODINGS``), all returned as H x W x 3 uint8 RGB:

- ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8`` (alpha dropped), ``mono8`` (grey copied to R, G, B).
- ``8UC3`` is read as ``bgr8`` and ``8UC1`` as ``mono8``: OpenCV's convention, which is what
  drivers that publish OpenCV matrices (``cv::Mat`` is BGR) mean by these generic names.
- ``mono16`` is reduced to 8 bits by keeping the high byte (``v >> 8``), i.e. a linear rescale
  of the full 16-bit range; ``is_bigendian`` says which byte of each pair is the high one.
- ``yuv422`` is ROS's name for UYVY (byte order U0 Y0 V0 Y1), also accepted as ``uyvy``;
  ``yuyv`` (Y0 U0 Y1 V0) is also accepted as ``yuv422_yuy2``. Both are converted with OpenCV's
  BT.601 limited-range ("video range") conversion, the same one cv_bridge uses.

:func:`decode_image` reads these unless it is given ``encodings``; ``RECORDED_ENCODINGS`` adds
what recorded bags also hold, for the SfM labeller: ``16UC1`` (as ``mono16``), ``rgb16`` and
``bgr16`` (high byte of each channel) and the Bayer patterns ``bayer_rggb8``, ``bayer_bggr8``,
``bayer_gbrg8``, ``bayer_grbg8`` (demosaiced by OpenCV). The node accepts, and the encoder
writes, ``SUPPORTED_ENCODINGS`` only.

``step`` row padding is honoured (bytes past ``width * bytes_per_pixel`` in each row are
ignored). Size checks happen on the header fields before the payload is touched, so a header that
claims a huge image is rejected in microseconds whatever its data.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from posenet_core.errors import ImageDecodeError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "RECORDED_ENCODINGS",
    "SUPPORTED_ENCODINGS",
    "compressed_format_problem",
    "compressed_msg_to_rgb",
    "decode_compressed",
    "decode_image",
    "image_msg_to_rgb",
    "rgb_to_compressed_fields",
    "rgb_to_image_fields",
]

DEFAULT_MAX_PIXELS = 4096 * 4096

# encoding -> (bytes per pixel, how to convert to RGB)
_ENCODING_SPECS: dict[str, tuple[int, str]] = {
    "rgb8": (3, "rgb"),
    "bgr8": (3, "bgr"),
    "rgba8": (4, "rgba"),
    "bgra8": (4, "bgra"),
    "mono8": (1, "mono8"),
    "mono16": (2, "mono16"),
    "8UC3": (3, "bgr"),
    "8UC1": (1, "mono8"),
    "yuv422": (2, "uyvy"),
    "uyvy": (2, "uyvy"),
    "yuyv": (2, "yuyv"),
    "yuv422_yuy2": (2, "yuyv"),
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODING_SPECS)

# ... and what recorded bags also hold: decoded when asked for (RECORDED_ENCODINGS), not encoded.
_RECORDED_SPECS: dict[str, tuple[int, str]] = {
    **_ENCODING_SPECS,
    "16UC1": (2, "mono16"),
    "rgb16": (6, "rgb16"),
    "bgr16": (6, "bgr16"),
    "bayer_rggb8": (1, "bayer_rggb"),
    "bayer_bggr8": (1, "bayer_bggr"),
    "bayer_gbrg8": (1, "bayer_gbrg"),
    "bayer_grbg8": (1, "bayer_grbg"),
}

RECORDED_ENCODINGS: tuple[str, ...] = tuple(_RECORDED_SPECS)

# kind -> name of OpenCV's conversion to RGB (none for rgb and rgb16: already RGB).
_TO_RGB_CODES = {
    "bgr": "COLOR_BGR2RGB",
    "rgba": "COLOR_RGBA2RGB",
    "bgra": "COLOR_BGRA2RGB",
    "mono8": "COLOR_GRAY2RGB",
    "mono16": "COLOR_GRAY2RGB",
    "uyvy": "COLOR_YUV2RGB_UYVY",
    "yuyv": "COLOR_YUV2RGB_YUY2",
    "bgr16": "COLOR_BGR2RGB",
    "bayer_rggb": "COLOR_BayerRGGB2RGB",
    "bayer_bggr": "COLOR_BayerBGGR2RGB",
    "bayer_gbrg": "COLOR_BayerGBRG2RGB",
    "bayer_grbg": "COLOR_BayerGRBG2RGB",
}
_SIXTEEN_BIT_KINDS = frozenset({"mono16", "rgb16", "bgr16"})

_COMPRESSED_KINDS = ("jpeg", "jpg", "png")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers that carry the image size (C4, C8 and CC are other segments).
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _as_uint8_buffer(data: Any) -> np.ndarray:
    """View ``data`` as a flat uint8 array, without copying when it supports the buffer protocol.

    rclpy hands ``Image.data`` over as ``array.array('B')``; bytes, bytearray, memoryview and
    numpy uint8 arrays are accepted too (lists of ints as a slow fallback).
    """
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageDecodeError(
                f"image data array has dtype {data.dtype}; expected uint8 bytes"
            )
        return data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        pass
    try:
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageDecodeError(
            f"image data of type {type(data).__name__} is not a byte buffer: {exc}"
        ) from exc


def _as_int(value: Any, field: str) -> int:
    try:
        result = int(value)
    except (TypeError, ValueError) as exc:
        raise ImageDecodeError(f"image {field} {value!r} is not an integer") from exc
    return result


def _check_pixel_count(height: int, width: int, max_pixels: int) -> None:
    n_pixels = height * width
    if n_pixels > max_pixels:
        raise ImageDecodeError(
            f"image size {width}x{height} ({n_pixels} pixels) exceeds the limit of "
            f"{max_pixels} pixels (max_pixels); larger images are not allowed"
        )


def decode_image(
    encoding: str,
    height: int,
    width: int,
    step: int,
    is_bigendian: bool | int,
    data: Any,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    encodings: Collection[str] = SUPPORTED_ENCODINGS,
) -> np.ndarray:
    """Decode the fields of a sensor_msgs/Image into an H x W x 3 uint8 RGB array.

    ``data`` may be bytes, bytearray, memoryview, ``array.array('B')`` or a numpy uint8 array.
    The result is C-contiguous. For ``rgb8`` without row padding it is a zero-copy view of
    ``data`` (read-only when ``data`` is immutable): copy it before writing into it.
    ``encodings`` are the ones accepted: :data:`SUPPORTED_ENCODINGS` (the node's) or any of
    :data:`RECORDED_ENCODINGS`.

    Raises ImageDecodeError, naming the bad value and what is allowed, for an encoding not in
    ``encodings``, a non-positive height or width, more than ``max_pixels`` pixels, an odd width
    for the 4:2:2 YUV encodings, ``step < width * bytes_per_pixel`` and
    ``len(data) < height * step``. All but the last are checked before the payload is looked at.
    """
    spec = _RECORDED_SPECS.get(encoding) if encoding in encodings else None
    if spec is None:
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(encodings)}"
        )
    bytes_per_pixel, kind = spec
    height = _as_int(height, "height")
    width = _as_int(width, "width")
    step = _as_int(step, "step")
    if height <= 0 or width <= 0:
        raise ImageDecodeError(
            f"image size {width}x{height} (width x height) is not allowed: both must be positive"
        )
    _check_pixel_count(height, width, max_pixels)
    if kind in ("uyvy", "yuyv") and width % 2:
        raise ImageDecodeError(
            f"image width {width} is odd; encoding {encoding!r} (4:2:2 YUV) needs an even width"
        )
    row_bytes = width * bytes_per_pixel
    if step < row_bytes:
        raise ImageDecodeError(
            f"image step {step} is smaller than width * bytes per pixel = {width} * "
            f"{bytes_per_pixel} = {row_bytes} for encoding {encoding!r}"
        )
    buffer = _as_uint8_buffer(data)
    needed = height * step
    if buffer.size < needed:
        raise ImageDecodeError(
            f"image data has {buffer.size} bytes, but height * step = {height} * {step} = "
            f"{needed} bytes are needed"
        )
    # (height, step) view, then drop the row padding: still a view, rows `step` bytes apart.
    rows = buffer[:needed].reshape(height, step)[:, :row_bytes]
    if kind in _SIXTEEN_BIT_KINDS:
        # The high byte of each 16-bit value: byte 0 of the pair in big-endian data, 1 otherwise.
        row_bytes //= 2
        rows = np.ascontiguousarray(
            rows.reshape(height, row_bytes, 2)[:, :, 0 if is_bigendian else 1]
        )
    channels = row_bytes // width
    pixels = rows if channels == 1 else rows.reshape(height, width, channels)
    code = _TO_RGB_CODES.get(kind)
    if code is None:  # already RGB
        return np.ascontiguousarray(pixels)
    import cv2

    return cv2.cvtColor(pixels, getattr(cv2, code))


def _peek_compressed_size(buffer: np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a PNG or JPEG header without decoding; None when not found."""
    view = memoryview(buffer)
    n = len(view)
    if n >= 24 and bytes(view[:8]) == _PNG_SIGNATURE and bytes(view[12:16]) == b"IHDR":
        width = int.from_bytes(view[16:20], "big")
        height = int.from_bytes(view[20:24], "big")
        return height, width
    if n < 4 or view[0] != 0xFF or view[1] != 0xD8:
        return None
    i = 2
    while i + 4 <= n:
        if view[i] != 0xFF:
            return None
        marker = view[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length field
            i += 2
            continue
        segment_length = int.from_bytes(view[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF_MARKERS:
            if i + 9 > n:
                return None
            height = int.from_bytes(view[i + 5 : i + 7], "big")
            width = int.from_bytes(view[i + 7 : i + 9], "big")
            return height, width
        if marker == 0xDA or segment_length < 2:  # start of scan: no SOF seen, give up
            return None
        i += 2 + segment_length
    return None


def compressed_format_problem(fmt: str) -> str:
    """What is wrong with ``CompressedImage.format`` for :func:`decode_compressed` ("" when it
    can be decoded): a depth image (``compressedDepth``), or no ``jpeg``, ``jpg`` or ``png`` in
    it. The same for every message of a topic, so a caller may treat it as fatal."""
    fmt_lower = fmt.lower() if isinstance(fmt, str) else ""
    if "compresseddepth" in fmt_lower:
        return (
            f"CompressedImage format {fmt!r} is a depth image (compressedDepth); "
            "a colour or mono image compressed as JPEG or PNG is needed"
        )
    if not any(kind in fmt_lower for kind in _COMPRESSED_KINDS):
        return (
            f"unsupported CompressedImage format {fmt!r}; supported: formats containing "
            "'jpeg', 'jpg' or 'png' (e.g. 'jpeg', 'rgb8; jpeg compressed bgr8')"
        )
    return ""


def decode_compressed(fmt: str, data: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage payload (JPEG or PNG) into H x W x 3 uint8 RGB.

    ``fmt`` is ``CompressedImage.format``: any string containing ``jpeg``, ``jpg`` or ``png``
    (case-insensitive), e.g. ``"jpeg"`` or image_transport's ``"rgb8; jpeg compressed bgr8"``.
    image_transport always stores colour as BGR inside the file, which is what OpenCV decodes, so
    the result is right whatever the original encoding was. Grey and 16-bit PNGs become 8-bit
    RGB; alpha is dropped; EXIF orientation is ignored (the pixels are kept as the sensor saw
    them, as with a raw Image). ``compressedDepth`` (depth images) is rejected.

    The size in the PNG/JPEG header is checked against ``max_pixels`` before decoding, and the
    decoded size again after. Raises ImageDecodeError for an unsupported format, empty data or
    data that does not decode.
    """
    import cv2

    problem = compressed_format_problem(fmt)
    if problem:
        raise ImageDecodeError(problem)
    buffer = _as_uint8_buffer(data)
    if buffer.size == 0:
        raise ImageDecodeError(f"CompressedImage ({fmt!r}) has no data (0 bytes)")
    header_size = _peek_compressed_size(buffer)
    if header_size is not None:
        _check_pixel_count(header_size[0], header_size[1], max_pixels)
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as exc:
        raise ImageDecodeError(
            f"CompressedImage ({fmt!r}, {buffer.size} bytes) does not decode: {exc}"
        ) from exc
    if bgr is None:
        raise ImageDecodeError(
            f"CompressedImage ({fmt!r}, {buffer.size} bytes) does not decode as JPEG/PNG: "
            "OpenCV cannot decode it (corrupt or truncated data)"
        )
    _check_pixel_count(bgr.shape[0], bgr.shape[1], max_pixels)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_msg_to_rgb(
    msg: Any,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    encodings: Collection[str] = SUPPORTED_ENCODINGS,
) -> np.ndarray:
    """``decode_image`` on a sensor_msgs/Image (or anything with the same attributes)."""
    return decode_image(
        msg.encoding,
        msg.height,
        msg.width,
        msg.step,
        msg.is_bigendian,
        msg.data,
        max_pixels,
        encodings=encodings,
    )


def compressed_msg_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``decode_compressed`` on a sensor_msgs/CompressedImage (attributes ``format``, ``data``)."""
    return decode_compressed(msg.format, msg.data, max_pixels)


def _check_rgb_image(rgb_HWC: np.ndarray) -> np.ndarray:
    rgb_HWC = np.asarray(rgb_HWC)
    if rgb_HWC.ndim != 3 or rgb_HWC.shape[2] != 3 or rgb_HWC.dtype != np.uint8:
        raise ImageDecodeError(
            f"expected an H x W x 3 uint8 RGB image, got shape {rgb_HWC.shape} "
            f"dtype {rgb_HWC.dtype}"
        )
    return rgb_HWC


def rgb_to_image_fields(
    rgb_HWC: np.ndarray, encoding: str, *, is_bigendian: bool = False, row_padding: int = 0
) -> dict[str, Any]:
    """Encode an RGB image as sensor_msgs/Image fields; the inverse of ``decode_image``.

    Returns ``dict(encoding, height, width, step, is_bigendian, data)`` with ``data`` as bytes,
    ready for ``Image(**fields)``. Grey encodings use OpenCV's RGB->grey weights; ``mono16``
    stores ``v * 257`` so its high byte is ``v`` again; the YUV encodings use OpenCV's BT.601
    limited-range conversion (lossy: a round trip is exact only to a few grey levels).
    ``is_bigendian`` matters only for ``mono16``; ``row_padding`` adds that many zero bytes to
    each row (``step = width * bytes_per_pixel + row_padding``) to exercise stride handling.
    """
    import cv2

    rgb_HWC = _check_rgb_image(rgb_HWC)
    spec = _ENCODING_SPECS.get(encoding)
    if spec is None:
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    if row_padding < 0:
        raise ImageDecodeError(f"row_padding {row_padding} is negative; must be >= 0")
    bytes_per_pixel, kind = spec
    height, width = rgb_HWC.shape[:2]
    if kind == "rgb":
        pixels = rgb_HWC
    elif kind == "bgr":
        pixels = cv2.cvtColor(rgb_HWC, cv2.COLOR_RGB2BGR)
    elif kind == "rgba":
        pixels = cv2.cvtColor(rgb_HWC, cv2.COLOR_RGB2RGBA)
    elif kind == "bgra":
        pixels = cv2.cvtColor(rgb_HWC, cv2.COLOR_RGB2BGRA)
    elif kind == "mono8":
        pixels = cv2.cvtColor(rgb_HWC, cv2.COLOR_RGB2GRAY)
    elif kind == "mono16":
        grey16 = cv2.cvtColor(rgb_HWC, cv2.COLOR_RGB2GRAY).astype(np.uint16) * np.uint16(257)
        pixels = grey16.astype(">u2" if is_bigendian else "<u2").view(np.uint8)
    else:
        if width % 2:
            raise ImageDecodeError(
                f"image width {width} is odd; encoding {encoding!r} needs an even width"
            )
        code = cv2.COLOR_RGB2YUV_UYVY if kind == "uyvy" else cv2.COLOR_RGB2YUV_YUY2
        pixels = cv2.cvtColor(np.ascontiguousarray(rgb_HWC), code)
    row_bytes = width * bytes_per_pixel
    step = row_bytes + row_padding
    rows = np.zeros((height, step), dtype=np.uint8)
    rows[:, :row_bytes] = np.ascontiguousarray(pixels).reshape(height, row_bytes)
    return {
        "encoding": encoding,
        "height": int(height),
        "width": int(width),
        "step": int(step),
        "is_bigendian": int(bool(is_bigendian) and kind == "mono16"),
        "data": rows.tobytes(),
    }


def rgb_to_compressed_fields(
    rgb_HWC: np.ndarray, codec: str = "jpeg", jpeg_quality: int = 95
) -> dict[str, Any]:
    """Encode an RGB image as sensor_msgs/CompressedImage fields (``format``, ``data`` bytes).

    ``codec`` is ``"jpeg"`` or ``"png"``; ``format`` is written the way image_transport's
    compressed publisher writes it (``"rgb8; jpeg compressed bgr8"``).
    """
    import cv2

    rgb_HWC = _check_rgb_image(rgb_HWC)
    if codec not in ("jpeg", "png"):
        raise ImageDecodeError(f"unsupported codec {codec!r}; supported: 'jpeg', 'png'")
    bgr = cv2.cvtColor(rgb_HWC, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if codec == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if codec == "jpeg" else ".png", bgr, params)
    if not ok:
        raise ImageDecodeError(f"OpenCV could not encode a {rgb_HWC.shape} image as {codec}")
    return {"format": f"rgb8; {codec} compressed bgr8", "data": encoded.tobytes()}
