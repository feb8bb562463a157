"""image_codec: every encoding against hand-made bytes, round trips, and every malformed case."""

from __future__ import annotations

import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from posenet_core.errors import ImageDecodeError
from posenet_core.image_codec import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_ENCODINGS,
    compressed_msg_to_rgb,
    decode_compressed,
    decode_image,
    image_msg_to_rgb,
    rgb_to_compressed_fields,
    rgb_to_image_fields,
)

# A 2 x 3 image with distinct channel values everywhere.
RGB_2x3 = np.array(
    [
        [[10, 20, 30], [40, 50, 60], [70, 80, 90]],
        [[100, 110, 120], [130, 140, 150], [160, 170, 180]],
    ],
    dtype=np.uint8,
)
GREY_2x3 = np.array([[0, 17, 128], [200, 254, 255]], dtype=np.uint8)
GREY_RGB_2x3 = np.repeat(GREY_2x3[:, :, None], 3, axis=2)


def _fields(encoding, height, width, step, data, is_bigendian=0):
    return {
        "encoding": encoding,
        "height": height,
        "width": width,
        "step": step,
        "is_bigendian": is_bigendian,
        "data": data,
    }


def _decode(fields, **kwargs):
    return decode_image(
        fields["encoding"],
        fields["height"],
        fields["width"],
        fields["step"],
        fields["is_bigendian"],
        fields["data"],
        **kwargs,
    )


def _pad_rows(pixel_rows: np.ndarray, padding: int, fill: int = 0xEE) -> bytes:
    """Rows of bytes with ``padding`` garbage bytes appended to each row."""
    pixel_rows = pixel_rows.reshape(pixel_rows.shape[0], -1)
    garbage = np.full((pixel_rows.shape[0], padding), fill, dtype=np.uint8)
    return np.hstack([pixel_rows, garbage]).tobytes()


# --- hand-made messages, one per encoding ---------------------------------------------------


def _hand_made_cases():
    bgr = RGB_2x3[:, :, ::-1]
    alpha = np.full((2, 3, 1), 7, dtype=np.uint8)
    grey16 = GREY_2x3.astype(np.uint16) * 256 + 0x5A  # low byte is noise that must be dropped
    return [
        ("rgb8", 3, RGB_2x3, RGB_2x3),
        ("bgr8", 3, bgr, RGB_2x3),
        ("8UC3", 3, bgr, RGB_2x3),  # OpenCV's convention: BGR
        ("rgba8", 4, np.concatenate([RGB_2x3, alpha], axis=2), RGB_2x3),
        ("bgra8", 4, np.concatenate([bgr, alpha], axis=2), RGB_2x3),
        ("mono8", 1, GREY_2x3, GREY_RGB_2x3),
        ("8UC1", 1, GREY_2x3, GREY_RGB_2x3),
        ("mono16", 2, grey16.astype("<u2").view(np.uint8), GREY_RGB_2x3),
    ]


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize(
    "encoding, bytes_per_pixel, pixels, expected",
    _hand_made_cases(),
    ids=[case[0] for case in _hand_made_cases()],
)
def test_hand_made_encodings(encoding, bytes_per_pixel, pixels, expected, padding):
    step = 3 * bytes_per_pixel + padding
    data = _pad_rows(np.ascontiguousarray(pixels), padding)
    rgb = _decode(_fields(encoding, 2, 3, step, data))
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3) and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, expected)


@pytest.mark.parametrize("is_bigendian", [0, 1, True, False])
def test_mono16_byte_order_takes_high_byte(is_bigendian):
    values = np.array([[0x1234, 0xFF01], [0x00FF, 0x8000]], dtype=np.uint16)
    data = values.astype(">u2" if is_bigendian else "<u2").tobytes()
    rgb = _decode(_fields("mono16", 2, 2, 4, data, is_bigendian))
    np.testing.assert_array_equal(rgb[:, :, 0], [[0x12, 0xFF], [0x00, 0x80]])
    np.testing.assert_array_equal(rgb[:, :, 0], rgb[:, :, 2])


def _yuv_to_rgb_reference(y, u, v):
    """BT.601 limited range, written out independently of OpenCV."""
    c, d, e = y - 16.0, u - 128.0, v - 128.0
    rgb = [1.164 * c + 1.596 * e, 1.164 * c - 0.391 * d - 0.813 * e, 1.164 * c + 2.018 * d]
    return np.clip(np.round(rgb), 0, 255)


