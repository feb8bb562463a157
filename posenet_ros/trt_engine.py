"""TensorRT engines for a model file: build, cache key, sidecar, load (the project's trtexec).

An engine is specific to the GPU and the TensorRT version that built it, so it is built on the
target from the portable ``.onnx`` model file and cached. Each engine file is named by its
**cache key** -- the SHA-256 of the ONNX file's bytes, the TensorRT version, the GPU (name and
compute capability) and the precision -- and has a JSON **sidecar** that records that key, the
build options and the model's ``posenet.*`` metadata::

    <cache dir>/<model stem>.<precision>.<key digest>.engine
    <cache dir>/<model stem>.<precision>.<key digest>.engine.json
    <cache dir>/<model stem>.<precision>.<key digest>.calibration.cache     (int8 only)

The cache directory defaults to the model file's folder. :func:`prepare_engine` is the policy
the node and the CLI share: a cached engine whose sidecar matches the current key is loaded; with
no engine for the model it is built (announced in the log; minutes on a Jetson); an engine of the
same model and precision whose key does **not** match (the ONNX file changed, TensorRT was
upgraded, another GPU) is refused with :class:`StaleEngineError` naming what differs -- never
rebuilt silently -- unless a rebuild is asked for (node parameter ``rebuild_engine``, or the CLI).

Command line (installed as ``ros2 run posenet_ros build_engine``)::

    python -m posenet_ros.trt_engine --model dino.onnx                   # FP16
    python -m posenet_ros.trt_engine --model dino.onnx --precision int8  # dino_calibration.npy
    python -m posenet_ros.trt_engine --model dino.onnx --dla-core 0      # Jetson DLA

Supported TensorRT: 8.5 to 10.x (JetPack 5.1 and 6), through the name-based tensor API
(``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``). TensorRT 11 removed the
FP16/INT8 builder flags: with it only ``fp32`` engines can be built from a plain FP32 model file.
Device memory and the CUDA stream come from cuda-python (``cuda.bindings.runtime``, or the older
``cuda.cudart``); PyTorch is not needed. ``tensorrt`` and ``cuda`` are imported only inside the
functions that need them, so this module imports (and its cache logic is tested) without them.

What cannot be tested on the development machines (no GPU, no TensorRT) is kept in the section
"GPU-touching code" below and written against NVIDIA's API reference; everything else here --
keys, sidecars, cache look-up, the stale-engine policy, calibration batching, the CLI -- is
unit-tested, and test/test_tensorrt_backend.py holds the on-device tests (skipped without a GPU).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import glob
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from posenet_core.calibration import (
    CALIBRATION_SUFFIX,
    default_calibration_path,
    read_calibration_images,
)
from posenet_core.contract import ModelInfo
from posenet_core.errors import CalibrationDataError
from posenet_ros.errors import BackendError, PoseNetError
from posenet_ros.model_file import load_model_info

__all__ = [
    "CALIBRATION_SUFFIX",
    "DEFAULT_PRECISION",
    "PRECISIONS",
    "BuildOptions",
    "CacheLookup",
    "CalibrationBatcher",
    "CudaRuntime",
    "EngineError",
    "EngineKey",
    "EngineRunner",
    "Sidecar",
    "StaleEngineError",
    "build_engine_file",
    "build_parser",
    "build_serialized_engine",
    "check_tensorrt_version",
    "cli",
    "current_key",
    "default_calibration_path",
    "engine_path_for",
    "file_sha256",
    "find_cached_engine",
    "import_tensorrt",
    "load_calibration_images",
    "main",
    "parse_version",
    "prepare_engine",
    "query_gpu",
    "read_engine_bytes",
    "read_sidecar",
    "resolve_cache_dir",
]

#: Engine precisions: ``fp16`` (default; FP32 where a layer has no FP16 kernel), ``fp32``,
#: ``int8`` (entropy calibration on the exported calibration images; FP16 as fallback).
PRECISIONS: tuple[str, ...] = ("fp16", "fp32", "int8")
DEFAULT_PRECISION = "fp16"
DEFAULT_WORKSPACE_MIB = 1024
DEFAULT_MAX_BATCH = 1
DEFAULT_CALIBRATION_BATCH = 8

ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".engine.json"
CALIBRATION_CACHE_SUFFIX = ".calibration.cache"
SIDECAR_FORMAT = "posenet_ros.trt_engine/1"
KEY_FIELDS: tuple[str, ...] = (
    "onnx_sha256",
    "tensorrt_version",
    "gpu_name",
    "gpu_compute_capability",
    "precision",
)
_KEY_LABELS = {
    "onnx_sha256": "model file content (SHA-256)",
    "tensorrt_version": "TensorRT version",
    "gpu_name": "GPU",
    "gpu_compute_capability": "GPU compute capability",
    "precision": "precision",
}
MIN_TENSORRT: tuple[int, int] = (8, 5)
#: First TensorRT without the FP16/INT8 builder flags (strongly typed networks only).
TENSORRT_WITHOUT_PRECISION_FLAGS: tuple[int, int] = (11, 0)
_DIGEST_CHARS = 16
_ENGINE_NAME = re.compile(r"^(?P<stem>.+)\.(?P<precision>[a-z0-9]+)\.(?P<digest>[0-9a-f]{16})$")

Log = Callable[[str], None]


class EngineError(BackendError):
    """A TensorRT engine cannot be built, found, verified or loaded."""


class StaleEngineError(EngineError):
    """A cached engine was built for another model file, TensorRT version, GPU or precision."""


def _emit(log: Log | None, message: str) -> None:
    if log is not None:
        log(message)


# --------------------------------------------------------------------------- key and cache files


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes; raises EngineError when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise EngineError(f"cannot read {path} to hash it: {exc}") from exc
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """What an engine depends on; an engine is reused only when every field matches."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    gpu_compute_capability: str
    precision: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", str(self.onnx_sha256)):
            raise EngineError(
                f"onnx_sha256 {self.onnx_sha256!r} must be 64 lowercase hex digits (a SHA-256)"
            )
        if self.precision not in PRECISIONS:
            raise EngineError(
                f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}"
            )
        for name in ("tensorrt_version", "gpu_name", "gpu_compute_capability"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise EngineError(f"{name} {value!r} must be a non-empty string")

    def as_dict(self) -> dict[str, str]:
        """The key's fields (what the sidecar stores under ``key``)."""
        return {name: getattr(self, name) for name in KEY_FIELDS}

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> EngineKey:
        """Parse a sidecar's ``key``; raises EngineError naming ``source`` and the bad field."""
        if not isinstance(data, dict):
            raise EngineError(f"{source}: 'key' must be an object with {', '.join(KEY_FIELDS)}")
        missing = [name for name in KEY_FIELDS if name not in data]
        if missing:
            raise EngineError(f"{source}: key lacks {', '.join(missing)}")
        try:
            return cls(**{name: data[name] for name in KEY_FIELDS})
        except EngineError as exc:
            raise EngineError(f"{source}: {exc}") from exc

    def digest(self) -> str:
        """First 16 hex digits of the SHA-256 of the key (part of the engine's file name)."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_CHARS]

    def differences(self, current: EngineKey) -> list[str]:
        """Human-readable list of what differs, ``self`` being the engine's, ``current`` now."""
        lines = []
        for name in KEY_FIELDS:
            built, now = getattr(self, name), getattr(current, name)
            if built != now:
                if name == "onnx_sha256":
                    built, now = built[:12], now[:12]
                lines.append(f"{_KEY_LABELS[name]}: engine built for {built!r}, now {now!r}")
        return lines

    def describe(self) -> str:
        """One line: ``TensorRT 10.3.0, GPU Orin (8.7), fp16, model sha256 0123456789ab``."""
        return (
            f"TensorRT {self.tensorrt_version}, GPU {self.gpu_name} "
            f"({self.gpu_compute_capability}), {self.precision}, "
            f"model sha256 {self.onnx_sha256[:12]}"
        )


def resolve_cache_dir(model_path: str | Path, engine_cache_dir: str | Path | None = None) -> Path:
    """The engine cache folder: ``engine_cache_dir`` (``~`` expanded), or the model's folder."""
    if engine_cache_dir is None or str(engine_cache_dir).strip() == "":
        return Path(os.path.abspath(model_path)).parent
    return Path(os.path.expanduser(str(engine_cache_dir))).absolute()


def engine_path_for(cache_dir: str | Path, model_path: str | Path, key: EngineKey) -> Path:
    """``<cache_dir>/<model stem>.<precision>.<key digest>.engine``."""
    stem = Path(model_path).stem
    return Path(cache_dir) / f"{stem}.{key.precision}.{key.digest()}{ENGINE_SUFFIX}"


def sidecar_path_for(engine_path: str | Path) -> Path:
    """The sidecar of an engine: its file name plus ``.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def calibration_cache_path_for(engine_path: str | Path) -> Path:
    """TensorRT's INT8 calibration cache beside the engine (reused when rebuilding it)."""
    engine_path = Path(engine_path)
    base = engine_path.name[: -len(ENGINE_SUFFIX)]
    return engine_path.with_name(base + CALIBRATION_CACHE_SUFFIX)


@dataclass(frozen=True)
class BuildOptions:
    """How an engine is built. Recorded in the sidecar; not part of the cache key.

    ``precision`` one of PRECISIONS; ``workspace_mib`` TensorRT's workspace memory pool limit;
    ``max_batch`` largest batch the engine accepts (the node sends 1); ``dla_core`` a Jetson DLA
    core (None: GPU only; with DLA, layers it cannot run fall back to the GPU); ``calibration``
    the ``.npy`` calibration images (int8 only; default ``<model stem>_calibration.npy``);
    ``calibration_batch`` images per calibration batch.
    """

    precision: str = DEFAULT_PRECISION
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    max_batch: int = DEFAULT_MAX_BATCH
    dla_core: int | None = None
    calibration: str | None = None
    calibration_batch: int = DEFAULT_CALIBRATION_BATCH

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineError(
                f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}"
            )
        for name, low, high in (
            ("workspace_mib", 16, 1 << 20),
            ("max_batch", 1, 1024),
            ("calibration_batch", 1, 1024),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise EngineError(f"{name} {value!r} must be an integer in [{low}, {high}]")
        if self.dla_core is not None:
            if isinstance(self.dla_core, bool) or not isinstance(self.dla_core, int):
                raise EngineError(f"dla_core {self.dla_core!r} must be an integer >= 0 or None")
            if self.dla_core < 0:
                raise EngineError(f"dla_core {self.dla_core} must be >= 0 (or None: GPU only)")
            if self.precision == "fp32":
                raise EngineError("a DLA engine must be fp16 or int8 (DLA has no FP32 kernels)")
            if self.max_batch != 1:
                raise EngineError(
                    f"a DLA engine is built for batch 1 (static shapes); got max_batch "
                    f"{self.max_batch}"
                )
        if self.calibration is not None and self.precision != "int8":
            raise EngineError(
                f"calibration images apply to int8 engines only (precision is {self.precision})"
            )

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for the sidecar."""
        return asdict(self)


@dataclass(frozen=True)
class Sidecar:
    """A parsed, validated sidecar file."""

    path: Path
    key: EngineKey
    engine_file: str
    engine_sha256: str
    model_file: str
    build: dict[str, Any]
    data: dict[str, Any] = field(hash=False, compare=False)

    @property
    def dla_core(self) -> int | None:
        """The DLA core the engine was built for (None: GPU)."""
        value = self.build.get("dla_core")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def max_batch(self) -> int:
        """Largest batch the engine was built to accept."""
        value = self.build.get("max_batch", 1)
        return value if isinstance(value, int) and value >= 1 else 1


def make_sidecar(
    key: EngineKey,
    info: ModelInfo,
    options: BuildOptions,
    engine_path: Path,
    engine_sha256: str,
    *,
    build_seconds: float | None = None,
) -> dict[str, Any]:
    """The sidecar's content for a freshly built engine."""
    return {
        "format": SIDECAR_FORMAT,
        "key": key.as_dict(),
        "key_digest": key.digest(),
        "engine_file": engine_path.name,
        "engine_sha256": engine_sha256,
        "model_file": os.path.basename(info.path),
        "model_path": os.path.abspath(info.path),
        "model_metadata": dict(info.metadata),
        "build": options.as_dict(),
        "build_seconds": None if build_seconds is None else round(float(build_seconds), 1),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "built_by": "posenet_ros.trt_engine",
    }


def read_sidecar(path: str | Path) -> Sidecar:
    """Read and validate an engine's sidecar; raises EngineError naming the file and problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise EngineError(f"engine sidecar {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineError(f"cannot read engine sidecar {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EngineError(f"engine sidecar {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EngineError(f"engine sidecar {path} must hold a JSON object")
    if data.get("format") != SIDECAR_FORMAT:
        raise EngineError(
            f"engine sidecar {path} has format {data.get('format')!r}; expected {SIDECAR_FORMAT!r}"
        )
    key = EngineKey.from_dict(data.get("key"), source=f"engine sidecar {path}")
    strings = {}
    for name in ("engine_file", "engine_sha256", "model_file"):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise EngineError(f"engine sidecar {path}: {name!r} must be a non-empty string")
        strings[name] = value
    if not re.fullmatch(r"[0-9a-f]{64}", strings["engine_sha256"]):
        raise EngineError(f"engine sidecar {path}: engine_sha256 must be a hex SHA-256")
    build = data.get("build", {})
    if not isinstance(build, dict):
        raise EngineError(f"engine sidecar {path}: 'build' must be an object")
    return Sidecar(path=path, key=key, build=build, data=data, **strings)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp_name, 0o666 & ~mask)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically; raises EngineError on I/O errors."""
    try:
        _atomic_write(Path(path), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    except OSError as exc:
        raise EngineError(f"cannot write {path}: {exc}") from exc


@dataclass
class CacheLookup:
    """What the cache holds for one model file and key.

    ``status``: ``"hit"`` (``engine_path`` exists and its sidecar matches ``key``),
    ``"missing"`` (no engine of this model and precision) or ``"stale"`` (engines of this model
    and precision exist but none matches: ``stale`` lists ``(engine path, reasons)``).
    """

    status: str
    key: EngineKey
    engine_path: Path
    sidecar: Sidecar | None = None
    stale: list[tuple[Path, list[str]]] = field(default_factory=list)

    def stale_message(self) -> str:
        """The stale engines and what differs, one per line."""
        return "\n".join(f"  {path}: " + "; ".join(reasons) for path, reasons in self.stale)


def find_cached_engine(
    cache_dir: str | Path, model_path: str | Path, key: EngineKey
) -> CacheLookup:
    """Look in ``cache_dir`` for the engine of ``model_path`` with ``key`` (no TensorRT needed).

    Engines of the same model file name and precision with another key, or with a missing or
    unreadable sidecar, are reported as stale with the reasons; engines of other precisions
    or of other model files are ignored.
    """
    cache_dir = Path(cache_dir)
    model_name = os.path.basename(model_path)
    stem = Path(model_path).stem
    expected = engine_path_for(cache_dir, model_path, key)
    lookup = CacheLookup(status="missing", key=key, engine_path=expected)
    pattern = os.path.join(
        glob.escape(str(cache_dir)), glob.escape(f"{stem}.{key.precision}.") + "*" + ENGINE_SUFFIX
    )
    # An engine whose sidecar was deleted or damaged counts as stale: it must not be loaded or
    # overwritten unnoticed.
    for engine in sorted(Path(p) for p in glob.glob(pattern)):
        match = _ENGINE_NAME.match(engine.name[: -len(ENGINE_SUFFIX)])
        if match is None or match["stem"] != stem or match["precision"] != key.precision:
            continue  # e.g. "dino.fp16.x.fp16.<digest>" belongs to model "dino.fp16.x"
        # A sidecar without its engine is not globbed: nothing to load, nothing to protect.
        try:
            sidecar = read_sidecar(sidecar_path_for(engine))
        except EngineError as exc:
            lookup.stale.append((engine, [f"sidecar unusable ({exc})"]))
            continue
        if sidecar.model_file != model_name:
            continue  # another model whose stem happens to match the pattern
        if engine == expected and sidecar.key == key:
            lookup.status, lookup.sidecar = "hit", sidecar
            continue
        reasons = sidecar.key.differences(key) or [
            f"sidecar key digest {sidecar.key.digest()} does not match the file name"
        ]
        lookup.stale.append((engine, reasons))
    if lookup.status != "hit" and lookup.stale:
        lookup.status = "stale"
    return lookup


def read_engine_bytes(engine_path: str | Path, sidecar: Sidecar) -> bytes:
    """The engine file's bytes, checked against the SHA-256 its sidecar recorded.

    Raises StaleEngineError when the file changed since it was built (truncated, replaced).
    """
    try:
        data = Path(engine_path).read_bytes()
    except OSError as exc:
        raise EngineError(f"cannot read TensorRT engine {engine_path}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sidecar.engine_sha256:
        raise StaleEngineError(
            f"TensorRT engine {engine_path} does not match its sidecar (SHA-256 {actual[:12]}, "
            f"sidecar says {sidecar.engine_sha256[:12]}): the file was changed or truncated "
            "after it was built"
        )
    return data


# ------------------------------------------------------------------------------ TensorRT / GPU ids


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


def current_key(
    model_path: str | Path,
    precision: str,
    *,
    tensorrt_version: str | None = None,
    gpu: tuple[str, str] | None = None,
) -> EngineKey:
    """The cache key an engine of ``model_path`` built here and now would have.

    ``tensorrt_version`` and ``gpu`` (name, compute capability) default to what is installed
    (importing tensorrt, asking the CUDA driver); pass them to compute keys without either.
    """
    if tensorrt_version is None:
        tensorrt_version = installed_tensorrt_version()
    if gpu is None:
        gpu = query_gpu()
    return EngineKey(
        onnx_sha256=file_sha256(model_path),
        tensorrt_version=str(tensorrt_version),
        gpu_name=str(gpu[0]),
        gpu_compute_capability=str(gpu[1]),
        precision=precision,
    )


# ------------------------------------------------------------------------------ calibration data


def load_calibration_images(path: str | Path, input_hw: tuple[int, int]) -> np.ndarray:
    """The calibration images posenet_train.export wrote: float32 ``[N,3,H,W]`` RGB, 0..1.

    :func:`posenet_core.calibration.read_calibration_images` checks them (and their JSON
    description); EngineError names the file, the bad value and what is expected.
    """
    try:
        return read_calibration_images(path, input_hw)
    except CalibrationDataError as exc:
        raise EngineError(str(exc)) from None


class CalibrationBatcher:
    """Calibration images in equal batches for TensorRT's calibrator.

    TensorRT calibrates a dynamic-batch network at one fixed shape (the calibration profile), so
    every batch has ``batch_size`` images: ``min(batch_size, N)``; the last ``dropped`` images
    that do not fill a batch are left out.
    """

    def __init__(self, images: np.ndarray, batch_size: int = DEFAULT_CALIBRATION_BATCH) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EngineError(f"calibration batch size {batch_size!r} must be an integer >= 1")
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[0] < 1 or images.dtype != np.float32:
            raise EngineError(
                f"calibration images must be float32 [N,3,H,W] with N >= 1, got "
                f"{images.dtype} {list(images.shape)}"
            )
        self.images = images
        self.batch_size = min(batch_size, images.shape[0])
        self.num_batches = images.shape[0] // self.batch_size
        self.dropped = images.shape[0] - self.num_batches * self.batch_size
        self._next = 0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape of every batch, ``(batch_size, 3, H, W)``."""
        return (self.batch_size, *(int(d) for d in self.images.shape[1:]))  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        """Bytes of one batch."""
        return int(np.prod(self.shape)) * self.images.itemsize

    def next_batch(self) -> np.ndarray | None:
        """The next batch (C-contiguous float32), or None when all were handed out."""
        if self._next >= self.num_batches:
            return None
        start = self._next * self.batch_size
        self._next += 1
        return np.ascontiguousarray(self.images[start : start + self.batch_size])

    def reset(self) -> None:
        """Start again from the first batch."""
        self._next = 0


# ============================================================================== GPU-touching code
# Everything below until the CLI calls TensorRT or CUDA. No GPU and no TensorRT exist on the
# development machines: this code is written against NVIDIA's Python API reference (TensorRT
# 8.5-10.x, cuda-python), exercised here only against test doubles of those APIs, and checked
# for real by the on-device tests in test/test_tensorrt_backend.py and the verify_engine CLI.


def _load_cuda_runtime_module() -> Any:
    try:
        from cuda.bindings import runtime  # noqa: PLC0415  cuda-python >= 12.6 layout
    except ImportError:
        try:
            from cuda import cudart as runtime  # noqa: PLC0415  older cuda-python layout
        except ImportError as exc:
            raise EngineError(
                f"cuda-python cannot be imported ({exc}); install the release matching your "
                "CUDA major version, e.g. `pip install 'cuda-python>=12,<13'` on JetPack 6 "
                "(CUDA 12) or `pip install 'cuda-python>=11.8,<12'` on JetPack 5 (CUDA 11)"
            ) from exc
    return runtime


class CudaRuntime:
    """The few CUDA runtime calls the engine code needs, from cuda-python, with checked errors.

    cuda-python's functions return tuples ``(cudaError_t, *results)``; every call here checks
    the error and raises EngineError naming the call and CUDA's message. UNTESTED ON A GPU HERE.
    """

    def __init__(self, module: Any) -> None:
        self.rt = module

    @classmethod
    def load(cls) -> CudaRuntime:
        """cuda-python's runtime module (``cuda.bindings.runtime`` or ``cuda.cudart``)."""
        return cls(_load_cuda_runtime_module())

    def call(self, what: str, result: Any) -> Any:
        """Check a cuda-python result tuple; return its value(s) (None when it has none)."""
        if not isinstance(result, tuple):
            result = (result,)
        error, values = result[0], result[1:]
        if error != self.rt.cudaError_t.cudaSuccess:
            name = getattr(error, "name", str(error))
            detail = ""
            try:
                message = self.rt.cudaGetErrorString(error)
                message = message[1] if isinstance(message, tuple) else message
                detail = message.decode() if isinstance(message, bytes) else str(message)
            except Exception:  # the message is a courtesy; the error name is enough
                detail = ""
            raise EngineError(f"CUDA {what} failed: {name}" + (f" ({detail})" if detail else ""))
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def malloc(self, nbytes: int) -> int:
        """Device allocation of ``nbytes``; returns the device pointer as an int."""
        return int(self.call("cudaMalloc", self.rt.cudaMalloc(int(nbytes))))

    def free(self, pointer: int) -> None:
        """Free a device allocation."""
        self.call("cudaFree", self.rt.cudaFree(pointer))

    def stream_create(self) -> Any:
        """A new CUDA stream."""
        return self.call("cudaStreamCreate", self.rt.cudaStreamCreate())

    def stream_destroy(self, stream: Any) -> None:
        """Destroy a stream made by stream_create."""
        self.call("cudaStreamDestroy", self.rt.cudaStreamDestroy(stream))

    def stream_synchronize(self, stream: Any) -> None:
        """Wait until all work queued on ``stream`` has finished."""
        self.call("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(stream))

    def copy_to_device(self, device: int, host: np.ndarray, stream: Any = None) -> None:
        """Copy a C-contiguous host array to ``device`` (on ``stream``, or synchronously)."""
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        if stream is None:
            result = self.rt.cudaMemcpy(device, host.ctypes.data, host.nbytes, kind)
            self.call("cudaMemcpy", result)
        else:
            self.call(
                "cudaMemcpyAsync",
                self.rt.cudaMemcpyAsync(device, host.ctypes.data, host.nbytes, kind, stream),
            )

    def copy_to_host(self, host: np.ndarray, device: int, stream: Any) -> None:
        """Queue a copy of ``host.nbytes`` from ``device`` into the C-contiguous ``host``."""
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.call(
            "cudaMemcpyAsync",
            self.rt.cudaMemcpyAsync(host.ctypes.data, device, host.nbytes, kind, stream),
        )


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
                _atomic_write(cache_path, bytes(cache))
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
            _emit(log, "warning: this GPU has no fast FP16; the engine may be slower than FP32")
        config.set_flag(trt.BuilderFlag.FP16)
    if options.precision == "int8":
        calibration = options.calibration or str(default_calibration_path(model_path))
        batcher = CalibrationBatcher(
            load_calibration_images(calibration, info.input_hw), options.calibration_batch
        )
        _emit(
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


def _stream_handle(stream: Any) -> int:
    """The integer handle TensorRT's ``execute_async_v3`` takes, from a cudaStream_t."""
    try:
        return int(stream)
    except TypeError:
        return int(stream.getPtr())


class EngineRunner:
    """Runs a deserialized TensorRT engine on one CUDA stream: the node's inference on a GPU.

    Uses only the name-based tensor API of TensorRT >= 8.5 (``num_io_tensors``,
    ``get_tensor_name/mode/dtype``, ``set_input_shape``, ``get_tensor_shape``,
    ``set_tensor_address``, ``execute_async_v3``). Device buffers are allocated on first use
    and grown when a larger batch arrives. Not thread-safe: one caller at a time (the node's
    inference worker). UNTESTED ON A GPU HERE.
    """

    def __init__(
        self,
        engine_bytes: bytes,
        input_name: str,
        output_names: Sequence[str],
        *,
        dla_core: int | None = None,
        trt: Any = None,
        cuda: CudaRuntime | None = None,
    ) -> None:
        self._trt = trt if trt is not None else import_tensorrt()
        self._cuda = cuda if cuda is not None else CudaRuntime.load()
        self._buffers: dict[str, tuple[int, int]] = {}
        self._stream = None
        self._logger = self._trt.Logger(self._trt.Logger.WARNING)
        self._runtime = self._trt.Runtime(self._logger)
        if dla_core is not None:
            self._runtime.DLA_core = int(dla_core)
        self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise EngineError(
                "TensorRT cannot deserialize the engine (built by another TensorRT version or "
                "for another GPU, or corrupt); rebuild it"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        input_mode = self._trt.TensorIOMode.INPUT
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == input_mode]
        self._all_outputs = [n for n in names if n not in inputs]
        if inputs != [input_name]:
            raise EngineError(
                f"the engine's inputs are {inputs}; the model file's contract has one, "
                f"{input_name!r}"
            )
        missing = [n for n in output_names if n not in self._all_outputs]
        if missing:
            raise EngineError(
                f"the engine has no output(s) {missing}; its outputs are {self._all_outputs}"
            )
        self.input_name = input_name
        self.output_names = list(output_names)
        self._dtypes = {n: self._numpy_dtype(self.engine.get_tensor_dtype(n)) for n in names}
        if self._dtypes[input_name] != np.float32:
            raise EngineError(
                f"the engine's input {input_name!r} is {self._dtypes[input_name]}; "
                "expected float32"
            )
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineError("TensorRT could not create an execution context (out of memory?)")
        self._stream = self._cuda.stream_create()

    def _numpy_dtype(self, trt_dtype: Any) -> np.dtype:
        try:
            return np.dtype(self._trt.nptype(trt_dtype))
        except TypeError:  # BF16/FP8/INT4 have no numpy type: raw bytes of the right size
            return np.dtype((np.void, int(trt_dtype.itemsize)))

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, capacity = self._buffers.get(name, (0, 0))
        if capacity < nbytes:
            if pointer:
                self._cuda.free(pointer)
                del self._buffers[name]
            pointer = self._cuda.malloc(max(nbytes, 1))
            self._buffers[name] = (pointer, max(nbytes, 1))
        return pointer

    def run(self, image_BCHW: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs (``output_names``) for one C-contiguous float32 ``[N,3,H,W]`` batch."""
        image = np.ascontiguousarray(image_BCHW, dtype=np.float32)
        shape = tuple(int(d) for d in image.shape)
        if not self.context.set_input_shape(self.input_name, shape):
            raise EngineError(
                f"input shape {list(shape)} is outside the engine's optimisation profile"
            )
        input_pointer = self._device_buffer(self.input_name, image.nbytes)
        self.context.set_tensor_address(self.input_name, input_pointer)
        host_outputs: dict[str, tuple[np.ndarray, int]] = {}
        for name in self._all_outputs:  # every I/O tensor needs an address, wanted or not
            out_shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in out_shape):
                raise EngineError(f"output {name!r} has unresolved shape {list(out_shape)}")
            host = np.empty(out_shape, dtype=self._dtypes[name])
            pointer = self._device_buffer(name, host.nbytes)
            self.context.set_tensor_address(name, pointer)
            host_outputs[name] = (host, pointer)
        self._cuda.copy_to_device(input_pointer, image, self._stream)
        if not self.context.execute_async_v3(_stream_handle(self._stream)):
            raise EngineError("TensorRT execute_async_v3 failed (see TensorRT's messages)")
        for name in self.output_names:
            host, pointer = host_outputs[name]
            self._cuda.copy_to_host(host, pointer, self._stream)
        self._cuda.stream_synchronize(self._stream)
        return {name: host_outputs[name][0] for name in self.output_names}

    def close(self) -> None:
        """Free the device buffers and the stream (also done when garbage-collected)."""
        buffers, self._buffers = self._buffers, {}
        for pointer, _ in buffers.values():
            try:
                self._cuda.free(pointer)
            except EngineError:
                pass  # shutting down: nothing useful to do with a failed free
        if self._stream is not None:
            stream, self._stream = self._stream, None
            try:
                self._cuda.stream_destroy(stream)
            except EngineError:
                pass

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # never raise from a finaliser
            pass


# ==================================================================== end of GPU-touching code


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
    _emit(
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
        _atomic_write(engine_path, plan)
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
    _emit(log, f"built {engine_path} ({len(plan) / 1e6:.1f} MB) in {seconds:.0f} s")
    return read_sidecar(sidecar_path)


def _remove_stale(stale: list[tuple[Path, list[str]]], log: Log | None) -> None:
    for engine, reasons in stale:
        for path in (engine, sidecar_path_for(engine), calibration_cache_path_for(engine)):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                _emit(log, f"could not remove stale {path}: {exc}")
                continue
        _emit(log, f"removed stale engine {engine} ({'; '.join(reasons)})")


def prepare_engine(
    model_path: str | Path,
    info: ModelInfo,
    *,
    engine_cache_dir: str | Path | None = None,
    options: BuildOptions | None = None,
    rebuild: bool = False,
    allow_build: bool = True,
    log: Log | None = None,
    key: EngineKey | None = None,
    build: Callable[..., Sidecar] = build_engine_file,
) -> tuple[Path, Sidecar]:
    """Find or build the engine of ``model_path`` for this TensorRT, GPU and precision.

    * a matching cached engine is used (``rebuild`` builds it again);
    * with no engine of this model and precision in the cache, one is built (``allow_build``
      False raises EngineError instead);
    * when only engines with another key exist (stale), StaleEngineError says what differs and
      how to rebuild -- unless ``rebuild``, which builds the new engine and then removes the
      stale ones.

    ``key`` defaults to :func:`current_key` (tensorrt and the CUDA driver); ``build`` is the
    builder (default :func:`build_engine_file`). Returns ``(engine path, sidecar)``.
    """
    options = options or BuildOptions()
    model_path = Path(model_path)
    cache_dir = resolve_cache_dir(model_path, engine_cache_dir)
    key = key or current_key(model_path, options.precision)
    if key.precision != options.precision:
        raise EngineError(
            f"key precision {key.precision} differs from the build precision {options.precision}"
        )
    lookup = find_cached_engine(cache_dir, model_path, key)
    if lookup.status == "hit" and not rebuild:
        _emit(log, f"using cached TensorRT engine {lookup.engine_path} ({key.describe()})")
        assert lookup.sidecar is not None
        return lookup.engine_path, lookup.sidecar
    if lookup.status == "stale" and not rebuild:
        raise StaleEngineError(
            f"the cached TensorRT engine(s) for {model_path.name} ({key.precision}) in "
            f"{cache_dir} do not match this model file, TensorRT and GPU:\n"
            f"{lookup.stale_message()}\n"
            "An engine is never rebuilt silently: set the node parameter rebuild_engine:=true "
            "(or run `ros2 run posenet_ros build_engine --model "
            f"{model_path} --precision {key.precision}"
            + (f" --engine-cache-dir {cache_dir}" if engine_cache_dir else "")
            + "`) to build a new one, which takes minutes on a Jetson; or delete the files above"
        )
    if not allow_build:
        raise EngineError(
            f"no TensorRT {key.precision} engine for {model_path.name} in {cache_dir} "
            f"({key.describe()}); build it first with `ros2 run posenet_ros build_engine "
            f"--model {model_path} --precision {key.precision}`"
        )
    if lookup.status == "hit":
        _emit(log, f"rebuild requested: replacing {lookup.engine_path}")
    elif lookup.status == "stale":
        _emit(log, "rebuild requested: replacing stale engine(s)\n" + lookup.stale_message())
    else:
        _emit(log, f"no cached TensorRT engine for {model_path.name} in {cache_dir}")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngineError(
            f"cannot create the engine cache folder {cache_dir}: {exc}; set engine_cache_dir "
            "to a writable folder"
        ) from exc
    if not os.access(cache_dir, os.W_OK):
        raise EngineError(
            f"the engine cache folder {cache_dir} is not writable; set engine_cache_dir "
            "(--engine-cache-dir) to a writable folder, e.g. ~/.cache/posenet_ros"
        )
    sidecar = build(model_path, info, key, options, lookup.engine_path, log)
    if lookup.stale:
        _remove_stale(lookup.stale, log)
    return lookup.engine_path, sidecar


# ------------------------------------------------------------------------------------------- CLI


def main(
    model: str | Path,
    *,
    engine_cache_dir: str | Path | None = None,
    precision: str = DEFAULT_PRECISION,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    max_batch: int = DEFAULT_MAX_BATCH,
    dla_core: int | None = None,
    calibration: str | Path | None = None,
    calibration_batch: int = DEFAULT_CALIBRATION_BATCH,
    overwrite: bool = False,
    log: Log = print,
    key: EngineKey | None = None,
    build: Callable[..., Sidecar] = build_engine_file,
) -> Path:
    """Build (or reuse) the TensorRT engine of the model file ``model``; returns its path.

    A cached engine with the same key is kept unless ``overwrite``; stale engines of this model
    and precision (another ONNX file content, TensorRT or GPU) are replaced -- running this
    command is the explicit rebuild. INT8 reads ``calibration`` (default: the
    ``<model stem>_calibration.npy`` posenet_train.export wrote beside the model). ``key`` and
    ``build`` exist for tests. Raises PoseNetError subclasses with a clear message.
    """
    model = Path(model)
    info = load_model_info(str(model))
    if precision == "int8" and calibration is None:
        calibration = default_calibration_path(model)
    options = BuildOptions(
        precision=precision,
        workspace_mib=workspace_mib,
        max_batch=max_batch,
        dla_core=dla_core,
        calibration=None if calibration is None else str(calibration),
        calibration_batch=calibration_batch,
    )
    if options.precision == "int8":
        load_calibration_images(str(options.calibration), info.input_hw)  # fail before building
    key = key or current_key(model, precision)
    cache_dir = resolve_cache_dir(model, engine_cache_dir)
    lookup = find_cached_engine(cache_dir, model, key)
    if lookup.status == "hit" and not overwrite:
        assert lookup.sidecar is not None
        built_with = {k: lookup.sidecar.build.get(k) for k in ("max_batch", "dla_core")}
        wanted = {"max_batch": max_batch, "dla_core": dla_core}
        note = (
            f" (it was built with {built_with}; you asked for {wanted})"
            if built_with != wanted
            else ""
        )
        log(
            f"{lookup.engine_path} exists for this model, TensorRT and GPU: kept{note} "
            "(pass --overwrite to build it again)"
        )
        return lookup.engine_path
    path, _ = prepare_engine(
        model,
        info,
        engine_cache_dir=engine_cache_dir,
        options=options,
        rebuild=True,
        log=log,
        key=key,
        build=build,
    )
    return path


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``build_engine`` argument parser."""
    p = argparse.ArgumentParser(
        prog="build_engine",
        description="Build the TensorRT engine of a posenet model file (.onnx) on this machine "
        "and cache it, named by its key (model content, TensorRT version, GPU, precision).",
    )
    p.add_argument("--model", required=True, help="the model file (.onnx) to build an engine for")
    p.add_argument(
        "--engine-cache-dir",
        default=None,
        help="folder of the cached engines (default: the model file's folder); the node's "
        "engine_cache_dir parameter must name the same folder",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULT_PRECISION,
        help=f"engine precision (default {DEFAULT_PRECISION}); int8 calibrates on the "
        "exported calibration images",
    )
    p.add_argument(
        "--workspace-mib",
        type=_positive_int,
        default=DEFAULT_WORKSPACE_MIB,
        help=f"TensorRT workspace memory limit in MiB (default {DEFAULT_WORKSPACE_MIB})",
    )
    p.add_argument(
        "--max-batch",
        type=_positive_int,
        default=DEFAULT_MAX_BATCH,
        help=f"largest batch the engine accepts (default {DEFAULT_MAX_BATCH}; the node sends 1)",
    )
    p.add_argument(
        "--dla-core",
        type=_non_negative_int,
        default=None,
        help="run on this Jetson DLA core (0 or 1), GPU fallback for unsupported layers "
        "(default: GPU only)",
    )
    p.add_argument(
        "--calibration",
        default=None,
        help="int8 only: calibration images .npy (default <model stem>_calibration.npy beside "
        "the model, written by posenet_train.export)",
    )
    p.add_argument(
        "--calibration-batch",
        type=_positive_int,
        default=DEFAULT_CALIBRATION_BATCH,
        help=f"int8 only: images per calibration batch (default {DEFAULT_CALIBRATION_BATCH})",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="build again even when an engine with the same key is cached",
    )
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``build_engine`` / ``python -m posenet_ros.trt_engine``; exit status."""
    args = build_parser().parse_args(argv)
    try:
        main(
            args.model,
            engine_cache_dir=args.engine_cache_dir,
            precision=args.precision,
            workspace_mib=args.workspace_mib,
            max_batch=args.max_batch,
            dla_core=args.dla_core,
            calibration=args.calibration,
            calibration_batch=args.calibration_batch,
            overwrite=args.overwrite,
        )
    except PoseNetError as exc:
        print(f"build_engine: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
