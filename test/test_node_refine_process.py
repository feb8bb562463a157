"""The installed relocalizer with a map file, in its own process over real DDS.

The scene is core/tests' exact planar one (planar_scene.py): a textured plane rendered by
homographies, its map built without triangulation. The model is a constant-output test model
whose output is a prior a few cm / degrees off the rendering pose, so a refined pose can be
checked against the truth to millimetres.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo

from posenet_core.geometry import matrix_to_pose
from posenet_core.mapfile import write_map

from model_factory import make_test_model
from ros_harness import NodeProcess, next_domain_id
from test_node_process import Harness, image_msg, stamp_ns

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "tests"))
import planar_scene  # noqa: E402

K = planar_scene.K_640
T_TRUE = planar_scene.look_at(np.array([0.15, 0.1, -1.9]), np.array([0.05, 0.0, 0.0]))
RECEIVE_TIMEOUT_S = 30.0


def _prior() -> np.ndarray:
    """The test model's constant output: 6 cm and 2.5 degrees off the truth."""
    T = T_TRUE.copy()
    T[:3, 3] += (0.04, -0.03, 0.03)
    T[:3, :3] = cv2.Rodrigues(np.array([[0.0], [np.radians(2.5)], [0.0]]))[0] @ T_TRUE[:3, :3]
    return T


@pytest.fixture(scope="module")
def scene():
    return planar_scene.PlanarScene()


@pytest.fixture(scope="module")
def site(tmp_path_factory, scene):
    """(map file, model file) of the planar scene, plus maps and a model that do not fit."""
    folder = tmp_path_factory.mktemp("refine_site")
    site_map = planar_scene.build_site_map(scene)
    position, quat_wxyz = matrix_to_pose(_prior())
    common = dict(
        position_scale=0.0,
        position_offset=position,
        quat_wxyz=quat_wxyz,
        metadata_overrides={"posenet.dataset": "planar"},
    )
    paths = {
        "map": str(write_map(folder / "site.map.npz", site_map)),
        "model": make_test_model(str(folder / "prior.onnx"), **common),
    }
    paths["other_frame_map"] = str(
        write_map(folder / "odom.map.npz", planar_scene.build_site_map(scene, scene_frame="odom"))
    )
    paths["other_dataset_map"] = str(
        write_map(folder / "b.map.npz", planar_scene.build_site_map(scene, dataset="site_b"))
    )
    paths["fingerprinted_model"] = make_test_model(
        str(folder / "fp.onnx"),
        **{
            **common,
            "metadata_overrides": {
                "posenet.dataset": "planar",
                "posenet.dataset_fingerprint": "f" * 64,
            },
        },
    )
    corrupt = folder / "corrupt.map.npz"
    corrupt.write_bytes(Path(paths["map"]).read_bytes()[:5000])
    paths["corrupt_map"] = str(corrupt)
    return paths


def camera_info_msg(ns: int, width: int = 640, height: int = 480) -> CameraInfo:
    msg = CameraInfo()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
    msg.header.frame_id = "camera_optical"
    msg.width, msg.height = width, height
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [float(v) for v in K.ravel()]
    return msg


class RefineHarness(Harness):
    """The node's image on /image (no remapping), so its camera_info is /camera_info."""

    def __init__(self, tmp_path, params: dict) -> None:
        super().__init__(tmp_path, params, camera_topic="/image")
        self.info_pub = self.peer.node.create_publisher(
            CameraInfo, "/camera_info", qos_profile_sensor_data
        )

    def send(self, image, info, done, timeout_s: float = RECEIVE_TIMEOUT_S) -> bool:
        """Publish ``info`` (if any) then ``image``, again every 0.5 s, until ``done()``."""

        def publish_info() -> None:
            self.info_pub.publish(info)
            self.peer.spin_until(lambda: False, 0.03, self.proc)

        return self.send_until(image, done, timeout_s, None if info is None else publish_info)

    def estimates(self, ns: int) -> list:
        return [m for m in self.received["est"] if stamp_ns(m) == ns]

    def refine_diag(self) -> dict[str, str]:
        for array in reversed(self.received["diag"]):
            for status in array.status:
                if status.name.endswith(": refinement"):
                    return {
                        "message": status.message,
                        **{kv.key: kv.value for kv in status.values},
                    }
        return {}


