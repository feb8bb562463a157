"""What the node's pipeline does with frames of either orientation (issue 15).

A model trained on a set of both orientations takes a square input (posenet_train's default),
and every frame, portrait or landscape, is resized by its shorter side and centre-cropped to it.
A model trained on landscape frames only has a landscape input; a portrait frame whose resized
width is narrower than that input raises PreprocessError, which the node counts and logs as a
rejected frame (node.py) instead of crashing.
"""

from __future__ import annotations

import numpy as np
import pytest

from posenet_ros.errors import PreprocessError
from posenet_ros.pipeline import Relocalizer

from model_factory import make_test_model

LANDSCAPE = np.full((48, 64, 3), (255, 0, 51), np.uint8)
PORTRAIT = np.ascontiguousarray(np.rot90(LANDSCAPE))


@pytest.mark.parametrize("frame", [LANDSCAPE, PORTRAIT], ids=["landscape", "portrait"])
def test_a_square_input_takes_frames_of_both_orientations(tmp_path, frame):
    path = make_test_model(str(tmp_path / "square.onnx"), input_hw=(32, 32), resize_shorter=32)
    result = Relocalizer(path, backend="onnxruntime", num_threads=1).estimate_rgb(frame)
    np.testing.assert_allclose(result.position_m, np.array((255, 0, 51)) / 255.0, atol=1e-6)


def test_a_landscape_input_refuses_a_portrait_frame_with_a_reason(tmp_path):
    path = make_test_model(str(tmp_path / "wide.onnx"), input_hw=(32, 40), resize_shorter=32)
    relocalizer = Relocalizer(path, backend="onnxruntime", num_threads=1)
    relocalizer.estimate_rgb(LANDSCAPE)  # 48x64 -> 32x43 covers 32x40
    with pytest.raises(PreprocessError, match="too small for this image's aspect ratio"):
        relocalizer.estimate_rgb(PORTRAIT)  # 64x48 -> 43x32: narrower than 40
