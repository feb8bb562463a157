"""The installed TensorRT (import, version checks) and the GPU (name, compute capability).

The GPU is asked through the CUDA driver (libcuda, via ctypes): no Python CUDA package needed,
and a machine without a driver gets a clear EngineError. Nothing here needs a GPU to be tested.
"""

from __future__ import annotations

import ctypes
import re
from typing import Any

from posenet_ros.tensorrt.errors import EngineError

__all__ = [
    "MIN_TENSORRT",
    "TENSORRT_WITHOUT_PRECISION_FLAGS",
    "check_tensorrt_version",
    "import_tensorrt",
    "installed_tensorrt_version",
    "parse_version",
    "query_gpu",
]

MIN_TENSORRT: tuple[int, int] = (8, 5)
#: First TensorRT without the FP16/INT8 builder flags (strongly typed networks only).
TENSORRT_WITHOUT_PRECISION_FLAGS: tuple[int, int] = (11, 0)


def parse_version(text: str) -> tuple[int, int]:
    """``"10.3.0.30"`` -> ``(10, 3)``; raises EngineError on anything else."""
    match = re.match(r"^\s*(\d+)\.(\d+)", str(text))
    if match is None:
        raise EngineError(f"cannot read a version number from {text!r}")
    return int(match[1]), int(match[2])


def check_tensorrt_version(version: str, precision: str | None = None) -> None:
    """Raise EngineError unless TensorRT ``version`` can build/run ``precision`` engines here.

    8.5 to 10.x support every precision; 11.x removed the FP16/INT8 builder flags, so only
    ``fp32`` engines (or loading existing engines: ``precision`` None) are possible.
    """
    parsed = parse_version(version)
    if parsed < MIN_TENSORRT:
        raise EngineError(
            f"TensorRT {version} is too old: posenet_ros needs TensorRT >= "
            f"{MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} (JetPack 5.1 or newer) for the name-based "
            "tensor API; use backend 'onnxruntime' or upgrade JetPack"
        )
    if parsed >= TENSORRT_WITHOUT_PRECISION_FLAGS and precision in ("fp16", "int8"):
        raise EngineError(
            f"TensorRT {version} removed the FP16/INT8 builder flags (strongly typed networks "
            f"only), so a {precision} engine cannot be built from this FP32 model file; use "
            "precision 'fp32' (parameter trt_precision / --precision fp32) or TensorRT 8.5-10.x"
        )


def import_tensorrt() -> Any:
    """``import tensorrt`` (lazily); raises EngineError saying how to proceed without it."""
    try:
        import tensorrt  # noqa: PLC0415  (optional dependency, on the target only)
    except ImportError as exc:
        raise EngineError(
            f"the tensorrt Python package cannot be imported ({exc}); on a Jetson it comes with "
            "JetPack (python3-libnvinfer); elsewhere use backend 'onnxruntime'"
        ) from exc
    return tensorrt


def installed_tensorrt_version() -> str:
    """Version string of the installed TensorRT; raises EngineError when it is missing."""
    return str(getattr(import_tensorrt(), "__version__", "unknown"))


_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76


def query_gpu(device_index: int = 0) -> tuple[str, str]:
    """``(name, "major.minor")`` of CUDA device ``device_index``, via the driver (libcuda).

    The driver API needs no Python CUDA package and honours ``CUDA_VISIBLE_DEVICES``. Raises
    EngineError when there is no driver or no such device.
    """
    libcuda = None
    for library_name in ("libcuda.so.1", "libcuda.so"):
        try:
            libcuda = ctypes.CDLL(library_name)
            break
        except OSError:
            continue
    if libcuda is None:
        raise EngineError("no CUDA driver (libcuda.so.1) on this machine: no GPU to build for")

    def check(what: str, status: int) -> None:
        if status != 0:
            raise EngineError(f"CUDA driver call {what} failed with CUresult {status}")

    try:
        check("cuInit", libcuda.cuInit(0))
        count = ctypes.c_int(0)
        check("cuDeviceGetCount", libcuda.cuDeviceGetCount(ctypes.byref(count)))
        if not 0 <= device_index < count.value:
            raise EngineError(f"CUDA device {device_index} does not exist ({count.value} found)")
        device = ctypes.c_int(0)
        check("cuDeviceGet", libcuda.cuDeviceGet(ctypes.byref(device), device_index))
        name = ctypes.create_string_buffer(256)
        check("cuDeviceGetName", libcuda.cuDeviceGetName(name, 256, device))
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        for value, attribute in (
            (major, _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
            (minor, _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
        ):
            check(
                "cuDeviceGetAttribute",
                libcuda.cuDeviceGetAttribute(ctypes.byref(value), attribute, device),
            )
    except AttributeError as exc:  # a libcuda without the driver API
        raise EngineError(f"libcuda lacks a CUDA driver function: {exc}") from exc
    gpu_name = name.value.decode("utf-8", "replace").strip() or "unknown GPU"
    return gpu_name, f"{major.value}.{minor.value}"
