"""TensorRT backend (Jetson / NVIDIA GPU): a cached engine of the model file, run on one stream.

``tensorrt`` and cuda-python are imported only inside ``create_tensorrt_backend``, so this
module, and the package, import on machines without them. The engine comes from the cache
(``posenet_ros.tensorrt.prepare_engine``): loaded when its key matches this model file,
TensorRT version, GPU and precision; built when the cache holds none for the model (logged,
minutes on a Jetson); refused with StaleEngineError when only a stale one exists, unless
``rebuild_engine``. The backend keeps the ONNX Runtime backend's contract: float32
``[N,3,H,W]`` in, ``{output name: float64 array}`` raw network outputs out (every output the
model file's contract names).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from posenet_core.contract import ModelInfo
from posenet_ros.backends.base import check_image_batch, checked_outputs, output_names
from posenet_ros.errors import BackendError
from posenet_ros.tensorrt import (
    DEFAULT_PRECISION,
    BuildOptions,
    CudaRuntime,
    EngineError,
    EngineRunner,
    Sidecar,
    StaleEngineError,
    check_tensorrt_version,
    current_key,
    prepare_engine,
    query_gpu,
    read_engine_bytes,
)

# Kept word for word from the earlier placeholder: logs and tests look for it.
_NOT_AVAILABLE = "TensorRT backend not available in this build"


class TensorRTBackend:
    """Runs the model's TensorRT engine; see ``backends.Backend`` for the interface.

    ``runner`` is anything with ``run(image_BCHW) -> {output name: array}`` (a
    ``posenet_ros.tensorrt.EngineRunner`` on the target). Inputs are checked here, so a wrong
    frame gives a BackendError naming the problem instead of a CUDA error.
    """

    name = "tensorrt"

    def __init__(
        self,
        runner: Any,
        info: ModelInfo,
        sidecar: Sidecar,
        engine_path: str,
    ) -> None:
        self.runner = runner
        self.info = info
        self.sidecar = sidecar
        self.engine_path = str(engine_path)
        self.max_batch = sidecar.max_batch

    def infer(self, image_BCHW: np.ndarray) -> dict[str, np.ndarray]:
        """``{output name: float64 array}``, raw (see ``backends.Backend``); BackendError on
        failure."""
        check_image_batch(image_BCHW)
        batch, _, height, width = image_BCHW.shape
        if (height, width) != tuple(self.info.input_hw):
            raise BackendError(
                f"input is {height}x{width}; the engine takes "
                f"{self.info.input_hw[0]}x{self.info.input_hw[1]} (posenet.input_size)"
            )
        if not 1 <= batch <= self.max_batch:
            raise BackendError(
                f"batch of {batch} images; this engine takes 1 to {self.max_batch} (build it "
                "with build_engine --max-batch for more)"
            )
        try:
            outputs = self.runner.run(image_BCHW)
        except BackendError as exc:
            raise BackendError(f"TensorRT inference failed: {exc}") from exc
        return checked_outputs(outputs, self.info, batch, "engine")

    def describe(self) -> str:
        """E.g. ``tensorrt 10.3.0 (Orin 8.7, fp16, max batch 1), engine dino.fp16.….engine``."""
        key = self.sidecar.key
        dla = f", DLA core {self.sidecar.dla_core}" if self.sidecar.dla_core is not None else ""
        return (
            f"tensorrt {key.tensorrt_version} ({key.gpu_name} {key.gpu_compute_capability}, "
            f"{key.precision}{dla}, max batch {self.max_batch}), engine {self.engine_path}"
        )

    def close(self) -> None:
        """Release the GPU resources now (they are also released when garbage-collected)."""
        close = getattr(self.runner, "close", None)
        if close is not None:
            close()


def create_tensorrt_backend(
    model_path: str,
    info: ModelInfo,
    num_threads: int = 0,
    log: Callable[[str], None] | None = None,
    *,
    engine_cache_dir: str = "",
    rebuild_engine: bool = False,
    precision: str = DEFAULT_PRECISION,
    allow_build: bool = True,
) -> TensorRTBackend:
    """Create the TensorRT backend for ``model_path`` (``num_threads`` is not used by TensorRT).

    ``engine_cache_dir``: folder of cached engines ("" = the model file's folder).
    ``rebuild_engine``: build the engine even when a matching or stale one is cached.
    ``precision``: fp16 (default), fp32 or int8 (calibrates on ``<model stem>_calibration.npy``).
    ``allow_build``: False raises instead of building a missing engine (verify_engine).

    Raises BackendError (``posenet_ros.tensorrt.StaleEngineError`` for a stale engine) whose
    message says what is missing or different and how to proceed.
    """
    try:
        import tensorrt  # noqa: PLC0415  (lazy on purpose: optional dependency)
    except ImportError as exc:
        raise BackendError(
            f"{_NOT_AVAILABLE}: the tensorrt Python package cannot be imported ({exc}); "
            "use backend 'onnxruntime' (or 'auto')"
        ) from exc
    version = str(getattr(tensorrt, "__version__", "unknown"))
    try:
        check_tensorrt_version(version, precision)
    except EngineError as exc:
        raise BackendError(f"{_NOT_AVAILABLE}: {exc}") from exc
    try:
        cuda = CudaRuntime.load()
    except EngineError as exc:
        raise BackendError(
            f"{_NOT_AVAILABLE}: tensorrt {version} is installed but {exc}; or use backend "
            "'onnxruntime' (or 'auto')"
        ) from exc
    try:
        gpu = query_gpu()
    except EngineError as exc:
        raise BackendError(f"{_NOT_AVAILABLE}: tensorrt {version} is installed but {exc}") from exc
    options = BuildOptions(precision=precision)
    engine_path, sidecar = prepare_engine(
        model_path,
        info,
        engine_cache_dir=engine_cache_dir or None,
        options=options,
        rebuild=rebuild_engine,
        allow_build=allow_build,
        log=log,
        key=current_key(model_path, precision, tensorrt_version=version, gpu=gpu),
    )
    try:
        runner = EngineRunner(
            read_engine_bytes(engine_path, sidecar),
            info.input_name,
            output_names(info),
            dla_core=sidecar.dla_core,
            trt=tensorrt,
            cuda=cuda,
        )
    except StaleEngineError:
        raise
    except EngineError as exc:
        raise EngineError(
            f"cannot load TensorRT engine {engine_path}: {exc} (rebuild_engine:=true rebuilds it)"
        ) from exc
    return TensorRTBackend(runner, info, sidecar, str(engine_path))
