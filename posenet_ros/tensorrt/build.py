"""Building an engine from the model file: TensorRT's ONNX parser and builder (FP16, INT8 with
entropy calibration, DLA), and writing the engine and its sidecar into the cache.

UNTESTED ON A GPU HERE: :func:`make_entropy_calibrator` and :func:`build_serialized_engine` call
TensorRT and CUDA; they are exercised against test/fake_tensorrt.py's doubles (see the package
docstring).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posenet_core.calibration import default_calibration_path
from posenet_core.contract import ModelInfo
from posenet_ros.tensorrt.cache import (
    Sidecar,
    atomic_write,
    calibration_cache_path_for,
    make_sidecar,
    read_sidecar,
    sidecar_path_for,
    write_json_atomic,
)
from posenet_ros.tensorrt.calibration import CalibrationBatcher, load_calibration_images
from posenet_ros.tensorrt.cuda import CudaRuntime
from posenet_ros.tensorrt.errors import EngineError, Log, emit
from posenet_ros.tensorrt.gpu import check_tensorrt_version, import_tensorrt, parse_version
from posenet_ros.tensorrt.key import EngineKey
from posenet_ros.tensorrt.options import BuildOptions

__all__ = ["build_engine_file", "build_serialized_engine", "make_entropy_calibrator"]


def make_entropy_calibrator(
    trt: Any, cuda: CudaRuntime, batcher: CalibrationBatcher, cache_path: Path | None
) -> Any:
    """A ``trt.IInt8EntropyCalibrator2`` feeding ``batcher``'s batches, with a cache file.

    When ``cache_path`` holds a cache from an earlier build, TensorRT reads the scales from it
    and skips calibration. The device buffer is freed by the returned object's ``free()``.
    UNTESTED ON A GPU HERE.
    """
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise EngineError(
            f"TensorRT {getattr(trt, '__version__', '?')} has no IInt8EntropyCalibrator2 "
            "(implicit INT8 calibration was removed); build an fp16 or fp32 engine"
        )

    class EntropyCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            # The pybind11 trampoline must be initialised explicitly, or TensorRT crashes.
            base.__init__(self)
            self.device = cuda.malloc(batcher.nbytes)
            self.error: BaseException | None = None
            self.batches_served = 0

        def get_batch_size(self) -> int:
            return batcher.batch_size

        def get_batch(self, names: Sequence[str]) -> list[int] | None:
            # Exceptions must not cross into TensorRT: keep them and report after the build.
            try:
                batch = batcher.next_batch()
                if batch is None:
                    return None
                cuda.copy_to_device(self.device, batch)
                self.batches_served += 1
                return [self.device]
            except BaseException as exc:
                self.error = exc
                return None

        def read_calibration_cache(self) -> bytes | None:
            if cache_path is not None and cache_path.is_file() and cache_path.stat().st_size:
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_path is None:
                return
            try:
                atomic_write(cache_path, bytes(cache))
            except BaseException as exc:
                self.error = exc

        def free(self) -> None:
            if self.device:
                cuda.free(self.device)
                self.device = 0

    return EntropyCalibrator()


def build_serialized_engine(
    model_path: str | Path,
    info: ModelInfo,
    options: BuildOptions,
    *,
    calibration_cache: Path | None = None,
    log: Log | None = None,
) -> bytes:
    """Parse the ONNX model file with TensorRT and build a serialized engine (a "plan").

    FP16 or INT8 (entropy calibration, FP16 fallback) per ``options``, workspace memory limit,
    an optimisation profile for batches 1..``max_batch`` when the batch axis is dynamic, and
    optionally a DLA core with GPU fallback. Raises EngineError with TensorRT's parser errors
    or build failure. UNTESTED ON A GPU HERE.
    """
    trt = import_tensorrt()
    version = str(getattr(trt, "__version__", "0.0"))
    check_tensorrt_version(version, options.precision)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if parse_version(version) < (10, 0):
        # 8.x: ONNX models need an explicit-batch network (the only kind since 10.0).
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    model_bytes = Path(model_path).read_bytes()
    if not parser.parse(model_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(
            f"TensorRT {version} cannot parse {model_path}: " + "; ".join(errors or ["no detail"])
        )
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    if info.input_name not in inputs:
        raise EngineError(
            f"TensorRT sees inputs {', '.join(inputs) or 'none'} in {model_path}; the model file "
            f"names {info.input_name!r}"
        )
    input_dims = [int(d) for d in inputs[info.input_name].shape]
    height, width = info.input_hw

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    dynamic_batch = bool(input_dims) and input_dims[0] < 0
    if dynamic_batch:
        profile = builder.create_optimization_profile()
        profile.set_shape(
            info.input_name,
            (1, 3, height, width),
            (1, 3, height, width),
            (options.max_batch, 3, height, width),
        )
        config.add_optimization_profile(profile)
    elif input_dims and input_dims[0] < options.max_batch:
        raise EngineError(
            f"{model_path} has a fixed batch of {input_dims[0]}; max_batch {options.max_batch} "
            "needs a model exported with a dynamic batch axis"
        )

    calibrator = None
    if options.precision in ("fp16", "int8"):
        if not getattr(builder, "platform_has_fast_fp16", True):
            emit(log, "warning: this GPU has no fast FP16; the engine may be slower than FP32")
        config.set_flag(trt.BuilderFlag.FP16)
    if options.precision == "int8":
        calibration = options.calibration or str(default_calibration_path(model_path))
        batcher = CalibrationBatcher(
            load_calibration_images(calibration, info.input_hw), options.calibration_batch
        )
        emit(
            log,
            f"INT8 calibration: {batcher.num_batches} batches of {batcher.batch_size} images from "
            f"{calibration}"
            + (f" ({batcher.dropped} left out)" if batcher.dropped else "")
            + (
                f"; scales read from {calibration_cache}"
                if calibration_cache is not None and calibration_cache.is_file()
                else ""
            ),
        )
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = make_entropy_calibrator(trt, CudaRuntime.load(), batcher, calibration_cache)
        config.int8_calibrator = calibrator
        if dynamic_batch:
            calibration_profile = builder.create_optimization_profile()
            calibration_profile.set_shape(info.input_name, *([batcher.shape] * 3))
            config.set_calibration_profile(calibration_profile)
    if options.dla_core is not None:
        available = int(getattr(builder, "num_DLA_cores", 0))
        if options.dla_core >= available:
            raise EngineError(
                f"DLA core {options.dla_core} requested; this device has {available} DLA core(s)"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if calibrator is not None and calibrator.error is not None:
        raise EngineError(f"INT8 calibration failed: {calibrator.error}") from calibrator.error
    if serialized is None:
        raise EngineError(
            f"TensorRT {version} could not build an engine for {model_path} "
            "(its messages above say why; try a larger --workspace-mib)"
        )
    return bytes(serialized)


def build_engine_file(
    model_path: str | Path,
    info: ModelInfo,
    key: EngineKey,
    options: BuildOptions,
    engine_path: Path,
    log: Log | None = None,
) -> Sidecar:
    """Build the engine for ``key`` and write it and its sidecar atomically (engine first).

    Returns the new sidecar. The INT8 calibration cache is kept beside the engine.
    """
    emit(
        log,
        f"building TensorRT {options.precision} engine for {model_path} ({key.describe()}); "
        "this takes a few minutes on a Jetson",
    )
    start = time.monotonic()
    calibration_cache = (
        calibration_cache_path_for(engine_path) if options.precision == "int8" else None
    )
    plan = build_serialized_engine(
        model_path, info, options, calibration_cache=calibration_cache, log=log
    )
    seconds = time.monotonic() - start
    try:
        atomic_write(engine_path, plan)
    except OSError as exc:
        raise EngineError(
            f"cannot write the engine {engine_path}: {exc}; set engine_cache_dir "
            "(--engine-cache-dir) to a writable folder"
        ) from exc
    sidecar_path = sidecar_path_for(engine_path)
    write_json_atomic(
        sidecar_path,
        make_sidecar(
            key,
            info,
            options,
            engine_path,
            hashlib.sha256(plan).hexdigest(),
            build_seconds=seconds,
        ),
    )
    emit(log, f"built {engine_path} ({len(plan) / 1e6:.1f} MB) in {seconds:.0f} s")
    return read_sidecar(sidecar_path)
