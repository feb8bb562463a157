"""posenet_core.images: image files as RGB arrays (tests moved from the trainer's test_data.py and
the node's test_dataset_reader.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from posenet_core.errors import DatasetError
from posenet_core.images import read_rgb
from posenet_core.images import read_rgb as load_rgb


def write_png(path: Path, rgb=(10, 20, 30), size_hw=(6, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.broadcast_to(np.array(rgb, np.uint8), (*size_hw, 3))
    assert cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    return path


def test_read_rgb_converts_bgr_and_names_bad_files(tmp_path: Path) -> None:
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 200  # pure red in RGB
    cv2.imwrite(str(tmp_path / "red.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(read_rgb(tmp_path / "red.png"), rgb)
    with pytest.raises(DatasetError, match=r"missing.png: cannot read image \(file not found\)"):
        read_rgb(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"junk.png: cannot read image \(not a readable"):
        read_rgb(tmp_path / "junk.png")


def test_load_rgb_returns_rgb_channel_order(tmp_path):
    path = write_png(tmp_path / "a.png", (200, 100, 25))
    rgb = load_rgb(path)
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [200, 100, 25]
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((4, 5), 77, np.uint8))
    assert load_rgb(grey).shape == (4, 5, 3)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\nnot really"), "cannot be decoded"),
    ],
)
def test_load_rgb_errors(tmp_path, setup, message):
    path = tmp_path / "bad.png"
    setup(path)
    with pytest.raises(DatasetError, match=message):
        load_rgb(path)