def _params(site: dict, **extra) -> dict:
    return {"model_path": site["model"], "map_path": site["map"], **extra}


def test_a_frame_is_refined_to_millimetres_and_published_as_refined(tmp_path, scene, site):
    h = RefineHarness(tmp_path, _params(site, base_frame="base_link"))
    try:
        h.wait_connected()
        ns = h.peer.node.get_clock().now().nanoseconds
        image = image_msg(scene.render(T_TRUE, K), "rgb8", ns)
        refined = lambda: any(e.source == "refined" for e in h.estimates(ns))  # noqa: E731
        assert h.send(image, camera_info_msg(ns), refined), h.proc.output
        # The refined pose goes out on every topic (the frame is re-sent until it is refined, so
        # earlier copies of it may have gone out with the prior).
        assert h.peer.spin_until(
            lambda: h.poses_with_stamp(ns) and h.with_stamp("base", ns), 5.0, h.proc
        )
        est = next(e for e in h.estimates(ns) if e.source == "refined")
        assert est.accepted and est.refinement_attempted and est.refinement_failure == ""
        assert est.refinement_inliers >= 50
        assert 0.0 < est.refinement_time <= est.latency
        assert not est.covariance_from_model
        p = est.pose.pose.position
        error_m = np.linalg.norm(np.array([p.x, p.y, p.z]) - T_TRUE[:3, 3])
        assert error_m < 0.005, f"refined pose {error_m * 1000:.1f} mm from the truth"
        prior_error_m = np.linalg.norm(_prior()[:3, 3] - T_TRUE[:3, 3])
        assert prior_error_m > 0.05
        sigma = np.sqrt(np.diag(np.asarray(est.pose.covariance).reshape(6, 6)))
        assert np.all(sigma[:3] < 0.02) and np.all(sigma > 0)  # the PnP's, not the prior's
        np.testing.assert_allclose(est.stddev, sigma, rtol=1e-6)

        def tf_of_stamp():
            return [t.transforms[0] for t in h.received["tf"] if stamp_ns(t.transforms[0]) == ns]

        # Each topic has its own DDS writer: wait until each has delivered the refined pose.
        # base_link sits at the camera (default extrinsic): its position is the refined one.
        assert h.peer.spin_until(
            lambda: (
                any(m.pose == est.pose for m in h.with_stamp("cov", ns))
                and any(m.pose == est.pose.pose for m in h.poses_with_stamp(ns))
                and any(t.transform.translation.x == p.x for t in tf_of_stamp())
                and any(
                    b.pose.pose.position == est.pose.pose.position
                    for b in h.with_stamp("base", ns)
                )
            ),
            5.0,
            h.proc,
        )
        assert h.peer.spin_until(lambda: int(h.refine_diag().get("refined", 0)) >= 1, 10.0, h.proc)
        diag = h.refine_diag()
        assert "site.map.npz" in diag["map"] and "9 keyframes" in diag["map"]
        assert int(diag["camera_infos_received"]) >= 1
    finally:
        output = h.close()
    assert "refining up to 5 frames/s" in output


