"""Inference backends behind one interface, and the choice between them.

Backends: ``onnxruntime`` (CPU, or CUDA when ONNX Runtime's CUDA provider is installed) and
``tensorrt`` (Jetson / desktop NVIDIA GPU). ``tensorrt`` and CUDA are optional: they are never
imported at module level, so the package imports on machines without them. Every backend
returns all outputs the model file's contract names (``base.output_names``), by name.
"""

from __future__ import annotations

import ctypes
import importlib.util
from collections.abc import Callable
from typing import Any

from posenet_core.contract import ModelInfo
from posenet_ros.backends.base import Backend
from posenet_ros.errors import BackendError
from posenet_ros.tensorrt.options import PRECISIONS

__all__ = [
    "BACKEND_CHOICES",
    "Backend",
    "create_backend",
    "cuda_gpu_present",
    "select_backend",
    "tensorrt_importable",
]

BACKEND_CHOICES: tuple[str, ...] = ("auto", "onnxruntime", "tensorrt")


def select_backend(
    kind: str, *, tensorrt_available: bool, cuda_available: bool
) -> tuple[str, str]:
    """Pure decision table: ``(backend to use, why)`` for a requested ``kind``.

    An explicit ``onnxruntime`` or ``tensorrt`` is honoured as asked (a missing TensorRT then
    fails loudly when the backend is created, never silently falls back). ``auto`` takes
    TensorRT only when it is importable and a CUDA GPU is present, else ONNX Runtime.
    """
    if kind not in BACKEND_CHOICES:
        raise BackendError(f"unknown backend {kind!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if kind != "auto":
        return kind, f"requested backend {kind!r}"
    if tensorrt_available and cuda_available:
        return "tensorrt", "auto: TensorRT is importable and a CUDA GPU is present"
    if tensorrt_available:
        return "onnxruntime", "auto: TensorRT is importable but no CUDA GPU was found"
    if cuda_available:
        return "onnxruntime", "auto: a CUDA GPU is present but TensorRT is not installed"
    return "onnxruntime", "auto: TensorRT is not installed and no CUDA GPU was found"


def tensorrt_importable() -> bool:
    """Whether a ``tensorrt`` Python package is installed (found without importing it)."""
    try:
        return importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):
        return False


def cuda_gpu_present() -> bool:
    """Whether the CUDA driver reports at least one GPU (via libcuda; no Python CUDA package).

    Works on desktops and Jetsons alike and honours ``CUDA_VISIBLE_DEVICES``. False when the
    driver library is absent or fails to initialise.
    """
    for library_name in ("libcuda.so.1", "libcuda.so"):
        try:
            libcuda = ctypes.CDLL(library_name)
        except OSError:
            continue
        try:
            if libcuda.cuInit(0) != 0:
                return False
            count = ctypes.c_int(0)
            if libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
                return False
        except AttributeError:  # not a CUDA driver library after all
            return False
        return count.value > 0
    return False


def create_backend(
    kind: str,
    model_path: str,
    info: ModelInfo,
    num_threads: int = 0,
    log: Callable[[str], None] | None = None,
    *,
    session: Any = None,
    engine_cache_dir: str = "",
    rebuild_engine: bool = False,
    trt_precision: str = "fp16",
) -> Backend:
    """Create the inference backend ``kind`` (one of ``BACKEND_CHOICES``) for a model file.

    ``info`` is ``model_file.load_model_info(model_path)``; the backend checks its own loaded
    graph against it. ``num_threads`` is ONNX Runtime's intra-op thread count (0 = its
    default). ``log`` (str -> None) receives one line saying which backend was chosen and why.
    ``session``: an ONNX Runtime session already open on ``model_path`` to reuse instead of
    loading the file again (only used when the choice is ``onnxruntime``); by default the
    backend opens its own, tuned session, which costs one extra load at start-up.

    TensorRT options (used only when the choice is ``tensorrt``): ``engine_cache_dir`` folder
    of cached engines ("" = beside the model file), ``rebuild_engine`` build the engine even
    when one is cached, ``trt_precision`` one of ``posenet_ros.tensorrt.PRECISIONS`` (fp16
    default).

    ``auto`` falls back to ONNX Runtime (and logs why) when the TensorRT backend cannot be
    created, except for a stale cached engine (StaleEngineError): that is a deployment
    problem to fix, not to hide behind a slower backend. An explicit ``tensorrt`` raises
    BackendError instead of falling back.
    """

    def emit(message: str) -> None:
        if log is not None:
            log(message)

    if kind not in BACKEND_CHOICES:
        raise BackendError(f"unknown backend {kind!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if not isinstance(num_threads, int) or num_threads < 0:
        raise BackendError(f"num_threads {num_threads!r} must be an integer >= 0 (0 = default)")
    if trt_precision not in PRECISIONS:
        raise BackendError(
            f"trt_precision {trt_precision!r} is not one of {', '.join(PRECISIONS)}"
        )
    tensorrt_available = kind == "auto" and tensorrt_importable()
    # Only probe the GPU when it can change the decision (cuInit takes a while).
    cuda_available = tensorrt_available and cuda_gpu_present()
    choice, reason = select_backend(
        kind, tensorrt_available=tensorrt_available, cuda_available=cuda_available
    )
    emit(f"inference backend: {choice} ({reason})")
    if choice == "tensorrt":
        from posenet_ros.backends.tensorrt import create_tensorrt_backend
        from posenet_ros.tensorrt.errors import StaleEngineError

        try:
            return create_tensorrt_backend(
                model_path,
                info,
                num_threads=num_threads,
                log=log,
                engine_cache_dir=engine_cache_dir,
                rebuild_engine=rebuild_engine,
                precision=trt_precision,
            )
        except BackendError as exc:
            if kind != "auto" or isinstance(exc, StaleEngineError):
                raise
            emit(f"TensorRT backend unavailable ({exc}); falling back to onnxruntime")
    from posenet_ros.backends.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(model_path, info, num_threads=num_threads, session=session)
    providers = list(backend.session.get_providers())
    emit(
        f"onnxruntime execution providers: {', '.join(providers)}"
        + (
            " (CUDA)"
            if "CUDAExecutionProvider" in providers
            else " (CPU: this onnxruntime build has no CUDA provider, or no GPU)"
        )
    )
    return backend
