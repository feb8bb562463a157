"""How an engine is built: precisions, defaults and the validated build options."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from posenet_ros.tensorrt.errors import EngineError

__all__ = [
    "DEFAULT_CALIBRATION_BATCH",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_PRECISION",
    "DEFAULT_WORKSPACE_MIB",
    "PRECISIONS",
    "BuildOptions",
]

#: Engine precisions: ``fp16`` (default; FP32 where a layer has no FP16 kernel), ``fp32``,
#: ``int8`` (entropy calibration on the exported calibration images; FP16 as fallback).
PRECISIONS: tuple[str, ...] = ("fp16", "fp32", "int8")
DEFAULT_PRECISION = "fp16"
DEFAULT_WORKSPACE_MIB = 1024
DEFAULT_MAX_BATCH = 1
DEFAULT_CALIBRATION_BATCH = 8


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