def test_no_camera_info_wrong_size_and_no_texture_fall_back_to_the_prior(tmp_path, scene, site):
    h = RefineHarness(tmp_path, _params(site, diagnostics_period_s=0.2))
    try:
        h.wait_connected()
        clock = h.peer.node.get_clock()
        textured = scene.render(T_TRUE, K)

        def published_prior(ns):
            return lambda: any(e.source == "prior" for e in h.estimates(ns))

        # 1. No CameraInfo at all: prior only, said once (after a grace period of 1 s in which
        # it may still come), counted.
        first = []
        while len(first) < 20 and "no CameraInfo" not in h.refine_diag().get("message", ""):
            ns = clock.now().nanoseconds
            first.append(ns)
            assert h.send(image_msg(textured, "rgb8", ns), None, published_prior(ns))
            h.peer.spin_until(lambda: False, 0.25, h.proc)  # let the refine period pass
        assert "no CameraInfo" in h.refine_diag()["message"], h.proc.output
        for ns in first:
            (est,) = h.estimates(ns)
            assert est.accepted and not est.refinement_attempted and est.refinement_failure == ""
        assert int(h.refine_diag()["skipped_no_camera_info"]) >= 2

        # 2. CameraInfo of another size: prior only, said once, counted.
        for _ in range(2):
            ns = clock.now().nanoseconds
            assert h.send(
                image_msg(textured, "rgb8", ns), camera_info_msg(ns, 320, 240), published_prior(ns)
            )
            h.peer.spin_until(lambda: False, 0.25, h.proc)
            assert not h.estimates(ns)[0].refinement_attempted
        assert h.peer.spin_until(
            lambda: int(h.refine_diag().get("skipped_camera_info_size", 0)) >= 1, 10.0, h.proc
        )

        # 3. A frame without texture: refinement fails, the prior is published and counted.
        flat = np.full((480, 640, 3), 128, np.uint8)
        ns = clock.now().nanoseconds
        failed = lambda: any(e.refinement_failure for e in h.estimates(ns))  # noqa: E731
        assert h.send(image_msg(flat, "rgb8", ns), camera_info_msg(ns), failed), h.proc.output
        est = next(e for e in h.estimates(ns) if e.refinement_failure)
        assert est.source == "prior" and est.refinement_attempted and est.accepted
        assert est.refinement_failure == est.REFINE_FAILED_NO_TEXTURE
        assert h.poses_with_stamp(ns)  # the prior went out on pose too
        assert h.peer.spin_until(
            lambda: int(h.refine_diag().get("failed_no_texture", 0)) >= 1, 10.0, h.proc
        )
        diag = h.refine_diag()
        assert float(diag["success_share"]) < 1.0 or diag["success_share"] == "nan"
    finally:
        output = h.close()
    # Each condition is logged once, not per frame.
    assert output.count("no CameraInfo received") == 1, output
    assert output.count("CameraInfo is for 320x240 images but the image is 640x480") == 1, output
    assert "no_texture" in output


STARTUP_FAILURES = [
    # (case, params from the site's paths, words the message must hold)
    ("missing map", lambda s: _params(s, map_path="/nonexistent/site.map.npz"), "not found"),
    ("corrupt map", lambda s: _params(s, map_path=s["corrupt_map"]), "corrupt"),
    ("map of another frame", lambda s: _params(s, map_path=s["other_frame_map"]), "'odom'"),
    ("map of another dataset", lambda s: _params(s, map_path=s["other_dataset_map"]), "site_b"),
    (
        "map of another dataset version",
        lambda s: _params(s, model_path=s["fingerprinted_model"]),
        "rebuild the map",
    ),
    ("bad refine parameter", lambda s: _params(s, **{"refine.ratio": 1.5}), "refine.ratio"),
]


@pytest.mark.parametrize(("case", "make_params", "words"), STARTUP_FAILURES)
def test_bad_maps_stop_the_node_at_startup_with_a_clear_message(
    tmp_path, site, case, make_params, words
):
    proc = NodeProcess(next_domain_id(), make_params(site), cwd=tmp_path)
    code = proc.wait_exit(timeout_s=60)
    assert code != 0, f"{case}: exited 0\n{proc.output}"
    assert words in proc.output, f"{case}: message lacks {words!r}:\n{proc.output}"
    assert "Traceback" not in proc.output, proc.output
