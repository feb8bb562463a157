"""The relocalizer node: camera images in, the camera's 6-DoF pose in the scene frame out.

Thin by design: parameters, topics, TF and diagnostics are wired here; decoding, preprocessing,
inference and pose checks live in ``posenet_ros.pipeline`` and the modules it uses.

Subscribes  ``image`` (sensor_msgs/Image) or ``image/compressed`` (sensor_msgs/CompressedImage)
Publishes   ``pose`` (PoseStamped), ``pose_with_covariance`` (PoseWithCovarianceStamped),
            ``estimate`` (posenet_ros/PoseEstimate), ``/tf`` (scene frame -> camera frame),
            ``/diagnostics`` (diagnostic_msgs/DiagnosticArray)
Every output carries the image's header stamp.
"""

from __future__ import annotations

import math
import re
import sys
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped, TransformStamped
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from sensor_msgs.msg import CompressedImage, Image

from posenet_ros.backends import BACKEND_CHOICES
from posenet_ros.errors import (
    BackendError,
    ImageDecodeError,
    InvalidPoseError,
    ModelFileError,
    PoseNetError,
    PreprocessError,
)
from posenet_ros.frame_worker import LatestFrameWorker
from posenet_ros.geometry import covariance_6x6_from_diagonal
from posenet_ros.image_codec import DEFAULT_MAX_PIXELS
from posenet_ros.msg import PoseEstimate
from posenet_ros.pipeline import Relocalizer
from posenet_ros.stats import (
    REJECT_DECODE,
    REJECT_INFERENCE,
    REJECT_POSE,
    NodeStats,
    RateLimiter,
)
from posenet_ros.trt_engine import PRECISIONS

# Camera input: sensor-data semantics (best effort, volatile) but depth 1: only the newest frame.
CAMERA_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
OUTPUT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
# What tf2_ros.TransformBroadcaster uses.
TF_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

EXIT_STARTUP_FAILURE = 2
_DIGITS = re.compile(r"\d+")
NO_INPUT_WARN_S = 5.0


def _descriptor(
    description: str,
    kind: int,
    *,
    read_only: bool = False,
    float_range: tuple[float, float] | None = None,
    int_range: tuple[int, int] | None = None,
    constraints: str = "",
) -> ParameterDescriptor:
    d = ParameterDescriptor(
        description=description,
        type=kind,
        read_only=read_only,
        additional_constraints=constraints,
    )
    if float_range is not None:
        d.floating_point_range = [
            FloatingPointRange(from_value=float_range[0], to_value=float_range[1], step=0.0)
        ]
    if int_range is not None:
        d.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    return d


def check_covariance_diagonal(name: str, values) -> str:
    """Empty string if ``values`` is a valid 3-vector of variances, else the reason it is not."""
    values = list(values)
    if len(values) != 3:
        return f"{name} must have 3 entries (x, y, z), got {len(values)}: {values}"
    for v in values:
        if not math.isfinite(v) or v <= 0.0:
            return f"{name} entries must be finite and > 0, got {values}"
    return ""


