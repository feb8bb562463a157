"""The installed relocalizer in its own process, over real DDS, started as `ros2 launch` does.

The test model (model_factory) outputs, as position, the per-channel mean of its input scaled
to 0..1, and a constant orientation; so a solid-colour image has one exact expected pose.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from tf2_msgs.msg import TFMessage

from posenet_core.covariance import extrinsic_from_parameters
from posenet_core.geometry import pose_to_matrix, quat_wxyz_to_matrix
from posenet_core.image_codec import rgb_to_image_fields
from posenet_ros.msg import PoseEstimate

from covariance_reference import numerical_base_covariance
from model_factory import expected_log_variance, make_test_model
from ros_harness import PARAMS_FILE, NodeProcess, TestPeer, next_domain_id

QUAT_WXYZ = (math.cos(0.3), 0.0, 0.0, math.sin(0.3))  # 0.6 rad about z
CAMERA_TOPIC = "/cam/image_raw"
DISCOVERY_TIMEOUT_S = 20.0
RECEIVE_TIMEOUT_S = 20.0


def solid_image(rgb=(255, 0, 51), height=48, width=64) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (height, width, 3)).copy()


def expected_position(rgb) -> np.ndarray:
    return np.array(rgb, dtype=np.float64) / 255.0


def image_msg(rgb_HWC: np.ndarray, source_encoding: str, stamp_ns: int, **overrides) -> Image:
    """An Image message of ``rgb_HWC``; ``overrides`` replace fields to make it malformed."""
    fields = rgb_to_image_fields(rgb_HWC, source_encoding)
    fields.update(overrides)
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = "camera_optical"
    msg.height, msg.width = int(fields["height"]), int(fields["width"])
    msg.encoding = fields["encoding"]
    msg.step = int(fields["step"])
    msg.is_bigendian = int(fields["is_bigendian"])
    msg.data = bytes(fields["data"])
    return msg


def compressed_msg(data: bytes, fmt: str, stamp_ns: int) -> CompressedImage:
    msg = CompressedImage()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.format = fmt
    msg.data = data
    return msg


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


class Harness:
    """Node process + test peer with publishers and recording subscribers."""

    def __init__(
        self,
        tmp_path,
        params: dict,
        compressed: bool = False,
        params_file: Path | None = PARAMS_FILE,
        camera_topic: str = CAMERA_TOPIC,
    ) -> None:
        """``camera_topic`` "/image" (the node's own name for it): no remapping."""
        domain = next_domain_id()
        self.peer = TestPeer(domain)
        node = self.peer.node
        topic = camera_topic + ("/compressed" if compressed else "")
        msg_type = CompressedImage if compressed else Image
        self.image_pub = node.create_publisher(msg_type, topic, qos_profile_sensor_data)
        self.received: dict[str, list] = {
            k: [] for k in ("pose", "cov", "est", "tf", "diag", "base")
        }
        for key, mtype, name in (
            ("pose", PoseStamped, "/pose"),
            ("cov", PoseWithCovarianceStamped, "/pose_with_covariance"),
            ("est", PoseEstimate, "/estimate"),
            ("tf", TFMessage, "/tf"),
            ("diag", DiagnosticArray, "/diagnostics"),
            ("base", PoseWithCovarianceStamped, "/base_pose_with_covariance"),
        ):
            node.create_subscription(mtype, name, self.received[key].append, 100)
        remap = {"image/compressed" if compressed else "image": topic}
        if camera_topic == "/image":
            remap = {}
        self.proc = NodeProcess(
            domain, params, remaps=remap, params_file=params_file, cwd=tmp_path
        )

    def wait_connected(self) -> None:
        ok = self.peer.spin_until(
            lambda: self.image_pub.get_subscription_count() >= 1, DISCOVERY_TIMEOUT_S, self.proc
        )
        if not ok:
            self.proc.stop()
            pytest.fail(f"relocalizer did not subscribe; its output:\n{self.proc.output}")

    def send_until(self, msg, done, timeout_s: float = RECEIVE_TIMEOUT_S, before=None) -> bool:
        """Publish ``msg`` (again every 0.5 s: best effort may lose one) until ``done()``;
        ``before()``, when given, runs before each publication (e.g. sends camera_info)."""
        end = self.peer.node.get_clock().now().nanoseconds + int(timeout_s * 1e9)
        while self.peer.node.get_clock().now().nanoseconds < end:
            if before is not None:
                before()
            self.image_pub.publish(msg)
            if self.peer.spin_until(done, 0.5, self.proc):
                return True
            if self.proc.proc.poll() is not None:
                return False
        return done()

    def solid_frame(self, rgb, encoding: str = "rgb8"):
        """A solid-colour image message stamped now, and that stamp in ns."""
        ns = self.peer.node.get_clock().now().nanoseconds
        return image_msg(solid_image(rgb), encoding, ns), ns

    def poses_with_stamp(self, ns: int) -> list[PoseStamped]:
        return [m for m in self.received["pose"] if stamp_ns(m) == ns]

    def with_stamp(self, key: str, ns: int) -> list:
        return [m for m in self.received[key] if stamp_ns(m) == ns]

    def latest_diag_values(self) -> dict[str, str]:
        for array in reversed(self.received["diag"]):
            for status in array.status:
                if "relocalization" in status.name:
                    return {kv.key: kv.value for kv in status.values}
        return {}

    def close(self) -> str:
        code = self.proc.stop()
        self.peer.close()
        assert code == 0, f"relocalizer exited {code} on SIGINT:\n{self.proc.output}"
        return self.proc.output


@pytest.fixture
def model_path(tmp_path):
    return make_test_model(str(tmp_path / "mean_color.onnx"), quat_wxyz=QUAT_WXYZ)


def test_publishes_every_output_with_the_image_stamp(tmp_path, model_path):
    h = Harness(
        tmp_path,
        {"model_path": model_path, "position_variance_m2": [0.04, 0.09, 0.16]},
    )
    try:
        h.wait_connected()
        rgb = (255, 0, 51)
        msg, ns = h.solid_frame(rgb, "bgr8")
        assert h.send_until(
            msg,
            lambda: (
                all(any(stamp_ns(m) == ns for m in h.received[k]) for k in ("pose", "cov", "est"))
                and any(stamp_ns(t.transforms[0]) == ns for t in h.received["tf"])
            ),
        ), h.proc.output

        pose = h.poses_with_stamp(ns)[0]
        assert pose.header.frame_id == "map"
        p = pose.pose.position
        np.testing.assert_allclose([p.x, p.y, p.z], expected_position(rgb), atol=1e-5)
        q = pose.pose.orientation
        np.testing.assert_allclose(
            [q.x, q.y, q.z, q.w],
            [QUAT_WXYZ[1], QUAT_WXYZ[2], QUAT_WXYZ[3], QUAT_WXYZ[0]],
            atol=1e-6,
        )

        cov = next(m for m in h.received["cov"] if stamp_ns(m) == ns)
        assert cov.header.frame_id == "map"
        diag = np.diag(np.asarray(cov.pose.covariance).reshape(6, 6))
        np.testing.assert_allclose(diag, [0.04, 0.09, 0.16, 0.01, 0.01, 0.01])
        assert cov.pose.pose == pose.pose

        est = next(m for m in h.received["est"] if stamp_ns(m) == ns)
        assert est.pose == cov.pose
        assert est.camera_frame == "posenet_camera_optical"
        assert "mean_color.onnx" in est.model_name
        assert est.inference_time > 0.0
        assert 0.0 < est.latency < 10.0

        tf = next(t for t in h.received["tf"] if stamp_ns(t.transforms[0]) == ns)
        (t,) = tf.transforms
        assert (t.header.frame_id, t.child_frame_id) == ("map", "posenet_camera_optical")
        np.testing.assert_allclose(
            [t.transform.translation.x, t.transform.translation.y, t.transform.translation.z],
            expected_position(rgb),
            atol=1e-5,
        )

        assert h.peer.spin_until(
            lambda: int(h.latest_diag_values().get("frames_published", 0)) >= 1, 10.0, h.proc
        )
        values = h.latest_diag_values()
        assert values["model"] == est.model_name
        assert float(values["inference_ms_median"]) > 0.0 or values["inference_ms_median"] == "nan"
    finally:
        h.close()


@pytest.mark.parametrize(
    ("params_file", "camera_topic"),
    [
        # `relocalizer --ros-args -p model_path:=...`: the node's declared defaults only
        (None, "/image"),
        # what relocalize.launch.py runs: the shipped YAML, model_path and the image remap
        (PARAMS_FILE, "/camera/image_raw"),
    ],
    ids=["declared_defaults", "shipped_yaml"],
)
def test_default_configuration_publishes_every_output_and_tf(
    tmp_path, model_path, params_file, camera_topic
):
    h = Harness(
        tmp_path, {"model_path": model_path}, params_file=params_file, camera_topic=camera_topic
    )
    try:
        h.wait_connected()
        rgb = (30, 200, 90)
        msg, ns = h.solid_frame(rgb)

        def tf_with_stamp():
            return [t for t in h.received["tf"] if stamp_ns(t.transforms[0]) == ns]

        assert h.send_until(
            msg,
            lambda: all(h.with_stamp(k, ns) for k in ("pose", "cov", "est")) and tf_with_stamp(),
        ), h.proc.output
        pose = h.poses_with_stamp(ns)[0]
        assert pose.header.frame_id == "map"
        p, q = pose.pose.position, pose.pose.orientation
        np.testing.assert_allclose([p.x, p.y, p.z], expected_position(rgb), atol=1e-5)
        assert h.with_stamp("cov", ns)[0].pose.pose == pose.pose
        assert h.with_stamp("est", ns)[0].accepted

        (tf,) = tf_with_stamp()
        (t,) = tf.transforms
        assert (t.header.frame_id, t.child_frame_id) == ("map", "posenet_camera_optical")
        tr, rot = t.transform.translation, t.transform.rotation
        assert (tr.x, tr.y, tr.z) == (p.x, p.y, p.z)
        assert rot == q

        assert h.peer.spin_until(
            lambda: int(h.latest_diag_values().get("frames_published", 0)) >= 1, 10.0, h.proc
        ), h.proc.output
        assert not h.received["base"], "base_frame is empty by default: no base pose"
    finally:
        h.close()


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_input(tmp_path, model_path, fmt):
    h = Harness(tmp_path, {"model_path": model_path, "use_compressed": True}, compressed=True)
    try:
        h.wait_connected()
        rgb = (200, 100, 25)
        ok, buf = cv2.imencode("." + fmt, cv2.cvtColor(solid_image(rgb), cv2.COLOR_RGB2BGR))
        assert ok
        ns = h.peer.node.get_clock().now().nanoseconds
        msg = compressed_msg(buf.tobytes(), f"bgr8; {fmt} compressed bgr8", ns)
        assert h.send_until(msg, lambda: bool(h.poses_with_stamp(ns))), h.proc.output
        p = h.poses_with_stamp(ns)[0].pose.position
        tolerance = 3 / 255 if fmt == "jpeg" else 1e-5
        np.testing.assert_allclose([p.x, p.y, p.z], expected_position(rgb), atol=tolerance)
    finally:
        h.close()


def _bad_raw_frames(ns: int) -> list[tuple[str, Image]]:
    good = solid_image()
    short = image_msg(good, "rgb8", ns)
    short.data = short.data[: len(short.data) // 2]
    zero_width = image_msg(good, "rgb8", ns, width=0, step=0)
    huge = image_msg(good, "rgb8", ns, width=16384, height=16384, step=16384 * 3)
    return [
        ("unknown encoding", image_msg(good, "rgb8", ns, encoding="bayer_gbrg42")),
        ("data shorter than height*step", short),
        ("zero width", zero_width),
        ("16k x 16k", huge),
        ("empty data", image_msg(good, "rgb8", ns, data=b"")),
    ]


def test_bad_frames_are_rejected_counted_and_the_node_keeps_running(tmp_path, model_path):
    h = Harness(tmp_path, {"model_path": model_path, "diagnostics_period_s": 0.2})
    try:
        h.wait_connected()
        clock = h.peer.node.get_clock()
        bad = _bad_raw_frames(clock.now().nanoseconds)
        for i, (label, msg) in enumerate(bad, start=1):

            def rejected(n=i):
                return int(h.latest_diag_values().get("frames_rejected_decode", 0)) >= n

            assert h.send_until(msg, rejected), f"{label}: not counted\n{h.proc.output}"
        assert not h.received["pose"], "a malformed frame produced a pose"
        ns = clock.now().nanoseconds
        assert h.send_until(image_msg(solid_image(), "rgb8", ns), lambda: h.poses_with_stamp(ns))
        values = h.latest_diag_values()
        assert values["last_error"]
    finally:
        output = h.close()
    # One clear line per kind of problem (rate-limited), naming the bad value.
    assert "bayer_gbrg42" in output
    assert "16384" in output


def test_corrupt_jpeg_is_rejected_and_next_frame_published(tmp_path, model_path):
    h = Harness(
        tmp_path,
        {"model_path": model_path, "use_compressed": True, "diagnostics_period_s": 0.2},
        compressed=True,
    )
    try:
        h.wait_connected()
        clock = h.peer.node.get_clock()
        ok, buf = cv2.imencode(".jpg", solid_image())
        corrupt = bytes(buf.tobytes()[:20]) + b"\x00" * 50
        assert h.send_until(
            compressed_msg(corrupt, "jpeg", clock.now().nanoseconds),
            lambda: int(h.latest_diag_values().get("frames_rejected_decode", 0)) >= 1,
        ), h.proc.output
        ns = clock.now().nanoseconds
        good = compressed_msg(buf.tobytes(), "jpeg", ns)
        assert h.send_until(good, lambda: h.poses_with_stamp(ns)), h.proc.output
    finally:
        h.close()


# Colours that make the test model misbehave (see model_factory's "conditional" mode).
@pytest.mark.parametrize(
    "label, rgb, words",
    [
        ("NaN position", (255, 255, 255), "finite"),
        ("zero quaternion", (0, 0, 0), "zero"),
        ("non-unit quaternion", (255, 255, 0), "norm"),
    ],
)
def test_invalid_model_output_is_rejected_and_next_frame_published(tmp_path, label, rgb, words):
    model = make_test_model(str(tmp_path / "conditional.onnx"), mode="conditional")
    h = Harness(tmp_path, {"model_path": model, "diagnostics_period_s": 0.2})
    try:
        h.wait_connected()
        clock = h.peer.node.get_clock()
        bad = image_msg(solid_image(rgb), "rgb8", clock.now().nanoseconds)
        assert h.send_until(
            bad, lambda: int(h.latest_diag_values().get("frames_rejected_invalid_pose", 0)) >= 1
        ), f"{label}\n{h.proc.output}"
        good, ns = h.solid_frame((10, 20, 30))
        assert h.send_until(good, lambda: h.poses_with_stamp(ns)), h.proc.output
        assert len(h.received["pose"]) == 1
    finally:
        output = h.close()
    assert words in output.lower()


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    "case, make_params, expected",
    [
        ("empty model_path", lambda d: {"model_path": ""}, "model_path is empty"),
        ("missing file", lambda d: {"model_path": str(d / "nope.onnx")}, "not found"),
        ("not ONNX", lambda d: {"model_path": _write(d / "x.onnx", b"hello")}, "x.onnx"),
        (
            "missing metadata key",
            lambda d: {
                "model_path": make_test_model(
                    str(d / "nokey.onnx"), drop_keys=("posenet.scene_frame",)
                )
            },
            "posenet.scene_frame",
        ),
        (
            "unknown backend",
            lambda d: {"model_path": make_test_model(str(d / "m.onnx")), "backend": "cuda9"},
            "cuda9",
        ),
        (
            "frame_id equals camera_frame",
            lambda d: {
                "model_path": make_test_model(str(d / "m.onnx")),
                "frame_id": "cam",
                "camera_frame": "cam",
            },
            "camera_frame",
        ),
        (
            "bad covariance",
            lambda d: {
                "model_path": make_test_model(str(d / "m.onnx")),
                "position_variance_m2": [0.1, -1.0, 0.1],
            },
            "position_variance_m2",
        ),
    ],
)
def test_startup_failures_exit_nonzero_with_a_clear_message(tmp_path, case, make_params, expected):
    proc = NodeProcess(next_domain_id(), make_params(tmp_path), cwd=tmp_path)
    code = proc.wait_exit(timeout_s=60)
    assert code != 0, f"{case}: exited 0\n{proc.output}"
    assert expected in proc.output, f"{case}: message lacks {expected!r}:\n{proc.output}"


# --- per-image uncertainty, the base pose, outlier gates ---------------------------------------

# T_camera_base of a camera 0.2 m ahead of and 0.3 m above base_link, looking ahead, pitched
# down a little: a lever arm that makes rotation errors move the base.
EXTRINSIC = {
    "camera_to_base_translation_m": [0.05, 0.3, -0.2],
    "camera_to_base_quat_xyzw": [0.5416752, -0.5416752, 0.4545195, 0.4545195],
}


@pytest.mark.parametrize("use_model_covariance", [True, False])
def test_model_covariance_and_base_pose(tmp_path, use_model_covariance):
    model = make_test_model(
        str(tmp_path / "uncertain.onnx"), quat_wxyz=QUAT_WXYZ, uncertainty="diagonal"
    )
    params = {
        "model_path": model,
        "use_model_covariance": use_model_covariance,
        "base_frame": "base_link",
        **EXTRINSIC,
    }
    h = Harness(tmp_path, params)
    try:
        h.wait_connected()
        rgb = (200, 40, 120)
        msg, ns = h.solid_frame(rgb)
        assert h.send_until(
            msg, lambda: all(h.with_stamp(k, ns) for k in ("cov", "est", "base"))
        ), h.proc.output
        cov = np.asarray(h.with_stamp("cov", ns)[0].pose.covariance).reshape(6, 6)
        if use_model_covariance:
            expected = np.diag(np.exp(expected_log_variance(rgb)))
        else:  # the parameters' fixed diagonal (config/relocalize.yaml)
            expected = np.diag([0.25, 0.25, 0.25, 0.01, 0.01, 0.01])
        np.testing.assert_allclose(cov, expected, rtol=1e-5, atol=1e-12)

        est = h.with_stamp("est", ns)[0]
        assert est.accepted and est.rejection_reason == ""
        assert est.covariance_from_model is use_model_covariance
        np.testing.assert_allclose(est.stddev, np.sqrt(np.diag(expected)), rtol=1e-5)
        assert np.asarray(est.pose.covariance).tolist() == cov.ravel().tolist()

        # The base pose: T_map_base = T_map_camera @ T_camera_base, its covariance checked
        # against central differences of that composition.
        base = h.with_stamp("base", ns)[0]
        assert base.header.frame_id == "map"
        T_world_camera = pose_to_matrix(expected_position(rgb), QUAT_WXYZ)
        T_camera_base = extrinsic_from_parameters(
            EXTRINSIC["camera_to_base_translation_m"], EXTRINSIC["camera_to_base_quat_xyzw"]
        )
        T_world_base = T_world_camera @ T_camera_base
        p, q = base.pose.pose.position, base.pose.pose.orientation
        np.testing.assert_allclose([p.x, p.y, p.z], T_world_base[:3, 3], atol=1e-5)
        np.testing.assert_allclose(
            quat_wxyz_to_matrix([q.w, q.x, q.y, q.z]), T_world_base[:3, :3], atol=1e-5
        )
        reference = numerical_base_covariance(T_world_camera, T_camera_base, cov)
        np.testing.assert_allclose(
            np.asarray(base.pose.covariance).reshape(6, 6), reference, rtol=1e-4, atol=1e-9
        )

        assert h.peer.spin_until(
            lambda: "covariance_source" in h.latest_diag_values(), 10.0, h.proc
        )
        values = h.latest_diag_values()
        assert ("log_variance" in values["covariance_source"]) is use_model_covariance
        assert values["base_frame"] == "base_link"
    finally:
        h.close()


def test_uncertain_estimates_are_gated(tmp_path):
    model = make_test_model(str(tmp_path / "uncertain.onnx"), uncertainty="diagonal")
    params = {
        "model_path": model,
        "max_position_stddev_m": 0.5,
        "base_frame": "base_link",
        "diagnostics_period_s": 0.2,
    }
    h = Harness(tmp_path, params)
    try:
        h.wait_connected()
        # Red: log-variance of x = 2 ln 0.1 + 4 -> stddev 0.74 m > 0.5 m.
        bad, bad_ns = h.solid_frame((255, 0, 0))
        assert h.send_until(bad, lambda: h.with_stamp("est", bad_ns)), h.proc.output
        est = h.with_stamp("est", bad_ns)[0]
        assert not est.accepted
        assert est.rejection_reason == PoseEstimate.REJECTED_POSITION_STDDEV == "position_stddev"
        assert est.stddev[0] == pytest.approx(math.exp(0.5 * (2 * math.log(0.1) + 4)), rel=1e-5)

        good, good_ns = h.solid_frame((10, 20, 30))
        assert h.send_until(
            good, lambda: h.with_stamp("base", good_ns) and h.with_stamp("est", good_ns)
        ), h.proc.output
        assert h.with_stamp("est", good_ns)[0].accepted
        for key in ("pose", "cov", "base"):
            assert not h.with_stamp(key, bad_ns), f"a gated estimate was published on {key}"
        assert not any(stamp_ns(t.transforms[0]) == bad_ns for t in h.received["tf"])
        assert h.peer.spin_until(
            lambda: int(h.latest_diag_values().get("frames_rejected_gated", 0)) >= 1,
            10.0,
            h.proc,
        )
        values = h.latest_diag_values()
        assert int(values["frames_gated_position_stddev"]) >= 1
        assert "gated" in values["last_error"]
    finally:
        output = h.close()
    assert "max_position_stddev_m" in output


def test_speed_gate_rejects_jumps_and_recovers(tmp_path, model_path):
    params = {
        "model_path": model_path,
        "max_speed_m_s": 1.0,
        "speed_gate_margin_m": 0.0,
        "speed_gate_max_rejections": 2,
        "speed_gate_timeout_s": 0.0,
        "diagnostics_period_s": 0.2,
    }
    h = Harness(tmp_path, params)
    try:
        h.wait_connected()
        start, t0 = h.solid_frame((0, 0, 0))
        assert h.send_until(start, lambda: h.poses_with_stamp(t0)), h.proc.output
        # 1.7 m away 0.1 s later, again and again: rejected until the gate gives up on its
        # reference (after 2 rejections in a row) and accepts the new place.
        decisions = []
        for k in range(1, 8):
            ns = t0 + k * 100_000_000
            far = image_msg(solid_image((255, 255, 255)), "rgb8", ns)
            assert h.send_until(far, lambda ns=ns: h.with_stamp("est", ns)), h.proc.output
            est = h.with_stamp("est", ns)[-1]
            decisions.append((est.accepted, est.rejection_reason))
            if est.accepted:
                break
        assert decisions[0] == (False, "speed")
        assert decisions[-1] == (True, "")
        assert len(decisions) <= 3
        assert h.peer.spin_until(
            lambda: int(h.latest_diag_values().get("speed_gate_resets", 0)) >= 1, 10.0, h.proc
        )
        assert int(h.latest_diag_values()["frames_gated_speed"]) >= 1
    finally:
        h.close()


@pytest.mark.parametrize(
    "case, params, expected",
    [
        ("base_frame equals frame_id", {"base_frame": "map"}, "base_frame and frame_id"),
        ("base_frame with a slash", {"base_frame": "/base_link"}, "base_frame '/base_link'"),
        (
            "non-unit extrinsic quaternion",
            {"camera_to_base_quat_xyzw": [0.0, 0.0, 0.0, 2.0]},
            "camera_to_base_quat_xyzw",
        ),
        (
            "extrinsic translation of 2 values",
            {"camera_to_base_translation_m": [0.1, 0.2]},
            "camera_to_base_translation_m",
        ),
        ("negative gate", {"max_speed_m_s": -1.0}, "max_speed_m_s"),
        ("negative reset count", {"speed_gate_max_rejections": -1}, "speed_gate_max_rejections"),
    ],
)
def test_bad_uncertainty_and_base_parameters_fail_at_startup(tmp_path, case, params, expected):
    model = make_test_model(str(tmp_path / "m.onnx"))
    proc = NodeProcess(next_domain_id(), {"model_path": model, **params}, cwd=tmp_path)
    code = proc.wait_exit(timeout_s=60)
    assert code != 0, f"{case}: exited 0\n{proc.output}"
    assert expected in proc.output, f"{case}: message lacks {expected!r}:\n{proc.output}"