@pytest.mark.parametrize(
    "encoding, order",
    [("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuyv", "yuyv"), ("yuv422_yuy2", "yuyv")],
)
@pytest.mark.parametrize("padding", [0, 2])
def test_yuv422_byte_orders(encoding, order, padding):
    # Two pixel pairs per row; Y differs within each pair so a swapped order is visible.
    y = np.array([[60, 180, 100, 220]], dtype=np.uint8)
    u = np.array([[90, 170]], dtype=np.uint8)
    v = np.array([[200, 60]], dtype=np.uint8)
    macro = []
    for pair in range(2):
        y0, y1, uu, vv = y[0, 2 * pair], y[0, 2 * pair + 1], u[0, pair], v[0, pair]
        macro += [uu, y0, vv, y1] if order == "uyvy" else [y0, uu, y1, vv]
    row = np.array(macro, dtype=np.uint8)[None, :]
    data = _pad_rows(np.vstack([row, row]), padding)
    rgb = _decode(_fields(encoding, 2, 4, 8 + padding, data))
    assert rgb.shape == (2, 4, 3)
    for col in range(4):
        expected = _yuv_to_rgb_reference(
            float(y[0, col]), float(u[0, col // 2]), float(v[0, col // 2])
        )
        np.testing.assert_allclose(rgb[0, col], expected, atol=2)
        np.testing.assert_array_equal(rgb[1, col], rgb[0, col])


# --- round trips through the encoder ----------------------------------------------------------


def _smooth_image(height=24, width=32):
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 7 % 256, yy * 9 % 256, (xx + yy) * 3 % 256], axis=2).astype(np.uint8)


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
@pytest.mark.parametrize("row_padding", [0, 6])
def test_round_trip_every_encoding(encoding, row_padding):
    is_grey = encoding in ("mono8", "8UC1", "mono16")
    is_yuv = encoding in ("yuv422", "uyvy", "yuyv", "yuv422_yuy2")
    image = _smooth_image()
    if is_grey:
        image = np.repeat(image[:, :, :1], 3, axis=2)  # grey round trips exactly
    if is_yuv:
        image = np.full_like(image, 0) + np.array([120, 90, 60], dtype=np.uint8)  # flat chroma
    fields = rgb_to_image_fields(image, encoding, row_padding=row_padding)
    assert set(fields) == {"encoding", "height", "width", "step", "is_bigendian", "data"}
    assert isinstance(fields["data"], bytes)
    assert len(fields["data"]) == fields["height"] * fields["step"]
    decoded = _decode(fields)
    if is_yuv:
        np.testing.assert_allclose(decoded.astype(int), image.astype(int), atol=3)
    else:
        np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize("is_bigendian", [False, True])
def test_mono16_encoder_round_trip(is_bigendian):
    image = np.repeat(_smooth_image()[:, :, 1:2], 3, axis=2)
    fields = rgb_to_image_fields(image, "mono16", is_bigendian=is_bigendian)
    assert fields["is_bigendian"] == int(is_bigendian)
    np.testing.assert_array_equal(_decode(fields), image)


@pytest.mark.parametrize(
    "wrap",
    [
        bytes,
        bytearray,
        memoryview,
        lambda b: array.array("B", b),
        lambda b: np.frombuffer(b, dtype=np.uint8),
        lambda b: list(b),
    ],
    ids=["bytes", "bytearray", "memoryview", "array.array", "numpy", "list"],
)
def test_data_container_types(wrap):
    fields = rgb_to_image_fields(RGB_2x3, "bgr8", row_padding=1)
    fields["data"] = wrap(fields["data"])
    np.testing.assert_array_equal(_decode(fields), RGB_2x3)


def test_rgb8_without_padding_is_zero_copy():
    backing = np.frombuffer(bytearray(RGB_2x3.tobytes()), dtype=np.uint8)
    rgb = _decode(_fields("rgb8", 2, 3, 9, backing))
    assert np.shares_memory(rgb, backing)
    np.testing.assert_array_equal(rgb, RGB_2x3)


def test_extra_trailing_bytes_are_ignored():
    fields = rgb_to_image_fields(RGB_2x3, "rgb8")
    fields["data"] += b"\x01\x02\x03"
    np.testing.assert_array_equal(_decode(fields), RGB_2x3)


def test_message_wrappers_are_duck_typed():
    msg = SimpleNamespace(**rgb_to_image_fields(RGB_2x3, "bgra8"))
    np.testing.assert_array_equal(image_msg_to_rgb(msg), RGB_2x3)
    compressed = SimpleNamespace(**rgb_to_compressed_fields(RGB_2x3, "png"))
    np.testing.assert_array_equal(compressed_msg_to_rgb(compressed), RGB_2x3)


