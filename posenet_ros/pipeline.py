"""From one camera message to one validated camera pose: decode, preprocess, infer, check.

ROS-free: it takes message-shaped objects (duck-typed ``sensor_msgs`` Image / CompressedImage)
and returns numbers, so the node only wires topics to it and the whole per-frame path has plain
unit tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from posenet_core.contract import ModelInfo
from posenet_core.covariance import covariance_6x6_from_log_variance
from posenet_core.geometry import normalize_quat_wxyz, validate_position
from posenet_core.image_codec import DEFAULT_MAX_PIXELS, compressed_msg_to_rgb, image_msg_to_rgb
from posenet_core.preprocess import preprocess
from posenet_ros.backends import create_backend
from posenet_ros.errors import BackendError
from posenet_ros.model_file import load_model_info

# A trained network outputs a quaternion whose norm is close to 1 (the export normalises it);
# a norm far from 1 means the graph is not the one the contract describes, or it diverged.
MAX_QUAT_NORM_DEVIATION = 0.05


@dataclass(frozen=True)
class PoseResult:
    """One estimate in the internal convention (T_world_camera) plus where the time went."""

    position_m: np.ndarray  # (3,) camera centre in the scene frame
    quat_wxyz: np.ndarray  # (4,) unit, camera-to-scene, w >= 0
    decode_s: float
    preprocess_s: float
    inference_s: float
    # (6,) natural-log variances: x, y, z (m^2, scene frame), rotation about the scene frame's
    # fixed x, y, z axes (rad^2); None when the model file has no uncertainty output (or it is
    # not read). An isotropic [N,2] output is expanded to six values.
    log_variance: np.ndarray | None = None


def pose_covariance(
    log_variance: np.ndarray | None,
    fixed_covariance_6x6: np.ndarray | list[float],
    *,
    use_model_covariance: bool = True,
    model_covariance_scale: float = 1.0,
) -> tuple[np.ndarray, bool]:
    """The 6x6 covariance to publish with an estimate, and whether it is the model's own.

    The model's (``exp(log_variance) * model_covariance_scale`` on the diagonal) when it has one
    and ``use_model_covariance``; otherwise ``fixed_covariance_6x6`` (36 values or 6x6, from
    the node's parameters). Raises InvalidPoseError for unusable log-variances.
    """
    if use_model_covariance and log_variance is not None:
        return covariance_6x6_from_log_variance(log_variance, model_covariance_scale), True
    return np.asarray(fixed_covariance_6x6, dtype=np.float64).reshape(6, 6), False


class Relocalizer:
    """A loaded model file and its inference backend, ready to turn images into poses."""

    def __init__(
        self,
        model_path: str,
        backend: str = "auto",
        num_threads: int = 0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        log: Callable[[str], None] | None = None,
        backend_options: dict | None = None,
        read_uncertainty: bool = True,
    ) -> None:
        """Load and validate ``model_path``; raises ModelFileError / BackendError on failure.

        ``backend_options`` go to ``create_backend`` (TensorRT: engine_cache_dir,
        rebuild_engine, trt_precision). ``read_uncertainty``: use the model's log-variance
        output (format 2 files that declare one; every backend returns it by name) with every
        estimate; checked once at start-up with an inference on a blank image, so a backend that
        cannot deliver it fails here rather than on every frame.
        """
        self.info: ModelInfo = load_model_info(model_path)
        self.backend = create_backend(
            backend, model_path, self.info, num_threads, log=log, **(backend_options or {})
        )
        self.max_pixels = max_pixels
        height, width = self.info.input_hw
        # Reused every frame: no per-frame allocation of the network input.
        self._input_BCHW = np.zeros((1, 3, height, width), dtype=np.float32)
        self._uncertainty_output = self.info.uncertainty_output if read_uncertainty else None
        if self._uncertainty_output is not None:
            self._log_variance_row(self.backend.infer(self._input_BCHW))

    @property
    def has_uncertainty(self) -> bool:
        """Whether estimates carry the model's log-variances (``PoseResult.log_variance``)."""
        return self._uncertainty_output is not None

    def _log_variance_row(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """The uncertainty output of one inference, (6,) or (2,); BackendError if the backend
        did not return it or it is not one row."""
        raw = outputs.get(self._uncertainty_output)
        if raw is None:
            raise BackendError(
                f"the backend returned no {self._uncertainty_output!r} output "
                "(posenet.uncertainty_output)"
            )
        values = np.asarray(raw, dtype=np.float64)
        if values.shape not in ((1, 6), (1, 2)):
            raise BackendError(
                f"uncertainty output {self._uncertainty_output!r} has shape "
                f"{list(values.shape)}; expected [1,6] or [1,2] for one image"
            )
        return values.reshape(-1)

    @staticmethod
    def _checked_log_variance(values: np.ndarray | None) -> np.ndarray | None:
        if values is None:
            return None
        covariance_6x6_from_log_variance(values)  # raises InvalidPoseError when unusable
        return np.repeat(values, 3) if values.size == 2 else values

    def estimate_rgb(self, rgb_HWC: np.ndarray, decode_s: float = 0.0) -> PoseResult:
        """Pose of the camera that took ``rgb_HWC`` (uint8 RGB); raises InvalidPoseError."""
        t0 = time.perf_counter()
        preprocess(rgb_HWC, self.info.resize_shorter, self.info.input_hw, out=self._input_BCHW)
        t1 = time.perf_counter()
        outputs = self.backend.infer(self._input_BCHW)
        t2 = time.perf_counter()
        position = outputs[self.info.position_output]
        quat = outputs[self.info.orientation_output]
        raw_log_variance = self._log_variance_row(outputs) if self.has_uncertainty else None
        position_m = validate_position(np.asarray(position, dtype=np.float64).reshape(-1)[:3])
        quat_wxyz = normalize_quat_wxyz(
            np.asarray(quat, dtype=np.float64).reshape(-1)[:4],
            max_norm_deviation=MAX_QUAT_NORM_DEVIATION,
        )
        log_variance = self._checked_log_variance(raw_log_variance)
        return PoseResult(position_m, quat_wxyz, decode_s, t1 - t0, t2 - t1, log_variance)

    def decode(self, msg, compressed: bool) -> np.ndarray:
        """RGB uint8 image of a sensor_msgs Image or CompressedImage; raises ImageDecodeError."""
        if compressed:
            return compressed_msg_to_rgb(msg, max_pixels=self.max_pixels)
        return image_msg_to_rgb(msg, max_pixels=self.max_pixels)

    def estimate_msg(self, msg, compressed: bool = False) -> PoseResult:
        """Decode ``msg`` and estimate the pose of the camera that took it."""
        t0 = time.perf_counter()
        rgb = self.decode(msg, compressed)
        return self.estimate_rgb(rgb, decode_s=time.perf_counter() - t0)
