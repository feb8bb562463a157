"""The relocalizer node: camera images in, the camera's 6-DoF pose in the scene frame out.

Thin by design: parameters, topics, TF and diagnostics are wired here; decoding, preprocessing,
inference and pose checks live in ``posenet_ros.pipeline`` and the modules it uses.

Subscribes  ``image`` (sensor_msgs/Image) or ``image/compressed`` (sensor_msgs/CompressedImage);
            with a ``map_path``, also ``camera_info`` (sensor_msgs/CameraInfo)
Publishes   ``pose`` (PoseStamped), ``pose_with_covariance`` (PoseWithCovarianceStamped),
            ``estimate`` (posenet_ros/PoseEstimate), ``/tf`` (scene frame -> camera frame),
            ``base_pose_with_covariance`` (PoseWithCovarianceStamped, with ``base_frame``),
            ``/diagnostics`` (diagnostic_msgs/DiagnosticArray)
Every output carries the image's header stamp. The covariance is the model's per-image
uncertainty when the model file has one (format 2), else the fixed diagonal of the parameters.
Estimates refused by the outlier gates (``posenet_ros.gating``) go out on ``estimate`` only,
flagged ``accepted = false``.

With a map file (``map_path``), up to ``refine.rate_hz`` frames per second are refined against it
on a worker of their own (``posenet_ros.refine_stage``): those frames are published when their
refinement ends, with the refined pose and its PnP covariance when it succeeded (``source``
"refined" on ``estimate``), else with the prior. Every other frame is published with the prior at
once.
"""

from __future__ import annotations

import math
import re
import sys
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped, TransformStamped
from rcl_interfaces.msg import (
    ParameterType,
    SetParametersResult,
)
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from posenet_core.covariance import (
    base_pose_with_covariance,
    covariance_6x6_from_diagonal,
    extrinsic_from_parameters,
    stddev_from_covariance,
)
from posenet_core.features import FeatureError, create_detector
from posenet_core.geometry import pose_to_matrix
from posenet_core.image_codec import DEFAULT_MAX_PIXELS
from posenet_core.mapfile import MapFileError, check_compatible, read_map
from posenet_core.refine import RefineError, RefinementResult, Refiner
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
from posenet_ros.gating import GateConfig, GateDecision, PoseGate
from posenet_ros.msg import PoseEstimate
from posenet_ros.pipeline import Relocalizer, pose_covariance
from posenet_ros.refine_stage import (
    FAILURE_ERROR,
    NICE_PARAMETER,
    OPENCV_THREADS_PARAMETER,
    RATE_PARAMETER,
    REFINE_PARAMETERS,
    SKIP_NO_CAMERA_INFO,
    SOURCE_REFINED,
    PoseOutput,
    RefineJob,
    RefineStage,
    RefineStats,
    check_rate_hz,
    choose_output,
    limit_native_threads,
    refiner_config_from_parameters,
)
from posenet_ros.ros_common import CAMERA_QOS, reliable_qos, shut_down_while_spinning
from posenet_ros.ros_common import descriptor as _descriptor
from posenet_ros.stats import (
    REJECT_DECODE,
    REJECT_GATED,
    REJECT_INFERENCE,
    REJECT_POSE,
    NodeStats,
    RateLimiter,
)
from posenet_ros.tensorrt.options import PRECISIONS

OUTPUT_QOS = reliable_qos(10)
TF_QOS = reliable_qos(100)  # what tf2_ros.TransformBroadcaster uses

EXIT_STARTUP_FAILURE = 2
# The model file key that names its training split (posenet_train.export writes it).
DATASET_FINGERPRINT_KEY = "posenet.dataset_fingerprint"
_DIGITS = re.compile(r"\d+")
NO_INPUT_WARN_S = 5.0
# A camera publishes image and camera_info together; the first images may arrive before the
# first camera_info. "No camera_info" is said only after this long without one.
NO_CAMERA_INFO_GRACE_S = 1.0


# Node parameter -> GateConfig field (same names).
GATE_PARAMETERS: tuple[str, ...] = (
    "max_position_stddev_m",
    "max_rotation_stddev_rad",
    "max_speed_m_s",
    "speed_gate_margin_m",
    "speed_gate_max_rejections",
    "speed_gate_timeout_s",
)
# Applied on the next frame when changed at run time.
DYNAMIC_PARAMETERS: tuple[str, ...] = (
    "position_variance_m2",
    "orientation_variance_rad2",
    "use_model_covariance",
    "model_covariance_scale",
    *GATE_PARAMETERS,
)