# --- malformed raw images ----------------------------------------------------------------------

GOOD = _fields("rgb8", 2, 3, 9, RGB_2x3.tobytes())


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"encoding": "rgb16"}, ["'rgb16'", "supported", "rgb8", "yuv422"]),
        ({"encoding": ""}, ["''", "supported"]),
        ({"encoding": "RGB8"}, ["'RGB8'", "supported"]),
        ({"encoding": "16UC1"}, ["'16UC1'", "supported"]),
        ({"width": 0}, ["0x2", "positive"]),
        ({"height": 0}, ["3x0", "positive"]),
        ({"height": -2}, ["3x-2", "positive"]),
        ({"height": "two"}, ["height", "'two'", "integer"]),
        ({"step": 8}, ["step 8", "3 * 3 = 9"]),
        ({"step": 0}, ["step 0", "= 9"]),
        ({"data": RGB_2x3.tobytes()[:-1]}, ["17 bytes", "2 * 9 = 18"]),
        ({"data": b""}, ["0 bytes", "18"]),
        ({"step": 10}, ["18 bytes", "2 * 10 = 20"]),
        ({"data": np.zeros(18, dtype=np.uint16)}, ["dtype uint16", "uint8"]),
        ({"data": object()}, ["object", "not a byte buffer"]),
        ({"encoding": "yuv422", "width": 3, "step": 6}, ["width 3", "odd", "even"]),
        ({"encoding": "yuyv", "width": 3, "step": 6}, ["width 3", "odd", "even"]),
    ],
)
def test_malformed_image_rejected_with_clear_message(changes, words):
    fields = {**GOOD, **changes}
    with pytest.raises(ImageDecodeError) as info:
        _decode(fields)
    message = str(info.value)
    for word in words:
        assert word in message, message


class _Untouchable:
    """Image data that fails the test if anything reads it."""

    def __len__(self):
        raise AssertionError("data was read")

    def __getitem__(self, index):
        raise AssertionError("data was read")

    def __iter__(self):
        raise AssertionError("data was read")


@pytest.mark.parametrize("encoding", ["rgb8", "mono16", "yuv422", "bgra8"])
@pytest.mark.parametrize("data", [b"0123456789", _Untouchable()], ids=["tiny", "untouchable"])
def test_huge_header_rejected_before_touching_data(encoding, data):
    # A header claiming 16384 x 16384 with (almost) no data fails on the pixel limit, from the
    # header alone: nothing allocates or reads the 768 MB the header promises.
    with pytest.raises(ImageDecodeError) as info:
        decode_image(encoding, 16384, 16384, 16384 * 4, 0, data)
    message = str(info.value)
    assert "16384x16384" in message and str(DEFAULT_MAX_PIXELS) in message
    assert "268435456 pixels" in message


def test_max_pixels_is_a_parameter():
    image = _smooth_image(10, 10)
    fields = rgb_to_image_fields(image, "rgb8")
    np.testing.assert_array_equal(_decode(fields, max_pixels=100), image)
    with pytest.raises(ImageDecodeError, match="limit of 99 pixels"):
        _decode(fields, max_pixels=99)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: rgb_to_image_fields(RGB_2x3, "rgb16"), ["'rgb16'", "supported"]),
        (lambda: rgb_to_image_fields(RGB_2x3[:, :, 0], "rgb8"), ["H x W x 3", "(2, 3)"]),
        (lambda: rgb_to_image_fields(RGB_2x3.astype(float), "rgb8"), ["uint8", "float64"]),
        (lambda: rgb_to_image_fields(RGB_2x3, "yuv422"), ["width 3", "even"]),
        (lambda: rgb_to_image_fields(RGB_2x3, "rgb8", row_padding=-1), ["-1", ">= 0"]),
        (lambda: rgb_to_compressed_fields(RGB_2x3, "webp"), ["'webp'", "'jpeg'"]),
    ],
)
def test_encoder_rejects_bad_arguments(call, words):
    with pytest.raises(ImageDecodeError) as info:
        call()
    for word in words:
        assert word in str(info.value)


# --- compressed images -------------------------------------------------------------------------


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


@pytest.mark.parametrize(
    "fmt",
    ["png", "PNG", "bgr8; png compressed bgr8", "rgb8; png compressed bgr8", "image/png"],
)
def test_png_round_trip_exact(fmt):
    image = _smooth_image()
    data = rgb_to_compressed_fields(image, "png")["data"]
    np.testing.assert_array_equal(decode_compressed(fmt, data), image)


