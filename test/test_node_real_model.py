"""The node on a model file the trainer really exported (posenet-tiny on a rendered scene).

The contract test from the node's side: the pose the relocalizer publishes for an image equals
what the trainer's own ONNX evaluation predicts for it.
"""

from __future__ import annotations

import numpy as np
import pytest

from test_node_process import Harness, image_msg

pytest.importorskip("torch")
pytest.importorskip("posenet_train")

from posenet_core.image_codec import image_msg_to_rgb  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from posenet_train import export, synthetic
    from posenet_train.checkpoint import save_model_checkpoint
    from posenet_train.data import position_stats
    from posenet_train.datasets import load_split
    from posenet_train.models import build_model

    root = tmp_path_factory.mktemp("real_model")
    scene = synthetic.main(
        root / "scene", train_frames=8, test_frames=3, width=160, height=120, workers=1,
        progress=False,
    )  # fmt: skip
    records = load_split(scene, "test")
    model = build_model("posenet-tiny")
    model.set_position_stats(*position_stats(load_split(scene, "train")))
    checkpoint = save_model_checkpoint(
        root / "tiny.pt",
        model,
        extra={"resize_shorter": 64, "crop_hw": (64, 84), "dataset": str(scene)},
        epoch=1,
    )
    model_file = root / "tiny.onnx"
    export.main(checkpoint, model_file, calibration_images=0)
    return model_file, records


def test_node_publishes_the_pose_the_trainer_predicts(tmp_path, exported):
    from posenet_core.images import read_rgb
    from posenet_train.evaluate import predict_onnx

    model_file, records = exported
    (expected_position, expected_quat), _ = predict_onnx(model_file, records[:1])
    h = Harness(tmp_path, {"model_path": str(model_file)})
    try:
        h.wait_connected()
        rgb = read_rgb(records[0].image_path)
        ns = h.peer.node.get_clock().now().nanoseconds
        msg = image_msg(rgb, "bgr8", ns)
        assert np.array_equal(image_msg_to_rgb(msg), rgb)
        assert h.send_until(msg, lambda: h.poses_with_stamp(ns)), h.proc.output
        pose = h.poses_with_stamp(ns)[0].pose
        p, q = pose.position, pose.orientation
        np.testing.assert_allclose([p.x, p.y, p.z], expected_position[0], atol=1e-5)
        quat_wxyz = np.array([q.w, q.x, q.y, q.z])
        expected = expected_quat[0] / np.linalg.norm(expected_quat[0])
        assert abs(abs(float(quat_wxyz @ expected)) - 1.0) < 1e-6
    finally:
        h.close()
