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

from posenet_ros.backends import create_backend
from posenet_ros.geometry import normalize_quat_wxyz, validate_position
from posenet_ros.image_codec import DEFAULT_MAX_PIXELS, compressed_msg_to_rgb, image_msg_to_rgb
from posenet_ros.model_file import ModelInfo, load_model_info
from posenet_ros.preprocess import preprocess

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
    ) -> None:
        """Load and validate ``model_path``; raises ModelFileError / BackendError on failure.

        ``backend_options`` go to ``create_backend`` (TensorRT: engine_cache_dir,
        rebuild_engine, trt_precision).
        """
        self.info: ModelInfo = load_model_info(model_path)
        self.backend = create_backend(
            backend, model_path, self.info, num_threads, log=log, **(backend_options or {})
        )
        self.max_pixels = max_pixels
        height, width = self.info.input_hw
        # Reused every frame: no per-frame allocation of the network input.
        self._input_BCHW = np.empty((1, 3, height, width), dtype=np.float32)

    def estimate_rgb(self, rgb_HWC: np.ndarray, decode_s: float = 0.0) -> PoseResult:
        """Pose of the camera that took ``rgb_HWC`` (uint8 RGB); raises InvalidPoseError."""
        t0 = time.perf_counter()
        preprocess(rgb_HWC, self.info.resize_shorter, self.info.input_hw, out=self._input_BCHW)
        t1 = time.perf_counter()
        position, quat = self.backend.infer(self._input_BCHW)
        t2 = time.perf_counter()
        position_m = validate_position(np.asarray(position, dtype=np.float64).reshape(-1)[:3])
        quat_wxyz = normalize_quat_wxyz(
            np.asarray(quat, dtype=np.float64).reshape(-1)[:4],
            max_norm_deviation=MAX_QUAT_NORM_DEVIATION,
        )
        return PoseResult(position_m, quat_wxyz, decode_s, t1 - t0, t2 - t1)

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
