"""The cache key of an engine: what it depends on (model file content, TensorRT version, GPU,
precision), and the key an engine built here and now would have."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posenet_ros.tensorrt import gpu as gpu_module
from posenet_ros.tensorrt.errors import EngineError
from posenet_ros.tensorrt.options import PRECISIONS

__all__ = ["KEY_FIELDS", "EngineKey", "current_key", "file_sha256"]

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
_DIGEST_CHARS = 16


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
        tensorrt_version = gpu_module.installed_tensorrt_version()
    if gpu is None:
        gpu = gpu_module.query_gpu()
    return EngineKey(
        onnx_sha256=file_sha256(model_path),
        tensorrt_version=str(tensorrt_version),
        gpu_name=str(gpu[0]),
        gpu_compute_capability=str(gpu[1]),
        precision=precision,
    )