class RelocalizerNode(Node):
    """PoseNet relocalization: one pose per camera frame, inference off the executor thread."""

    def __init__(self, **kwargs) -> None:
        super().__init__("relocalizer", **kwargs)
        self._declare_parameters()
        reason = self._check_startup_parameters()
        if reason:
            raise PoseNetError(reason)

        self._log_limit = RateLimiter(period_s=5.0)
        self.stats = NodeStats()
        model_path = self.get_parameter("model_path").value
        self.relocalizer = Relocalizer(
            model_path,
            backend=self.get_parameter("backend").value,
            num_threads=self.get_parameter("num_threads").value,
            max_pixels=self.get_parameter("max_image_pixels").value,
            log=self.get_logger().info,
            backend_options={
                "engine_cache_dir": self.get_parameter("engine_cache_dir").value,
                "rebuild_engine": self.get_parameter("rebuild_engine").value,
                "trt_precision": self.get_parameter("trt_precision").value,
            },
        )
        info = self.relocalizer.info
        self.model_name = info.name
        self._frame_id = self.get_parameter("frame_id").value or info.scene_frame
        self._camera_frame = self.get_parameter("camera_frame").value
        self._publish_tf = self.get_parameter("publish_tf").value
        self._update_covariance()
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.pose_pub = self.create_publisher(PoseStamped, "pose", OUTPUT_QOS)
        self.pose_cov_pub = self.create_publisher(
            PoseWithCovarianceStamped, "pose_with_covariance", OUTPUT_QOS
        )
        self.estimate_pub = self.create_publisher(PoseEstimate, "estimate", OUTPUT_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self.tf_pub = None
        if self._publish_tf:
            self._tf_type = _tf_message_type()
            self.tf_pub = self.create_publisher(self._tf_type, "/tf", TF_QOS)

        self._compressed = self.get_parameter("use_compressed").value
        self._worker: LatestFrameWorker = LatestFrameWorker(self._process)
        if self._compressed:
            self.create_subscription(
                CompressedImage, "image/compressed", self._on_image, CAMERA_QOS
            )
        else:
            self.create_subscription(Image, "image", self._on_image, CAMERA_QOS)
        self._last_input = time.monotonic()
        self.create_timer(self.get_parameter("diagnostics_period_s").value, self._publish_diag)

        self.get_logger().info(
            f"relocalizer ready: model {self.model_name} ({info.path}), "
            f"backend {self.relocalizer.backend.describe()}, input {info.input_hw[0]}x"
            f"{info.input_hw[1]} (resize {info.resize_shorter}), frame '{self._frame_id}' -> "
            f"'{self._camera_frame}', subscribed to "
            f"'{self.resolve_topic_name('image/compressed' if self._compressed else 'image')}'"
        )

    # ----------------------------------------------------------------------------- parameters
    def _declare_parameters(self) -> None:
        S, B = ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_BOOL
        INT, D = ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_DOUBLE
        DA = ParameterType.PARAMETER_DOUBLE_ARRAY
        params = [
            (
                "model_path",
                "",
                _descriptor(
                    "Path of the PoseNet .onnx model file (posenet_train.export writes it).",
                    S,
                    read_only=True,
                ),
            ),
            (
                "backend",
                "auto",
                _descriptor(
                    "Inference backend: auto (TensorRT if it imports and a GPU is present, else "
                    "ONNX Runtime), onnxruntime or tensorrt.",
                    S,
                    read_only=True,
                    constraints="one of: " + ", ".join(BACKEND_CHOICES),
                ),
            ),
            (
                "num_threads",
                0,
                _descriptor(
                    "Intra-op threads for ONNX Runtime; 0 lets ONNX Runtime choose.",
                    INT,
                    read_only=True,
                    int_range=(0, 256),
                ),
            ),
            (
                "use_compressed",
                False,
                _descriptor(
                    "Subscribe to image/compressed (sensor_msgs/CompressedImage, JPEG/PNG) "
                    "instead of image (sensor_msgs/Image).",
                    B,
                    read_only=True,
                ),
            ),
            (
                "frame_id",
                "",
                _descriptor(
                    "Scene frame of the published poses; empty: the model file's "
                    "posenet.scene_frame (usually 'map').",
                    S,
                    read_only=True,
                ),
            ),
            (
                "camera_frame",
                "posenet_camera_optical",
                _descriptor(
                    "TF child frame of the estimated camera pose (optical convention: x right, "
                    "y down, z forward). Kept distinct from the robot's own camera frame.",
                    S,
                    read_only=True,
                ),
            ),
            (
                "publish_tf",
                True,
                _descriptor("Publish frame_id -> camera_frame on /tf.", B, read_only=True),
            ),
            (
                "position_variance_m2",
                [0.25, 0.25, 0.25],
                _descriptor(
                    "Diagonal of the position covariance (x, y, z in the scene frame), m^2.",
                    DA,
                    constraints="3 finite values > 0",
                ),
            ),
            (
                "orientation_variance_rad2",
                [0.01, 0.01, 0.01],
                _descriptor(
                    "Diagonal of the orientation covariance (rotation about x, y, z), rad^2.",
                    DA,
                    constraints="3 finite values > 0",
                ),
            ),
            (
                "engine_cache_dir",
                "",
                _descriptor(
                    "Folder of cached TensorRT engines (backend tensorrt, or auto on a GPU); "
                    "empty: the model file's folder. Engines are named by model content, "
                    "TensorRT version, GPU and precision.",
                    S,
                    read_only=True,
                ),
            ),
            (
                "rebuild_engine",
                False,
                _descriptor(
                    "Build the TensorRT engine again at start-up even if one is cached. A cached "
                    "engine that no longer matches the model file, TensorRT or GPU is refused, "
                    "never rebuilt silently; set this once to rebuild it (minutes on a Jetson).",
                    B,
                    read_only=True,
                ),
            ),
            (
                "trt_precision",
                "fp16",
                _descriptor(
                    "TensorRT engine precision: fp16, fp32 or int8 (int8 calibrates on "
                    "<model stem>_calibration.npy written by posenet_train.export).",
                    S,
                    read_only=True,
                    constraints="one of: " + ", ".join(PRECISIONS),
                ),
            ),
            (
                "max_image_pixels",
                DEFAULT_MAX_PIXELS,
                _descriptor(
                    "Images with more pixels than this are rejected before decoding.",
                    INT,
                    read_only=True,
                    int_range=(1, 1 << 30),
                ),
            ),
            (
                "diagnostics_period_s",
                1.0,
                _descriptor(
                    "Period of the /diagnostics status, seconds.",
                    D,
                    read_only=True,
                    float_range=(0.1, 60.0),
                ),
            ),
        ]
        for name, default, descriptor in params:
            self.declare_parameter(name, default, descriptor)

    def _check_startup_parameters(self) -> str:
        model_path = self.get_parameter("model_path").value
        if not model_path:
            return (
                "parameter model_path is empty: set it to a PoseNet .onnx file, e.g. "
                "'--ros-args -p model_path:=/path/model.onnx' or model_path:=... with ros2 launch "
                "(export one with `python -m posenet_train.export`)"
            )
        backend = self.get_parameter("backend").value
        if backend not in BACKEND_CHOICES:
            return f"parameter backend is {backend!r}; allowed: {', '.join(BACKEND_CHOICES)}"
        trt_precision = self.get_parameter("trt_precision").value
        if trt_precision not in PRECISIONS:
            return (
                f"parameter trt_precision is {trt_precision!r}; allowed: {', '.join(PRECISIONS)}"
            )
        frame_id = self.get_parameter("frame_id").value
        if frame_id and frame_id == self.get_parameter("camera_frame").value:
            return (
                f"frame_id and camera_frame are both {frame_id!r}; the TF would link a frame "
                "to itself: give camera_frame another name"
            )
        for name in ("position_variance_m2", "orientation_variance_rad2"):
            reason = check_covariance_diagonal(name, self.get_parameter(name).value)
            if reason:
                return reason
        return ""

    def _on_set_parameters(self, params) -> SetParametersResult:
        for p in params:
            if p.name in ("position_variance_m2", "orientation_variance_rad2"):
                reason = check_covariance_diagonal(p.name, p.value)
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
        # Applied after rclpy stores the new values, on the next frame.
        self._covariance_dirty = True
        return SetParametersResult(successful=True)

    def _update_covariance(self) -> None:
        self._covariance = covariance_6x6_from_diagonal(
            self.get_parameter("position_variance_m2").value,
            self.get_parameter("orientation_variance_rad2").value,
        )
        self._covariance_dirty = False

    # ---------------------------------------------------------------------------- per frame
    def _on_image(self, msg) -> None:
        # Executor thread: only count and hand over; never decode or infer here.
        self.stats.on_received()
        self._last_input = time.monotonic()
        if not self._worker.submit(msg):
            self.stats.on_dropped_busy()

    def _reject(self, reason: str, msg, error: Exception) -> None:
        stamp = msg.header.stamp
        text = f"dropped frame stamped {stamp.sec}.{stamp.nanosec:09d}: {error}"
        self.stats.on_rejected(reason, text)
        # One log line per kind of problem (numbers stripped), not per reason: an unknown encoding
        # and an oversized frame are different problems and each deserves its own line.
        allow, suppressed = self._log_limit.allow(reason + ":" + _DIGITS.sub("#", str(error)))
        if allow:
            more = f" ({suppressed} more like it suppressed)" if suppressed else ""
            self.get_logger().error(text + more)

    def _process(self, msg) -> None:
        t_start = time.perf_counter()
        try:
            result = self.relocalizer.estimate_msg(msg, compressed=self._compressed)
        except (ImageDecodeError, PreprocessError) as e:
            self._reject(REJECT_DECODE, msg, e)
            return
        except InvalidPoseError as e:
            self._reject(REJECT_POSE, msg, e)
            return
        except BackendError as e:
            self._reject(REJECT_INFERENCE, msg, e)
            return
        except Exception as e:  # noqa: BLE001 - a bug must not kill the worker thread
            self._reject(
                REJECT_INFERENCE, msg, PoseNetError(f"unexpected {type(e).__name__}: {e}")
            )
            return
        if self._covariance_dirty:
            self._update_covariance()
        self._publish(msg.header.stamp, result)
        t_end = time.perf_counter()
        latency_s = self._seconds_since(msg.header.stamp)
        overhead_ms = (t_end - t_start - result.inference_s) * 1e3
        self.stats.on_published(result.inference_s * 1e3, overhead_ms, latency_s * 1e3)

    def _seconds_since(self, stamp) -> float:
        now_ns = self.get_clock().now().nanoseconds
        return (now_ns - (stamp.sec * 1_000_000_000 + stamp.nanosec)) * 1e-9

    def _publish(self, stamp, result) -> None:
        x, y, z = (float(v) for v in result.position_m)
        qw, qx, qy, qz = (float(v) for v in result.quat_wxyz)

        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.header.frame_id = self._frame_id
        p = pose.pose
        p.position.x, p.position.y, p.position.z = x, y, z
        p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = qx, qy, qz, qw

        with_cov = PoseWithCovarianceStamped()
        with_cov.header = pose.header
        with_cov.pose.pose = p
        with_cov.pose.covariance = self._covariance

        estimate = PoseEstimate()
        estimate.header = pose.header
        estimate.pose = with_cov.pose
        estimate.camera_frame = self._camera_frame
        estimate.inference_time = float(result.inference_s)
        estimate.model_name = self.model_name

        if self.tf_pub is not None:
            t = TransformStamped()
            t.header = pose.header
            t.child_frame_id = self._camera_frame
            t.transform.translation.x, t.transform.translation.y = x, y
            t.transform.translation.z = z
            t.transform.rotation = p.orientation
            tf_msg = self._tf_type()
            tf_msg.transforms = [t]
            self.tf_pub.publish(tf_msg)
        self.pose_pub.publish(pose)
        self.pose_cov_pub.publish(with_cov)
        # Latency last, so it covers everything up to the final publish.
        estimate.latency = float(self._seconds_since(stamp))
        self.estimate_pub.publish(estimate)

    # --------------------------------------------------------------------------- diagnostics
    def _publish_diag(self) -> None:
        s = self.stats.snapshot()
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: relocalization"
        status.hardware_id = self.model_name
        idle_s = time.monotonic() - self._last_input
        if idle_s > NO_INPUT_WARN_S:
            status.level = DiagnosticStatus.WARN
            status.message = f"no images for {idle_s:.0f} s"
        elif s.rejected_in_window:
            status.level = DiagnosticStatus.WARN
            status.message = f"{s.rejected_in_window} frame(s) rejected: {s.last_error}"
        else:
            status.level = DiagnosticStatus.OK
            status.message = "localizing"
        values = {
            "input_rate_hz": f"{s.input_rate_hz:.2f}",
            "output_rate_hz": f"{s.output_rate_hz:.2f}",
            "inference_ms_median": f"{s.inference_ms_median:.2f}",
            "overhead_ms_median": f"{s.overhead_ms_median:.2f}",
            "latency_ms_median": f"{s.latency_ms_median:.2f}",
            "latency_ms_p99": f"{s.latency_ms_p99:.2f}",
            "frames_received": str(s.received),
            "frames_published": str(s.published),
            "frames_dropped_busy": str(s.dropped_busy),
            "frames_rejected": str(sum(s.rejected.values())),
            **{f"frames_rejected_{k}": str(v) for k, v in s.rejected.items()},
            "backend": self.relocalizer.backend.describe(),
            "model": self.model_name,
            "model_median_error": self.relocalizer.info.median_error,
            "last_error": s.last_error,
        }
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self.diag_pub.publish(array)

    def destroy_node(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.stop()
        super().destroy_node()


def _tf_message_type():
    """tf2_msgs/TFMessage, imported only when TF is published (it is absent from some installs)."""
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError as e:
        raise PoseNetError(
            "publish_tf is true but tf2_msgs is not installed "
            f"({e}); install ros-$ROS_DISTRO-tf2-msgs or set publish_tf:=false"
        ) from e
    return TFMessage


def main(args: list[str] | None = None) -> int:
    """Run the node until shutdown; 0 on a clean stop, 2 when start-up fails."""
    try:
        rclpy.init(args=args if args is not None else sys.argv)
    except RuntimeError as e:  # rclpy's RCLError: malformed --ros-args
        print(f"relocalizer: cannot start: invalid --ros-args ({e})", file=sys.stderr)
        return EXIT_STARTUP_FAILURE
    node = None
    try:
        node = RelocalizerNode()
        rclpy.spin(node)
    except (ModelFileError, BackendError, PoseNetError) as e:
        # Start-up failure: say what is wrong and how to fix it, and exit non-zero.
        rclpy.logging.get_logger("relocalizer").fatal(f"cannot start: {e}")
        return EXIT_STARTUP_FAILURE
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
