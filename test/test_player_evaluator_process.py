"""dataset_player and pose_evaluator as their own processes, over real DDS.

A tiny Cambridge dataset is generated per test. The test process is the relocalizer: it echoes
every ground-truth pose as an estimate, unchanged (a perfect relocalizer) or with a known
offset, and the evaluator's summary.json must show exactly that error for every frame. Waits
are on counts and process output, never on fixed sleeps.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import transforms3d.quaternions as t3q
from geometry_msgs.msg import PoseStamped
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from posenet_core.image_codec import image_msg_to_rgb
from posenet_ros.player_node import large_image_hint

import ros_harness
from ros_harness import REPO_ROOT, next_domain_id, ros_env

FRAMES = 6
SIZE_HW = (24, 32)
T0_S = 100.0
PERIOD_S = 0.1
TIMEOUT_S = 30.0


# --------------------------------------------------------------------------------- helpers


def executable(name: str) -> tuple[list[str], dict[str, str]]:
    """Command and extra environment to run an executable of the package.

    The installed one (install/posenet_ros/lib/posenet_ros/NAME) is preferred; until the
    package is rebuilt with it, the entry file in scripts/ runs with this Python and the source
    folder on PYTHONPATH (the player and the evaluator need no generated message of their own).
    """
    installed = REPO_ROOT / "install" / "posenet_ros" / "lib" / "posenet_ros" / name
    if installed.exists():
        return [str(installed)], {}
    found = shutil.which(name)
    if found:
        return [found], {}
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return [sys.executable, str(REPO_ROOT / "scripts" / name)], {"PYTHONPATH": path}


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return "''"
    return str(value)


class RosProcess:
    """One executable with --ros-args; its output is collected line by line as it comes."""

    def __init__(self, name: str, domain_id: int, params: dict, cwd: Path) -> None:
        cmd, extra_env = executable(name)
        cmd = [*cmd, "--ros-args"]
        for key, value in params.items():
            cmd += ["-p", f"{key}:={_param_text(value)}"]
        self.name = name
        env = ros_env(domain_id)
        env.update(extra_env)
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=str(cwd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._lines.append("")  # end of output
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "".join(self._lines)

    def wait_for_output(self, text: str, timeout_s: float = TIMEOUT_S) -> bool:
        """Until ``text`` appears in the output (False on timeout or when the process ends)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: text in "".join(self._lines) or (self._lines and self._lines[-1] == ""),
                timeout=timeout_s,
            ) and text in "".join(self._lines)

    def wait_exit(self, timeout_s: float = TIMEOUT_S) -> int:
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(timeout=5.0)
        return code

    def stop(self) -> int:
        """SIGINT (what Ctrl-C and ros2 launch send); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.wait_exit(10.0)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def colour(i: int) -> tuple[int, int, int]:
    return (40 * i, 255 - 40 * i, 7)


def position(i: int) -> np.ndarray:
    a = 2.0 * math.pi * i / FRAMES
    return np.array([3.0 * math.cos(a), 2.0 * math.sin(a), 1.0 + 0.1 * i])


def quat_world_camera(i: int) -> np.ndarray:
    return t3q.axangle2quat([0.2, 1.0, 0.1], 0.4 * i + 0.1)


def make_dataset(
    root: Path, frames: int = FRAMES, timestamps: bool = True, camera: str = "intrinsics.json"
) -> Path:
    """A Cambridge dataset: PNGs, dataset_test.txt, poses_test.csv and the camera in
    ``camera``: intrinsics.json, or dino_par.txt (Middlebury's per-image K [R|t] rows)."""
    (root / "images").mkdir(parents=True)
    lines = ["Visual Landmark Dataset V1", "ImageFile, Camera Position [X Y Z W P Q R]", ""]
    rows = ["image,timestamp_s,x_m,y_m,z_m,qw,qx,qy,qz"]
    for i in range(frames):
        name = f"images/frame{i:02d}.png"
        rgb = np.broadcast_to(np.array(colour(i), np.uint8), (*SIZE_HW, 3))
        cv2.imwrite(str(root / name), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        q = quat_world_camera(i)
        # Cambridge: centre and the world-to-camera quaternion (the conjugate).
        q_cambridge = (q[0], -q[1], -q[2], -q[3])
        lines.append(name + " " + " ".join(repr(float(v)) for v in (*position(i), *q_cambridge)))
        stamp = T0_S + PERIOD_S * i
        rows.append(f"{name},{stamp!r}," + ",".join(repr(float(v)) for v in (*position(i), *q)))
    (root / "dataset_test.txt").write_text("\n".join(lines) + "\n")
    if timestamps:
        (root / "poses_test.csv").write_text("\n".join(rows) + "\n")
    if camera == "intrinsics.json":
        intrinsics = {"fx": 30.0, "fy": 31.0, "cx": 15.5, "cy": 11.5, "width": 32, "height": 24}
        (root / "intrinsics.json").write_text(json.dumps(intrinsics))
    else:
        k_r_t = "30 0 15.5 0 31 11.5 0 0 1  1 0 0 0 1 0 0 0 1  0 0 1"
        par = [
            "imgname.png k11 k12 k13 k21 k22 k23 k31 k32 k33 r11 r12 r13 r21 r22 r23 r31 r32"
            " r33 t1 t2 t3"
        ]
        par += [f"frame{i:02d}.png {k_r_t}" for i in range(frames)]
        (root / camera).write_text("\n".join(par) + "\n")
    return root


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def frame_index(msg: PoseStamped) -> int:
    p = msg.pose.position
    distances = [np.linalg.norm(position(i) - [p.x, p.y, p.z]) for i in range(FRAMES)]
    return int(np.argmin(distances))


class Relocalizer:
    """The test peer: records what the player sends and echoes ground truth as estimates."""

    def __init__(self, domain_id: int, offset_m=(0.0, 0.0, 0.0), offset_quat=(1, 0, 0, 0)):
        self.peer = ros_harness.TestPeer(domain_id, name="fake_relocalizer")
        node = self.peer.node
        self.offset_m = np.asarray(offset_m, float)
        self.offset_quat = np.asarray(offset_quat, float)
        self.images: list[Image] = []
        self.infos: list[CameraInfo] = []
        self.ground_truth: list[PoseStamped] = []
        self.pose_pub = node.create_publisher(PoseStamped, "/pose", 100)
        node.create_subscription(Image, "/image", self.images.append, qos_profile_sensor_data)
        node.create_subscription(
            CameraInfo, "/camera_info", self.infos.append, qos_profile_sensor_data
        )
        node.create_subscription(PoseStamped, "/ground_truth/pose", self._on_ground_truth, 100)

    def _on_ground_truth(self, msg: PoseStamped) -> None:
        self.ground_truth.append(msg)
        estimate = PoseStamped()
        estimate.header = msg.header
        p, o = msg.pose.position, msg.pose.orientation
        x, y, z = np.array([p.x, p.y, p.z]) + self.offset_m
        qw, qx, qy, qz = t3q.qmult([o.w, o.x, o.y, o.z], self.offset_quat)
        estimate.pose.position.x, estimate.pose.position.y, estimate.pose.position.z = x, y, z
        o = estimate.pose.orientation
        o.w, o.x, o.y, o.z = float(qw), float(qx), float(qy), float(qz)
        self.pose_pub.publish(estimate)

    def close(self) -> None:
        self.peer.close()


def _fail(message: str, *procs: RosProcess) -> None:
    outputs = "\n".join(f"--- {p.name} ---\n{p.output}" for p in procs)
    for p in procs:
        p.kill()
    pytest.fail(f"{message}\n{outputs}")


# ------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize(
    "case, camera, player_params, evaluator_params, offset_m, offset_deg",
    [
        pytest.param(
            "perfect relocalizer, clock stamps, rgb8, ends after expected_count, camera_info "
            "from Middlebury's dino_par.txt",
            "dino_par.txt",
            {"stamp_mode": "now", "encoding": "rgb8"},
            {"expected_count": FRAMES},
            (0.0, 0.0, 0.0),
            0.0,
            id="perfect",
        ),
        pytest.param(
            "known offset, dataset stamps, bgr8, ends when idle",
            "intrinsics.json",
            {"stamp_mode": "dataset", "encoding": "bgr8", "publish_camera_info": False},
            {"idle_timeout_s": 1.0},
            (0.3, -0.4, 0.0),
            10.0,
            id="offset",
        ),
    ],
)
def test_player_relocalizer_evaluator(
    tmp_path, case, camera, player_params, evaluator_params, offset_m, offset_deg
):
    dataset = make_dataset(tmp_path / "scene", camera=camera)
    output_dir = tmp_path / "eval"
    domain = next_domain_id()
    offset_quat = t3q.axangle2quat([0.0, 0.0, 1.0], math.radians(offset_deg))
    relocalizer = Relocalizer(domain, offset_m, offset_quat)
    evaluator = RosProcess(
        "pose_evaluator",
        domain,
        {"output_dir": str(output_dir), "print_every": 2, **evaluator_params},
        tmp_path,
    )
    player = None
    try:
        # The evaluator must hear the first estimate: wait until it subscribed to /pose.
        if not relocalizer.peer.spin_until(
            lambda: relocalizer.pose_pub.get_subscription_count() >= 1, TIMEOUT_S, None
        ):
            _fail(f"{case}: the evaluator never subscribed to /pose", evaluator)
        player = RosProcess(
            "dataset_player",
            domain,
            {
                "dataset": str(dataset),
                "rate_hz": 20.0,
                "wait_for_subscribers": 1,
                "wait_for_ground_truth_subscribers": 2,
                **player_params,
            },
            tmp_path,
        )
        if not relocalizer.peer.spin_until(
            lambda: len(relocalizer.ground_truth) >= FRAMES, TIMEOUT_S, None
        ):
            _fail(f"{case}: {len(relocalizer.ground_truth)} ground truth", player, evaluator)
        player_code = player.wait_exit()
        evaluator_code = evaluator.wait_exit()
    finally:
        relocalizer.close()
        if player is not None:
            player.kill()
        evaluator.kill()
    assert player_code == 0, player.output
    assert evaluator_code == 0, evaluator.output

    # The player: every frame's ground truth, in order, in the scene frame, exactly.
    ground_truth = relocalizer.ground_truth
    assert [frame_index(m) for m in ground_truth] == list(range(FRAMES))
    for i, msg in enumerate(ground_truth):
        assert msg.header.frame_id == "map"
        p, o = msg.pose.position, msg.pose.orientation
        np.testing.assert_allclose([p.x, p.y, p.z], position(i), atol=1e-12)
        np.testing.assert_allclose([o.w, o.x, o.y, o.z], quat_world_camera(i), atol=1e-12)
    stamps = [stamp_ns(m) for m in ground_truth]
    assert stamps == sorted(set(stamps))
    if player_params["stamp_mode"] == "dataset":
        expected = [round((T0_S + PERIOD_S * i) * 1e9) for i in range(FRAMES)]
        assert stamps == expected
    # Images (best effort: each one that arrived is checked) share their frame's stamp.
    assert relocalizer.images, player.output
    by_stamp = {stamp_ns(m): frame_index(m) for m in ground_truth}
    for image in relocalizer.images:
        assert image.encoding == player_params["encoding"]
        assert image.header.frame_id == "camera_optical"
        rgb = image_msg_to_rgb(image)
        assert rgb.shape == (*SIZE_HW, 3)
        assert rgb[0, 0].tolist() == list(colour(by_stamp[stamp_ns(image)]))
    assert bool(relocalizer.infos) == player_params.get("publish_camera_info", True)
    for info in relocalizer.infos:
        assert stamp_ns(info) in by_stamp
        assert (info.width, info.height, info.distortion_model) == (32, 24, "plumb_bob")
        assert list(info.k) == [30.0, 0.0, 15.5, 0.0, 31.0, 11.5, 0.0, 0.0, 1.0]
        assert list(info.d) == [0.0] * 5
    if relocalizer.infos:
        assert f"camera_info 32x24 fx 30 fy 31 from {camera}" in player.output
    assert f"done: published {FRAMES} of {FRAMES} frame(s)" in player.output

    # The evaluator: every frame matched, with exactly the injected error.
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["count"] == FRAMES, evaluator.output
    assert summary["unmatched_estimates"] == summary["unmatched_ground_truth"] == 0
    expected_m = float(np.linalg.norm(offset_m))
    for key in ("median_translation_m", "max_translation_m"):
        assert summary[key] == pytest.approx(expected_m, abs=1e-9)
    for key in ("median_rotation_deg", "max_rotation_deg"):
        assert summary[key] == pytest.approx(offset_deg, abs=1e-6)
    for name in ("errors.csv", "trajectory.png", "errors_over_time.png", "error_cdf.png"):
        assert (output_dir / name).is_file(), name
    assert len((output_dir / "errors.csv").read_text().splitlines()) == FRAMES + 1
    assert f"final: {FRAMES} matched: median {expected_m:.3f} m" in evaluator.output
    assert "running median" in evaluator.output


def test_player_loops_skips_unreadable_images_and_checks_camera_info_size(tmp_path):
    dataset = make_dataset(tmp_path / "scene", frames=3)
    (dataset / "images" / "frame01.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    intrinsics = json.loads((dataset / "intrinsics.json").read_text())
    (dataset / "intrinsics.json").write_text(json.dumps({**intrinsics, "width": 64}))
    domain = next_domain_id()
    relocalizer = Relocalizer(domain)
    player = RosProcess(
        "dataset_player",
        domain,
        {
            "dataset": str(dataset),
            "rate_hz": 50.0,
            "loop": True,
            "stamp_mode": "dataset",
            "wait_for_ground_truth_subscribers": 1,
        },
        tmp_path,
    )
    try:
        if not relocalizer.peer.spin_until(
            lambda: len(relocalizer.ground_truth) >= 5, TIMEOUT_S, player
        ):
            _fail(f"{len(relocalizer.ground_truth)} ground-truth poses", player)
        code = player.stop()
    finally:
        relocalizer.close()
        player.kill()
    assert code == 0, player.output
    received = relocalizer.ground_truth[:5]
    assert [frame_index(m) for m in received] == [0, 2, 0, 2, 0]
    # A loop lasts the sequence's span plus one mean interval: 0.2 s + 0.1 s.
    expected_s = [T0_S, T0_S + 0.2, T0_S + 0.3, T0_S + 0.5, T0_S + 0.6]
    assert [stamp_ns(m) for m in received] == [round(t * 1e9) for t in expected_s]
    output = player.output
    assert "skipped frame 1" in output and "frame01.png: cannot read image" in output
    # The intrinsics are for 64x24 images: no camera_info rather than a wrong one.
    assert not relocalizer.infos
    assert "is 32x24 but intrinsics.json is for 64x24" in output


def test_evaluator_counts_unmatched_and_invalid_and_writes_results_on_sigint(tmp_path):
    domain = next_domain_id()
    reference = tmp_path / "offline_summary.json"
    reference.write_text(json.dumps({"median_translation_m": 0.123, "median_rotation_deg": 4.5}))
    peer = ros_harness.TestPeer(domain)
    gt_pub = peer.node.create_publisher(PoseStamped, "/ground_truth/pose", 100)
    est_pub = peer.node.create_publisher(PoseStamped, "/pose", 100)
    evaluator = RosProcess(
        "pose_evaluator",
        domain,
        {
            "output_dir": str(tmp_path / "eval"),
            "print_every": 1,
            "reference_summary": str(reference),
        },
        tmp_path,
    )

    def msg(seconds: int, x: float, frame: str = "map") -> PoseStamped:
        m = PoseStamped()
        m.header.stamp.sec = seconds
        m.header.frame_id = frame
        m.pose.position.x = x
        m.pose.orientation.w = 1.0
        return m

    try:
        if not peer.spin_until(
            lambda: gt_pub.get_subscription_count() >= 1 and est_pub.get_subscription_count() >= 1,
            TIMEOUT_S,
            None,
        ):
            _fail("the evaluator never subscribed", evaluator)
        # One topic is delivered in order: when the last of a topic is matched, all of it is in.
        for seconds in (4, 1, 2, 3):
            gt_pub.publish(msg(seconds, 0.0))
        broken = msg(5, float("nan"), "odom")
        for m in (broken, msg(9, 1.0, "odom"), msg(1, 0.5), msg(2, 0.25), msg(3, 0.5)):
            est_pub.publish(m)
        if not evaluator.wait_for_output("3 matched"):
            _fail("no third match", evaluator)
        code = evaluator.stop()
    finally:
        peer.close()
        evaluator.kill()
    assert code == 0, evaluator.output
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["count"] == 3
    assert summary["unmatched_estimates"] == 1  # stamp 9
    assert summary["unmatched_ground_truth"] == 1  # stamp 4
    assert summary["invalid_estimates"] == 1
    assert summary["median_translation_m"] == pytest.approx(0.5)
    assert summary["reference"]["median_translation_m"] == 0.123
    output = evaluator.output
    assert "reference 0.123 m, 4.50 deg" in output  # running line
    assert "final: 3 matched: median 0.500 m" in output
    assert "reference median 0.123 m, 4.50 deg" in output
    assert "unmatched: 1 estimate(s), 1 ground-truth pose(s)" in output
    assert "not finite" in output
    assert "frame 'odom'" in output  # estimates and ground truth in different frames
    assert (tmp_path / "eval" / "trajectory.png").is_file()


# ------------------------------------------------------------------------- start-up failures


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _bad_line_dataset(root: Path) -> str:
    make_dataset(root, frames=1)
    text = (root / "dataset_test.txt").read_text().replace("images/frame00.png", "x.png 1 2")
    (root / "dataset_test.txt").write_text(text)
    return str(root)


@pytest.mark.parametrize(
    "name, make_params, expected",
    [
        ("dataset_player", lambda d: {}, "parameter dataset is empty"),
        ("dataset_player", lambda d: {"dataset": str(d / "nope")}, "dataset folder not found"),
        (
            "dataset_player",
            lambda d: {"dataset": str(make_dataset(d / "s")), "split": "val"},
            "parameter split is 'val'; allowed: train, test",
        ),
        (
            "dataset_player",
            lambda d: {"dataset": str(make_dataset(d / "s")), "split": "train"},
            "dataset_train.txt: Cambridge split file not found",
        ),
        (
            "dataset_player",
            lambda d: {"dataset": str(make_dataset(d / "s")), "rate_hz": 0.0},
            "rate_hz is 0.0; must be a finite number > 0",
        ),
        (
            "dataset_player",
            lambda d: {"dataset": str(make_dataset(d / "s")), "rate_hz": -5.0},
            "rate_hz is -5.0",
        ),
        (
            "dataset_player",
            lambda d: {"dataset": str(make_dataset(d / "s")), "rate_hz": 10},
            "expecting type 'DOUBLE'",
        ),
        (
            "dataset_player",
            lambda d: {"dataset": str(make_dataset(d / "s")), "encoding": "yuv9"},
            "parameter encoding is 'yuv9'; allowed: rgb8, bgr8",
        ),
        (
            "dataset_player",
            lambda d: {"dataset": str(make_dataset(d / "s")), "max_frames": -1},
            "max_frames is -1",
        ),
        (
            "dataset_player",
            lambda d: {
                "dataset": str(make_dataset(d / "s", timestamps=False)),
                "stamp_mode": "dataset",
            },
            "no poses_test.csv",
        ),
        (
            "dataset_player",
            lambda d: {"dataset": _bad_line_dataset(d / "s")},
            "dataset_test.txt:4: expected 8 fields",
        ),
        (
            "pose_evaluator",
            lambda d: {"max_stamp_difference_s": -0.1, "output_dir": str(d)},
            "max_stamp_difference_s is -0.1",
        ),
        (
            "pose_evaluator",
            lambda d: {"print_every": 0, "output_dir": str(d)},
            "print_every is 0",
        ),
        (
            "pose_evaluator",
            lambda d: {"reference_summary": _write(d / "r.json", "{"), "output_dir": str(d)},
            "r.json:1: not valid JSON",
        ),
        (
            "pose_evaluator",
            lambda d: {"output_dir": _write(d / "file", "x") + "/eval"},
            "parameter output_dir: cannot create",
        ),
        (
            "pose_evaluator",
            lambda d: {"estimate_topic": "/gt", "ground_truth_topic": "gt", "output_dir": str(d)},
            "both resolve to '/gt'",
        ),
    ],
)
def test_startup_failures_exit_nonzero_with_a_clear_message(tmp_path, name, make_params, expected):
    proc = RosProcess(name, next_domain_id(), make_params(tmp_path), tmp_path)
    code = proc.wait_exit(timeout_s=TIMEOUT_S)
    assert code == 2, f"{name} exited {code}\n{proc.output}"
    assert "cannot start" in proc.output and expected in proc.output, proc.output


@pytest.mark.parametrize(
    "image_bytes, rmw, environ, warns",
    [
        (640 * 480 * 3, "rmw_fastrtps_cpp", {}, True),
        (640 * 480 * 3, "rmw_fastrtps_dynamic_cpp", {"FASTDDS_DEFAULT_PROFILES_FILE": ""}, True),
        (640 * 480 * 3, "rmw_fastrtps_cpp", {"FASTRTPS_DEFAULT_PROFILES_FILE": "/p.xml"}, False),
        (640 * 480 * 3, "rmw_fastrtps_cpp", {"FASTDDS_DEFAULT_PROFILES_FILE": "/p.xml"}, False),
        (640 * 480 * 3, "rmw_cyclonedds_cpp", {}, False),
        (320 * 240 * 3, "rmw_fastrtps_cpp", {}, False),
    ],
)
def test_large_image_hint(image_bytes, rmw, environ, warns):
    hint = large_image_hint(image_bytes, rmw, environ)
    assert bool(hint) == warns
    if warns:
        assert "900 KiB" in hint and "FASTRTPS_DEFAULT_PROFILES_FILE" in hint
