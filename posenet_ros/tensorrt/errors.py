"""The TensorRT code's error types and its one-line log callback."""

from __future__ import annotations

from collections.abc import Callable

from posenet_ros.errors import BackendError

__all__ = ["EngineError", "Log", "StaleEngineError", "emit"]

Log = Callable[[str], None]


class EngineError(BackendError):
    """A TensorRT engine cannot be built, found, verified or loaded."""


class StaleEngineError(EngineError):
    """A cached engine was built for another model file, TensorRT version, GPU or precision."""


def emit(log: Log | None, message: str) -> None:
    """Send ``message`` to ``log`` when there is one."""
    if log is not None:
        log(message)