def check_frame_name(name: str, value: str) -> str:
    """Empty string if ``value`` is usable as a tf2 frame id, else the reason it is not."""
    if not value or value != value.strip() or " " in value:
        return f"{name} {value!r} must be a non-empty frame id without whitespace"
    if value.startswith("/"):
        return f"{name} {value!r} starts with '/'; ROS 2 frame ids have none (use {value[1:]!r})"
    return ""


def check_covariance_diagonal(name: str, values) -> str:
    """Empty string if ``values`` is a valid 3-vector of variances, else the reason it is not."""
    values = list(values)
    if len(values) != 3:
        return f"{name} must have 3 entries (x, y, z), got {len(values)}: {values}"
    for v in values:
        if not math.isfinite(v) or v <= 0.0:
            return f"{name} entries must be finite and > 0, got {values}"
    return ""


def _limit_text(value: float, unit: str) -> str:
    """A prior limit for the log ("any m" for 0, no limit)."""
    return f"{value:g} {unit}" if value > 0 else f"any {unit}"


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
        self._base_frame = self.get_parameter("base_frame").value
        for other, value in (("frame_id", self._frame_id), ("camera_frame", self._camera_frame)):
            if self._base_frame and self._base_frame == value:
                raise PoseNetError(
                    f"base_frame and {other} are both {value!r}; the base pose needs a frame of "
                    "its own (e.g. base_link)"
                )
        self._T_camera_base = extrinsic_from_parameters(
            self.get_parameter("camera_to_base_translation_m").value,
            self.get_parameter("camera_to_base_quat_xyzw").value,
        )
        self._gate = PoseGate()
        self._apply_dynamic_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.pose_pub = self.create_publisher(PoseStamped, "pose", OUTPUT_QOS)
        self.pose_cov_pub = self.create_publisher(
            PoseWithCovarianceStamped, "pose_with_covariance", OUTPUT_QOS
        )
        self.estimate_pub = self.create_publisher(PoseEstimate, "estimate", OUTPUT_QOS)
        self.base_pose_pub = None
        if self._base_frame:
            self.base_pose_pub = self.create_publisher(
                PoseWithCovarianceStamped, "base_pose_with_covariance", OUTPUT_QOS
            )
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self.tf_pub = None
        if self._publish_tf:
            self._tf_type = _tf_message_type()
            self.tf_pub = self.create_publisher(self._tf_type, "/tf", TF_QOS)

        self._compressed = self.get_parameter("use_compressed").value
        self.refine_stats = RefineStats()
        self._refine: RefineStage | None = None
        self._refine_said: set[str] = set()
        self._last_refine_problem = ""
        self._first_frame_time: float | None = None
        self._map_summary = ""
        if self.get_parameter("map_path").value:
            self._refine = self._start_refinement(info)
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, CAMERA_QOS)
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
            f"'{self.resolve_topic_name('image/compressed' if self._compressed else 'image')}'; "
            f"covariance from {self._covariance_source}"
            + (f"; base pose of '{self._base_frame}' published" if self._base_frame else "")
            + (
                f"; refining up to {self.get_parameter('refine.rate_hz').value:g} frames/s "
                f"against map {self._map_summary}, intrinsics from "
                f"'{self.resolve_topic_name('camera_info')}'"
                if self._refine is not None
                else "; refinement off (no map_path)"
            )
        )

    def _start_refinement(self, info) -> RefineStage:
        """Load the map file, check it belongs to this model and frame, start the worker."""
        map_path = self.get_parameter("map_path").value
        site_map = read_map(map_path)
        check_compatible(
            site_map,
            scene_frame=self._frame_id,
            dataset=info.dataset,
            dataset_fingerprint=info.metadata.get(DATASET_FINGERPRINT_KEY) or None,
            where=f"map file {map_path} (map_path) with model {info.path}",
        )
        try:
            create_detector(site_map.feature)  # fails now, not on the first frame
        except FeatureError as e:
            raise MapFileError(f"map file {map_path}: {e}") from None
        values = {spec.name: self.get_parameter(spec.name).value for spec in REFINE_PARAMETERS}
        config = refiner_config_from_parameters(values, info.median_error)
        refiner = Refiner(site_map, config)
        self._map_summary = (
            f"{map_path} ({site_map.summary()}; refined poses kept within "
            f"{_limit_text(config.max_prior_distance_m, 'm')} and "
            f"{_limit_text(config.max_prior_angle_deg, 'deg')} of the prior, model median error "
            f"{info.median_error})"
        )
        self._map_summary += f"; {limit_native_threads(values[OPENCV_THREADS_PARAMETER])}"
        return RefineStage(
            refiner,
            values[RATE_PARAMETER],
            self._on_refined,
            thread_nice=values[NICE_PARAMETER],
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
                "use_model_covariance",
                True,
                _descriptor(
                    "Publish the model's own per-image covariance when the model file has an "
                    "uncertainty output (format 2); false, or a file without one: the fixed "
                    "diagonal position_variance_m2 / orientation_variance_rad2.",
                    B,
                ),
            ),
            (
                "model_covariance_scale",
                1.0,
                _descriptor(
                    "Factor on the model's covariance (1: as predicted). Set it from the "
                    "calibration that posenet_train.evaluate measures (variance_scale_median) "
                    "when the model is over- or under-confident.",
                    D,
                    float_range=(1e-6, 1e6),
                ),
            ),
            (
                "base_frame",
                "",
                _descriptor(
                    "Robot base frame (e.g. base_link): when set, the base pose in the scene "
                    "frame is published on base_pose_with_covariance, from the camera pose and "
                    "the camera_to_base_* extrinsic. Empty: off.",
                    S,
                    read_only=True,
                ),
            ),
            (
                "camera_to_base_translation_m",
                [0.0, 0.0, 0.0],
                _descriptor(
                    "T_camera_base translation: the base frame's origin in the camera's optical "
                    "frame (x right, y down, z forward), m. What `ros2 run tf2_ros tf2_echo "
                    "<camera optical frame> <base_frame>` prints.",
                    DA,
                    read_only=True,
                    constraints="3 finite values",
                ),
            ),
            (
                "camera_to_base_quat_xyzw",
                [0.5, -0.5, 0.5, 0.5],
                _descriptor(
                    "T_camera_base rotation (x, y, z, w): the base frame's axes in the camera's "
                    "optical frame. The default turns the optical frame into a REP-103 body "
                    "frame (x forward, y left, z up) at the camera.",
                    DA,
                    read_only=True,
                    constraints="4 finite values, unit length within 1 %",
                ),
            ),
            (
                "max_position_stddev_m",
                0.0,
                _descriptor(
                    "Outlier gate: reject estimates whose largest position standard deviation "
                    "(x, y or z, from the published covariance) exceeds this, m. 0: off.",
                    D,
                    float_range=(0.0, 1e6),
                ),
            ),
            (
                "max_rotation_stddev_rad",
                0.0,
                _descriptor(
                    "Outlier gate: reject estimates whose largest rotation standard deviation "
                    "exceeds this, rad. 0: off.",
                    D,
                    float_range=(0.0, 1e6),
                ),
            ),
            (
                "max_speed_m_s",
                0.0,
                _descriptor(
                    "Outlier gate: reject estimates further from the last accepted one than "
                    "max_speed_m_s * (stamp difference) + speed_gate_margin_m. 0: off.",
                    D,
                    float_range=(0.0, 1e6),
                ),
            ),
            (
                "speed_gate_margin_m",
                0.5,
                _descriptor(
                    "Distance always allowed by the speed gate on top of max_speed_m_s * dt: "
                    "the estimates' own frame-to-frame jitter, m (about 2-3x the model's median "
                    "error).",
                    D,
                    float_range=(0.0, 1e6),
                ),
            ),
            (
                "speed_gate_max_rejections",
                15,
                _descriptor(
                    "After this many speed-gate rejections in a row the next estimate is "
                    "accepted as the new reference (the old one may have been the outlier, or "
                    "the robot was moved). 0: no reset by count.",
                    INT,
                    int_range=(0, 1_000_000),
                ),
            ),
            (
                "speed_gate_timeout_s",
                2.0,
                _descriptor(
                    "A speed-gate reference older than this (by image stamp) is dropped and the "
                    "next estimate accepted, s. 0: no reset by age.",
                    D,
                    float_range=(0.0, 1e6),
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
        params.append(
            (
                "map_path",
                "",
                _descriptor(
                    "Map file of the site (.npz, `python -m posenet_train.map` writes it) for "
                    "pose refinement; empty: refinement off, every pose is the PoseNet prior. "
                    "Needs camera_info.",
                    S,
                    read_only=True,
                ),
            )
        )
        for spec in REFINE_PARAMETERS:
            if isinstance(spec.default, bool):
                d = _descriptor(spec.description, B, read_only=True)
            elif isinstance(spec.default, int):
                d = _descriptor(
                    spec.description, INT, read_only=True, int_range=(spec.low, spec.high)
                )
            else:
                d = _descriptor(
                    spec.description, D, read_only=True, float_range=(spec.low, spec.high)
                )
            params.append((spec.name, spec.default, d))
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
        base_frame = self.get_parameter("base_frame").value
        if base_frame:
            reason = check_frame_name("base_frame", base_frame)
            if reason:
                return reason
        try:
            extrinsic_from_parameters(
                self.get_parameter("camera_to_base_translation_m").value,
                self.get_parameter("camera_to_base_quat_xyzw").value,
            )
        except InvalidPoseError as e:
            return f"camera_to_base_translation_m / camera_to_base_quat_xyzw: {e}"
        values = {spec.name: self.get_parameter(spec.name).value for spec in REFINE_PARAMETERS}
        reason = check_rate_hz(values["refine.rate_hz"])
        if reason:
            return reason
        try:
            refiner_config_from_parameters(values)
        except RefineError as e:
            return str(e)
        return self._gate_config({}).check()

    def _gate_config(self, changes: dict) -> GateConfig:
        """The gate bounds from the current parameters, with ``changes`` (name -> value)."""
        values = {name: self.get_parameter(name).value for name in GATE_PARAMETERS}
        values.update({k: v for k, v in changes.items() if k in GATE_PARAMETERS})
        return GateConfig(**values)

    def _on_set_parameters(self, params) -> SetParametersResult:
        for p in params:
            if p.name in ("position_variance_m2", "orientation_variance_rad2"):
                reason = check_covariance_diagonal(p.name, p.value)
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
            if p.name == "model_covariance_scale" and not (
                math.isfinite(p.value) and p.value > 0.0
            ):
                return SetParametersResult(
                    successful=False, reason=f"model_covariance_scale must be > 0, got {p.value}"
                )
        reason = self._gate_config({p.name: p.value for p in params}).check()
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        # Applied after rclpy stores the new values, on the next frame.
        self._params_dirty = True
        return SetParametersResult(successful=True)

    def _apply_dynamic_parameters(self) -> None:
        """Read the run-time-changeable parameters (on the worker thread, between frames)."""
        self._covariance = covariance_6x6_from_diagonal(
            self.get_parameter("position_variance_m2").value,
            self.get_parameter("orientation_variance_rad2").value,
        )
        self._use_model_covariance = self.get_parameter("use_model_covariance").value
        self._model_covariance_scale = self.get_parameter("model_covariance_scale").value
        self._gate.configure(self._gate_config({}))
        self._params_dirty = False

    @property
    def _covariance_source(self) -> str:
        if self._use_model_covariance and self.relocalizer.has_uncertainty:
            return f"model output '{self.relocalizer.info.uncertainty_output}'"
        return "parameters (fixed diagonal)"

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

    def _on_camera_info(self, msg) -> None:
        stamp = msg.header.stamp
        self._refine.cameras.add(stamp.sec * 1_000_000_000 + stamp.nanosec, msg)

    def _say_once(self, key: str, text: str) -> None:
        """Log a refinement condition once per run (diagnostics count every occurrence)."""
        if key not in self._refine_said:
            self._refine_said.add(key)
            self.get_logger().warning(text)

    def _process(self, msg) -> None:
        t_start = time.perf_counter()
        if self._params_dirty:
            self._apply_dynamic_parameters()
        try:
            t_decode = time.perf_counter()
            rgb = self.relocalizer.decode(msg, self._compressed)
            result = self.relocalizer.estimate_rgb(rgb, decode_s=time.perf_counter() - t_decode)
            covariance, from_model = pose_covariance(
                result.log_variance,
                self._covariance,
                use_model_covariance=self._use_model_covariance,
                model_covariance_scale=self._model_covariance_scale,
            )
            stddev = stddev_from_covariance(covariance)
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
        stamp = msg.header.stamp
        decision = self._gate.check(
            stamp.sec * 1_000_000_000 + stamp.nanosec, result.position_m, stddev
        )
        prior = PoseOutput(
            result.position_m, result.quat_wxyz, covariance, from_model, stddev, decision
        )
        if self._refine is not None and self._offer_refinement(msg, rgb, prior, result):
            return  # the refine worker publishes this frame
        self._publish(stamp, prior, result.inference_s)
        if not decision.accepted:
            self._gated(stamp, decision)
            return
        t_end = time.perf_counter()
        latency_s = self._seconds_since(stamp)
        overhead_ms = (t_end - t_start - result.inference_s) * 1e3
        self.stats.on_published(result.inference_s * 1e3, overhead_ms, latency_s * 1e3)

    def _offer_refinement(self, msg, rgb: np.ndarray, prior: PoseOutput, result) -> bool:
        """Hand this frame to the refine worker when it is due and intrinsics are known."""
        if not self._refine.due():
            return False
        stamp = msg.header.stamp
        stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        found = self._refine.cameras.lookup(stamp_ns, rgb.shape[1], rgb.shape[0])
        now = time.monotonic()
        if self._first_frame_time is None:
            self._first_frame_time = now
        if found.intrinsics is None:
            self.refine_stats.on_skipped(found.problem)
            if (
                found.problem == SKIP_NO_CAMERA_INFO
                and now - self._first_frame_time < NO_CAMERA_INFO_GRACE_S
            ):
                return False  # its camera_info may be on the way
            self._say_once(
                found.problem, f"pose refinement paused, publishing the prior: {found.detail}"
            )
            self._last_refine_problem = found.detail
            return False
        self._last_refine_problem = ""
        job = RefineJob(
            rgb_HWC=rgb,
            intrinsics=found.intrinsics,
            prior_T_world_camera=pose_to_matrix(prior.position_m, prior.quat_wxyz),
            prior=prior,
            context=(stamp, result.inference_s),
        )
        return self._refine.offer(job)

    def _on_refined(self, job: RefineJob, refinement: RefinementResult | None, error: str):
        """Refine worker: publish the frame with the refined pose, or its prior."""
        stamp, inference_s = job.context
        output = choose_output(
            job.prior,
            refinement,
            self._gate.config,
            failure_override=FAILURE_ERROR if refinement is None else "",
        )
        self._publish(stamp, output, inference_s)
        latency_ms = self._seconds_since(stamp) * 1e3
        message = error or (refinement.message if refinement is not None else "")
        if output.source != SOURCE_REFINED:
            text = (
                f"refinement of frame stamped {stamp.sec}.{stamp.nanosec:09d} failed "
                f"({output.refinement_failure}): {message}; published the prior"
            )
            allow, suppressed = self._log_limit.allow("refine:" + output.refinement_failure)
            if allow:
                more = f" ({suppressed} more like it suppressed)" if suppressed else ""
                self.get_logger().info(text + more)
            message = text
        self.refine_stats.on_done(output, message, latency_ms, job.cpu_s * 1e3)
        if output.decision.accepted:
            self.stats.on_published_late()
        else:
            self._gated(stamp, output.decision)

    def _gated(self, stamp, decision: GateDecision) -> None:
        text = (
            f"gated frame stamped {stamp.sec}.{stamp.nanosec:09d} ({decision.reason}): "
            f"{decision.detail}"
        )
        self.stats.on_rejected(REJECT_GATED, text)
        allow, suppressed = self._log_limit.allow(REJECT_GATED + ":" + decision.reason)
        if allow:
            more = f" ({suppressed} more like it suppressed)" if suppressed else ""
            self.get_logger().warning(text + more)

    def _seconds_since(self, stamp) -> float:
        now_ns = self.get_clock().now().nanoseconds
        return (now_ns - (stamp.sec * 1_000_000_000 + stamp.nanosec)) * 1e-9

    def _publish(self, stamp, output: PoseOutput, inference_s: float) -> None:
        """Every output of one frame (pose topics and TF only when the gates accepted it).

        Called from the inference worker (priors) and the refine worker (refined frames);
        rclpy publishers may be used from several threads.
        """
        x, y, z = (float(v) for v in output.position_m)
        qw, qx, qy, qz = (float(v) for v in output.quat_wxyz)
        covariance = output.covariance
        decision = output.decision

        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.header.frame_id = self._frame_id
        p = pose.pose
        p.position.x, p.position.y, p.position.z = x, y, z
        p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = qx, qy, qz, qw

        with_cov = PoseWithCovarianceStamped()
        with_cov.header = pose.header
        with_cov.pose.pose = p
        with_cov.pose.covariance = [float(v) for v in covariance.ravel()]

        estimate = PoseEstimate()
        estimate.header = pose.header
        estimate.pose = with_cov.pose
        estimate.camera_frame = self._camera_frame
        estimate.inference_time = float(inference_s)
        estimate.model_name = self.model_name
        estimate.accepted = decision.accepted
        estimate.rejection_reason = decision.reason
        estimate.stddev = [float(v) for v in output.stddev]
        estimate.covariance_from_model = output.covariance_from_model
        estimate.source = output.source
        estimate.refinement_attempted = output.refinement_attempted
        estimate.refinement_inliers = int(output.refinement_inliers)
        estimate.refinement_time = float(output.refinement_time_s)
        estimate.refinement_failure = output.refinement_failure

        if decision.accepted:
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
            if self.base_pose_pub is not None:
                self.base_pose_pub.publish(self._base_pose_msg(pose.header, output))
        # Latency last, so it covers everything up to the final publish.
        estimate.latency = float(self._seconds_since(stamp))
        self.estimate_pub.publish(estimate)

    def _base_pose_msg(self, header, output: PoseOutput) -> PoseWithCovarianceStamped:
        """The base frame's pose in the scene frame, its covariance moved by the lever arm."""
        position, quat_wxyz, base_covariance = base_pose_with_covariance(
            output.position_m, output.quat_wxyz, output.covariance, self._T_camera_base
        )
        msg = PoseWithCovarianceStamped()
        msg.header = header
        q = msg.pose.pose
        q.position.x, q.position.y, q.position.z = (float(v) for v in position)
        q.orientation.w, q.orientation.x, q.orientation.y, q.orientation.z = (
            float(v) for v in quat_wxyz
        )
        msg.pose.covariance = [float(v) for v in base_covariance.ravel()]
        return msg

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
            **{f"frames_gated_{k}": str(v) for k, v in self._gate.rejected.items()},
            "speed_gate_resets": str(self._gate.speed_resets),
            "covariance_source": self._covariance_source,
            "base_frame": self._base_frame or "(off)",
            "backend": self.relocalizer.backend.describe(),
            "model": self.model_name,
            "model_median_error": self.relocalizer.info.median_error,
            "last_error": s.last_error,
        }
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status, self._refine_status()]
        self.diag_pub.publish(array)

    def _refine_status(self) -> DiagnosticStatus:
        """The refinement's own status: rates, success share, failures by reason, latency."""
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: refinement"
        status.hardware_id = self.model_name
        if self._refine is None:
            status.level = DiagnosticStatus.OK
            status.message = "off (no map_path)"
            status.values = [KeyValue(key="map", value="(none)")]
            return status
        r = self.refine_stats.snapshot()
        if self._last_refine_problem:
            status.level = DiagnosticStatus.WARN
            status.message = f"prior only: {self._last_refine_problem}"
        elif r.attempt_rate_hz > 0 and r.success_share < 0.5:
            status.level = DiagnosticStatus.WARN
            status.message = f"{r.success_share:.0%} of refinements succeed: {r.last_failure}"
        else:
            status.level = DiagnosticStatus.OK
            status.message = "refining" if r.attempt_rate_hz > 0 else "waiting for frames"
        values = {
            "refine_rate_hz": f"{r.attempt_rate_hz:.2f}",
            "refined_rate_hz": f"{r.refined_rate_hz:.2f}",
            "success_share": f"{r.success_share:.3f}",
            "refine_ms_median": f"{r.refine_ms_median:.1f}",
            "refine_ms_p99": f"{r.refine_ms_p99:.1f}",
            "refine_cpu_ms_median": f"{r.refine_cpu_ms_median:.1f}",
            "latency_ms_median": f"{r.latency_ms_median:.1f}",
            "latency_ms_p99": f"{r.latency_ms_p99:.1f}",
            "refinements": str(r.attempted),
            "refined": str(r.refined),
            **{f"failed_{k}": str(v) for k, v in r.failures.items()},
            **{f"skipped_{k}": str(v) for k, v in r.skipped.items()},
            "camera_infos_received": str(self._refine.cameras.received),
            "map": self._map_summary,
            "last_failure": r.last_failure,
        }
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return status

    def destroy_node(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.stop()
        refine = getattr(self, "_refine", None)
        if refine is not None:
            refine.stop()
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
    except ParameterException as e:
        # A value outside its descriptor's range or of the wrong type (rclpy's reason names
        # the parameter, the value and the range).
        rclpy.logging.get_logger("relocalizer").fatal(
            f"cannot start: {e} (see config/relocalize.yaml for every parameter's range)"
        )
        return EXIT_STARTUP_FAILURE
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        if not shut_down_while_spinning(node):
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