@pytest.mark.parametrize(
    "fmt", ["jpeg", "jpg", "JPEG", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8"]
)
def test_jpeg_round_trip_close(fmt):
    image = cv2.GaussianBlur(_smooth_image(48, 64), (7, 7), 0)
    fields = rgb_to_compressed_fields(image, "jpeg", jpeg_quality=98)
    assert fields["format"] == "rgb8; jpeg compressed bgr8"
    decoded = decode_compressed(fmt, fields["data"])
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 3.0
    # Channel order: a red image stays red.
    red = np.zeros((16, 16, 3), dtype=np.uint8)
    red[:, :, 0] = 255
    decoded_red = decode_compressed(fmt, rgb_to_compressed_fields(red, "jpeg")["data"])
    assert decoded_red[..., 0].mean() > 240 and decoded_red[..., 2].mean() < 15


def test_grey_and_16bit_and_rgba_png_become_rgb8():
    grey = GREY_2x3
    np.testing.assert_array_equal(decode_compressed("png", _png(grey)), GREY_RGB_2x3)
    grey16 = grey.astype(np.uint16) * 257
    np.testing.assert_array_equal(decode_compressed("png", _png(grey16)), GREY_RGB_2x3)
    bgra = np.concatenate([RGB_2x3[:, :, ::-1], np.full((2, 3, 1), 9, dtype=np.uint8)], axis=2)
    np.testing.assert_array_equal(decode_compressed("png", _png(bgra)), RGB_2x3)


def _jpeg_bytes():
    return rgb_to_compressed_fields(_smooth_image(), "jpeg")["data"]


def _png_header_claiming(width: int, height: int) -> bytes:
    data = bytearray(_png(_smooth_image(4, 4)))
    data[16:20] = width.to_bytes(4, "big")
    data[20:24] = height.to_bytes(4, "big")
    return bytes(data)


@pytest.mark.parametrize(
    "fmt, data, words",
    [
        ("16UC1; compressedDepth png", _png(GREY_2x3), ["compressedDepth", "depth"]),
        ("compressedDepth", b"\x00" * 20, ["compressedDepth"]),
        ("tiff", _png(GREY_2x3), ["'tiff'", "jpeg", "png"]),
        ("", _png(GREY_2x3), ["''", "supported"]),
        ("jpeg", b"", ["no data", "0 bytes"]),
        ("png", bytearray(), ["no data"]),
        ("jpeg", np.random.default_rng(0).integers(0, 256, 500).astype(np.uint8), ["decode"]),
        ("jpeg", b"not an image at all", ["19 bytes", "does not decode"]),
        ("jpeg", _jpeg_bytes()[:30], ["does not decode"]),
        ("png", _png(GREY_2x3)[:40], ["does not decode"]),
        ("png", _png_header_claiming(20000, 20000), ["20000x20000", "limit"]),
    ],
    ids=[
        "compressedDepth-png",
        "compressedDepth",
        "tiff",
        "empty-format",
        "empty-jpeg",
        "empty-png",
        "random-bytes",
        "text",
        "truncated-jpeg",
        "truncated-png",
        "huge-png-header",
    ],
)
def test_malformed_compressed_rejected(fmt, data, words):
    with pytest.raises(ImageDecodeError) as info:
        decode_compressed(fmt, data)
    for word in words:
        assert word in str(info.value), str(info.value)


def _jpeg_header_claiming(width: int, height: int) -> bytes:
    data = bytearray(_jpeg_bytes())
    sof = data.index(b"\xff\xc0")  # baseline start-of-frame: length(2) precision(1) H(2) W(2)
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize(
    "fmt, data",
    [("jpeg", _jpeg_header_claiming(60000, 50000)), ("png", _png_header_claiming(60000, 50000))],
)
def test_compressed_header_size_checked_before_decoding(fmt, data):
    # OpenCV would try to allocate 9 GB (or fail its own way); the header check comes first.
    with pytest.raises(ImageDecodeError, match=r"60000x50000 \(3000000000 pixels\) exceeds"):
        decode_compressed(fmt, data)


@pytest.mark.parametrize("codec", ["jpeg", "png"])
def test_compressed_pixel_limit(codec):
    data = rgb_to_compressed_fields(_smooth_image(24, 32), codec)["data"]
    assert decode_compressed(codec, data, max_pixels=24 * 32).shape == (24, 32, 3)
    with pytest.raises(ImageDecodeError, match=r"32x24 \(768 pixels\) exceeds the limit of 767"):
        decode_compressed(codec, data, max_pixels=24 * 32 - 1)
