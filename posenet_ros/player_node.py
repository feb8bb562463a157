"""The dataset player: a dataset's images as a camera stream, with its ground truth beside them.

Plays one split of a dataset folder (Cambridge Landmarks or 7-Scenes layout, see
``posenet_core.datasets``) at a fixed rate, once or looping, so the relocalizer can be run
and evaluated without a camera (``pose_evaluator`` compares its output with the ground truth).

Publishes   ``image`` (sensor_msgs/Image, best effort like a camera driver),
            ``camera_info`` (sensor_msgs/CameraInfo, when the dataset has intrinsics: the
            camera posenet_core.datasets.find_intrinsics finds, as the map builder and
            evaluation do: intrinsics.json, Middlebury's dino_par.txt, 7-Scenes' published
            calibration),
            ``ground_truth/pose`` (geometry_msgs/PoseStamped, reliable: ``T_world_camera`` of
            the camera's optical frame in ``ground_truth_frame``)
The three messages of a frame carry the same stamp: the ROS clock at publish time
(``stamp_mode: now``) or the dataset's capture time (``stamp_mode: dataset``, from
``poses_{split}.csv``; each loop adds the sequence's length so stamps keep increasing).
Images are read and converted on a background thread a few frames ahead; none is preloaded.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from collections.abc import Mapping

import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.task import Future
from rclpy.utilities import get_rmw_implementation_identifier
from sensor_msgs.msg import CameraInfo, Image

from posenet_core.datasets import SPLITS, CameraIntrinsics, PoseRecord, read_dataset
from posenet_core.image_codec import rgb_to_image_fields
from posenet_core.images import read_rgb
from posenet_ros.errors import PoseNetError
from posenet_ros.playback import FramePrefetcher, PlaybackItem, loop_period_s
from posenet_ros.ros_common import (
    CAMERA_QOS,
    declare_checked,
    reliable_qos,
    run_node,
    spin_until_stopped,
)
from posenet_ros.ros_common import descriptor as make_descriptor
from posenet_ros.stats import RateLimiter

# What a camera driver offers: best effort, newest frames only. Matches the relocalizer's
# best-effort subscription (a reliable publisher would too, but would stall on slow readers).
IMAGE_QOS = CAMERA_QOS
# Ground truth must not be lost: every pose lost is an estimate the evaluator cannot score.
GROUND_TRUTH_QOS = reliable_qos(100)

ENCODINGS = ("rgb8", "bgr8")
STAMP_MODES = ("now", "dataset")
PREFETCH_DEPTH = 4
PROGRESS_PERIOD_S = 5.0
ACK_TIMEOUT_S = 5.0
_NS_PER_S = 1_000_000_000
# Fast DDS's default shared-memory segment; a larger message goes over UDP in 64 kB fragments,
# and a best-effort reader loses the whole image when it misses one (ros2/rmw_fastrtps#739).
FASTDDS_DEFAULT_SEGMENT_BYTES = 512 * 1024
FASTDDS_PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


def _descriptor(description: str, kind: int, constraints: str = "") -> ParameterDescriptor:
    # Read-only: configured once at start-up; a change would not be applied.
    return make_descriptor(description, kind, read_only=True, constraints=constraints)


def large_image_hint(image_bytes: int, rmw: str, environ: Mapping[str, str]) -> str:
    """A warning when images are too large for Fast DDS's default shared memory, else "".

    Measured here: 640x480 rgb8 images (921,600 bytes) published best effort at 5 Hz reached a
    best-effort subscriber on the same machine 0-4 times in 20; with a Fast DDS profile whose
    SHM ``segment_size`` is 16 MB, 20 of 20.
    """
    if not rmw.startswith("rmw_fastrtps") or image_bytes < FASTDDS_DEFAULT_SEGMENT_BYTES * 0.95:
        return ""
    if any(environ.get(name) for name in FASTDDS_PROFILE_VARIABLES):
        return ""
    return (
        f"images of {image_bytes / 1024:.0f} KiB are near or above Fast DDS's default 512 KiB"
        " shared-memory segment: best-effort subscribers (the relocalizer) will lose most"
        " frames. Set FASTRTPS_DEFAULT_PROFILES_FILE to a Fast DDS profile with a larger SHM"
        " segment_size (and useBuiltinTransports false), or play smaller images"
    )


def camera_info_msg(intrinsics: CameraIntrinsics) -> CameraInfo:
    """CameraInfo of a pinhole camera (no rectification); no header. Distortion: plumb_bob
    (five zeros when there is none), rational_polynomial for eight coefficients."""
    info = CameraInfo()
    info.width, info.height = intrinsics.width, intrinsics.height
    d = [float(v) for v in intrinsics.distortion]
    info.distortion_model = "rational_polynomial" if len(d) == 8 else "plumb_bob"
    info.d = d + [0.0] * (5 - len(d)) if len(d) < 5 else d
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class DatasetPlayerNode(Node):
    """Publishes a dataset split's images, camera info and ground-truth poses at ``rate_hz``."""

    def __init__(self, **kwargs) -> None:
        super().__init__("dataset_player", **kwargs)
        p = self._p = declare_checked(self, self._parameter_table(), self._check_parameters)

        dataset = read_dataset(p["dataset"], p["split"])
        frames = list(dataset.frames)
        if p["max_frames"] > 0:
            frames = frames[: p["max_frames"]]
        if p["stamp_mode"] == "dataset" and not dataset.has_timestamps:
            raise PoseNetError(
                f"stamp_mode is 'dataset' but {dataset.folder} has no poses_{p['split']}.csv"
                " with timestamps; use stamp_mode:=now"
            )
        self._frames = frames
        self._loop_period_s = loop_period_s(frames) if p["stamp_mode"] == "dataset" else 0.0
        self._camera_info = None
        if p["publish_camera_info"] and dataset.intrinsics is not None:
            self._camera_info = camera_info_msg(dataset.intrinsics)

        self.image_pub = self.create_publisher(Image, "image", IMAGE_QOS)
        self.info_pub = None
        if self._camera_info is not None:
            self.info_pub = self.create_publisher(CameraInfo, "camera_info", IMAGE_QOS)
        self.ground_truth_pub = self.create_publisher(
            PoseStamped, "ground_truth/pose", GROUND_TRUTH_QOS
        )

        self.done: Future = Future()
        self.published = 0
        self.failed = 0
        self.late_ticks = 0
        self._info_skipped = 0
        self._log_limit = RateLimiter(period_s=5.0)
        self._prefetcher: FramePrefetcher | None = None
        self._publish_timer = None
        self._started_at = time.monotonic()
        self._last_progress = self._started_at

        self._camera_source = dataset.intrinsics_source
        if p["publish_camera_info"] and dataset.intrinsics is None:
            camera_note = (
                f"no camera_info ({dataset.folder} has no intrinsics.json or dino_par.txt, and "
                f"{dataset.format} has no published calibration)"
            )
        elif self._camera_info is None:
            camera_note = "no camera_info (publish_camera_info is false)"
        else:
            i = dataset.intrinsics
            camera_note = (
                f"camera_info {i.width}x{i.height} fx {i.fx:g} fy {i.fy:g} from "
                f"{dataset.intrinsics_source}"
            )
        self.get_logger().info(
            f"dataset_player: {len(frames)} frame(s) of {dataset.format} split '{p['split']}'"
            f" in {dataset.folder} at {p['rate_hz']:g} Hz"
            f"{', looping' if p['loop'] else ''}, {p['encoding']} on"
            f" '{self.resolve_topic_name('image')}' (frame '{p['frame_id']}'), ground truth on"
            f" '{self.resolve_topic_name('ground_truth/pose')}' (frame"
            f" '{p['ground_truth_frame']}'), stamps: {p['stamp_mode']}, {camera_note}"
        )
        self._waiting = p["wait_for_subscribers"] > 0 or p["wait_for_ground_truth_subscribers"] > 0
        if self._waiting:
            self.get_logger().info(
                f"waiting for {p['wait_for_subscribers']} subscriber(s) on image and"
                f" {p['wait_for_ground_truth_subscribers']} on ground_truth/pose"
                + (f" (at most {p['wait_timeout_s']:g} s)" if p["wait_timeout_s"] > 0 else "")
            )
            self._wait_timer = self.create_timer(0.02, self._check_subscribers)
        else:
            self._start_playback()

    # ----------------------------------------------------------------------------- parameters
    @staticmethod
    def _parameter_table() -> list[tuple[str, object, ParameterDescriptor]]:
        """(name, default, descriptor) of every parameter."""
        S, B = ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_BOOL
        INT, D = ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_DOUBLE
        params = [
            (
                "dataset",
                "",
                _descriptor(
                    "Dataset folder (Cambridge: dataset_train.txt/dataset_test.txt; 7-Scenes:"
                    " TrainSplit.txt/TestSplit.txt), or FORMAT:PATH with FORMAT cambridge or"
                    " 7scenes.",
                    S,
                ),
            ),
            ("split", "test", _descriptor("Split to play.", S, "one of: " + ", ".join(SPLITS))),
            ("rate_hz", 10.0, _descriptor("Frames per second.", D, "> 0")),
            ("loop", False, _descriptor("Start again after the last frame, forever.", B)),
            (
                "max_frames",
                0,
                _descriptor("Play only the first N frames of the split; 0: all.", INT, ">= 0"),
            ),
            (
                "frame_id",
                "camera_optical",
                _descriptor("frame_id of image and camera_info (the camera's optical frame).", S),
            ),
            (
                "ground_truth_frame",
                "map",
                _descriptor("frame_id of ground_truth/pose (the scene frame).", S),
            ),
            (
                "encoding",
                "rgb8",
                _descriptor("Image encoding.", S, "one of: " + ", ".join(ENCODINGS)),
            ),
            (
                "publish_camera_info",
                True,
                _descriptor(
                    "Publish camera_info when the dataset has intrinsics (intrinsics.json,"
                    " dino_par.txt, 7-Scenes' published calibration).",
                    B,
                ),
            ),
            (
                "stamp_mode",
                "now",
                _descriptor(
                    "now: stamp each frame with the ROS clock at publish time; dataset: with"
                    " its capture time from poses_{split}.csv. Image, camera_info and ground"
                    " truth of a frame always share the stamp.",
                    S,
                    "one of: " + ", ".join(STAMP_MODES),
                ),
            ),
            (
                "wait_for_subscribers",
                0,
                _descriptor(
                    "Before the first frame, wait until this many subscribers are matched on"
                    " image (so no frame is lost to discovery).",
                    INT,
                    ">= 0",
                ),
            ),
            (
                "wait_for_ground_truth_subscribers",
                0,
                _descriptor(
                    "Before the first frame, wait until this many subscribers are matched on"
                    " ground_truth/pose (e.g. 1 for pose_evaluator).",
                    INT,
                    ">= 0",
                ),
            ),
            (
                "wait_timeout_s",
                30.0,
                _descriptor(
                    "Longest wait for subscribers, seconds; then playback starts anyway with a"
                    " warning. 0: wait forever.",
                    D,
                    ">= 0",
                ),
            ),
            (
                "exit_when_done",
                True,
                _descriptor(
                    "Exit (status 0) after the last frame when not looping; else keep running.",
                    B,
                ),
            ),
        ]
        return params

    @staticmethod
    def _check_parameters(p: dict) -> str:
        if not p["dataset"]:
            return (
                "parameter dataset is empty: set it to a dataset folder, e.g."
                " '--ros-args -p dataset:=/data/KingsCollege -p split:=test'"
            )
        checks = (
            ("split", SPLITS),
            ("encoding", ENCODINGS),
            ("stamp_mode", STAMP_MODES),
        )
        for name, allowed in checks:
            if p[name] not in allowed:
                return f"parameter {name} is {p[name]!r}; allowed: {', '.join(allowed)}"
        if not p["rate_hz"] > 0.0 or p["rate_hz"] == float("inf"):
            return f"parameter rate_hz is {p['rate_hz']!r}; must be a finite number > 0 (Hz)"
        for name in ("max_frames", "wait_for_subscribers", "wait_for_ground_truth_subscribers"):
            if p[name] < 0:
                return f"parameter {name} is {p[name]}; must be >= 0"
        if not p["wait_timeout_s"] >= 0.0:
            return (
                f"parameter wait_timeout_s is {p['wait_timeout_s']!r}; must be >= 0 (0: forever)"
            )
        for name in ("frame_id", "ground_truth_frame"):
            if not p[name]:
                return f"parameter {name} is empty; give the frame a name"
        return ""

    # ------------------------------------------------------------------------------ playback
    def _check_subscribers(self) -> None:
        p = self._p
        ready = (
            self.image_pub.get_subscription_count() >= p["wait_for_subscribers"]
            and self.ground_truth_pub.get_subscription_count()
            >= p["wait_for_ground_truth_subscribers"]
        )
        waited_s = time.monotonic() - self._started_at
        timed_out = p["wait_timeout_s"] > 0 and waited_s >= p["wait_timeout_s"]
        if not (ready or timed_out):
            return
        self.destroy_timer(self._wait_timer)
        if ready:
            self.get_logger().info(f"subscribers matched after {waited_s:.2f} s")
        else:
            self.get_logger().warning(
                f"after {waited_s:.1f} s only {self.image_pub.get_subscription_count()}"
                f" subscriber(s) on image and {self.ground_truth_pub.get_subscription_count()}"
                " on ground_truth/pose; starting anyway"
            )
        self._start_playback()

    def _load(self, frame: PoseRecord) -> dict:
        # Runs on the prefetch thread: decoding and conversion stay off the executor.
        return rgb_to_image_fields(read_rgb(frame.image_path), self._p["encoding"])

    def _start_playback(self) -> None:
        self._prefetcher = FramePrefetcher(
            self._frames, self._load, loop=self._p["loop"], depth=PREFETCH_DEPTH
        )
        self._started_at = self._last_progress = time.monotonic()
        self._publish_timer = self.create_timer(1.0 / self._p["rate_hz"], self._tick)

    def _stamp(self, item: PlaybackItem) -> Time:
        if self._p["stamp_mode"] == "now":
            return self.get_clock().now().to_msg()
        seconds = item.frame.timestamp_s + item.loop * self._loop_period_s
        sec, nanosec = divmod(int(round(seconds * _NS_PER_S)), _NS_PER_S)
        return Time(sec=sec, nanosec=nanosec)

    def _tick(self) -> None:
        try:
            item = self._prefetcher.next()
        except queue.Empty:
            # Reading is slower than rate_hz: skip this tick rather than burst later.
            self.late_ticks += 1
            allow, suppressed = self._log_limit.allow("late")
            if allow:
                more = f" ({suppressed} more since)" if suppressed else ""
                self.get_logger().warning(
                    f"the next image was not read in time for {self._p['rate_hz']:g} Hz; frames"
                    f" are late{more}"
                )
            return
        if item is None:
            self._finish()
            return
        if item.error:
            self.failed += 1
            # Keyed by file: a looping playback repeats the same bad image every pass.
            allow, suppressed = self._log_limit.allow(f"unreadable:{item.frame.image_path}")
            if allow:
                more = f" ({suppressed} more times since)" if suppressed else ""
                self.get_logger().error(f"skipped frame {item.index}: {item.error}{more}")
            return
        self._publish(item)
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_PERIOD_S:
            self._last_progress = now
            self.get_logger().info(self._progress(item))

    def _progress(self, item: PlaybackItem) -> str:
        elapsed = max(time.monotonic() - self._started_at, 1e-9)
        loop = f" (loop {item.loop + 1})" if self._p["loop"] else ""
        return (
            f"published {self.published} frame(s), at frame {item.index + 1}/{len(self._frames)}"
            f"{loop}, {self.published / elapsed:.1f} Hz; {self.failed} unreadable,"
            f" {self.late_ticks} late tick(s)"
        )

    def _publish(self, item: PlaybackItem) -> None:
        stamp = self._stamp(item)
        fields = item.payload
        image = Image()
        image.header.stamp = stamp
        image.header.frame_id = self._p["frame_id"]
        image.height, image.width = fields["height"], fields["width"]
        image.encoding = fields["encoding"]
        image.is_bigendian = fields["is_bigendian"]
        image.step = fields["step"]
        image.data = fields["data"]

        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.header.frame_id = self._p["ground_truth_frame"]
        position, quat_wxyz = item.frame.position_m, item.frame.quat_wxyz
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (
            float(v) for v in position
        )
        o = pose.pose.orientation
        o.w, o.x, o.y, o.z = (float(v) for v in quat_wxyz)

        if self.published == 0:
            hint = large_image_hint(
                len(image.data), get_rmw_implementation_identifier(), os.environ
            )
            if hint:
                self.get_logger().warning(hint)
        # camera_info first: a node matching the image to its camera_info by stamp then has
        # it when the image arrives (the relocalizer publishes the prior alone otherwise).
        if self.info_pub is not None:
            info = self._camera_info
            if (info.width, info.height) == (image.width, image.height):
                info.header = image.header
                self.info_pub.publish(info)
            else:
                self._info_skipped += 1
                allow, _ = self._log_limit.allow("info-size")
                if allow:
                    self.get_logger().error(
                        f"{item.frame.image_path} is {image.width}x{image.height} but"
                        f" {self._camera_source} is for {info.width}x{info.height}:"
                        f" camera_info not published for it ({self._info_skipped} frame(s) so"
                        " far)"
                    )
        self.image_pub.publish(image)
        self.ground_truth_pub.publish(pose)
        self.published += 1

    def _finish(self) -> None:
        self.destroy_timer(self._publish_timer)
        elapsed = time.monotonic() - self._started_at
        self.get_logger().info(
            f"done: published {self.published} of {len(self._frames)} frame(s) in"
            f" {elapsed:.1f} s; {self.failed} unreadable, {self.late_ticks} late tick(s)"
        )
        if self._p["exit_when_done"]:
            self.done.set_result(0)

    def wait_for_acknowledgements(self, timeout_s: float = ACK_TIMEOUT_S) -> bool:
        """Block until every reliable subscriber has the ground truth (or the timeout passes),
        so exiting right after the last frame loses no pose."""
        return self.ground_truth_pub.wait_for_all_acked(Duration(seconds=timeout_s))

    def destroy_node(self) -> None:
        if getattr(self, "_prefetcher", None) is not None:
            self._prefetcher.stop()
        super().destroy_node()


def _play(node: DatasetPlayerNode) -> int:
    spin_until_stopped(node, node.done)
    if not node.done.done():  # stopped (SIGINT) before the end
        return 0
    if not node.wait_for_acknowledgements():
        rclpy.logging.get_logger("dataset_player").warning(
            f"not every ground-truth subscriber acknowledged within {ACK_TIMEOUT_S:g} s"
        )
    return node.done.result()


def main(args: list[str] | None = None) -> int:
    """Play the dataset; 0 when done or stopped, 2 when start-up fails (bad parameters/dataset)."""
    return run_node("dataset_player", DatasetPlayerNode, _play, double_example="10.0", args=args)


if __name__ == "__main__":
    sys.exit(main())
