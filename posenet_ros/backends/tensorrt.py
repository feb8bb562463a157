"""TensorRT backend (Jetson / NVIDIA GPU).

``tensorrt`` is imported only inside ``create_tensorrt_backend`` so this module, and the
package, import on machines without it. The engine runner itself is not part of this build yet:
creating the backend raises BackendError saying so, and ``backend: auto`` then uses ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Callable

from posenet_ros.errors import BackendError
from posenet_ros.model_file import ModelInfo

_NOT_AVAILABLE = "TensorRT backend not available in this build"


def create_tensorrt_backend(
    model_path: str,
    info: ModelInfo,
    num_threads: int = 0,
    log: Callable[[str], None] | None = None,
):
    """Create the TensorRT backend for ``model_path``; in this build always raises BackendError.

    The message says whether ``tensorrt`` itself is missing or only this build's engine runner,
    and how to proceed (``backend: onnxruntime``).
    """
    try:
        import tensorrt  # noqa: F401  (lazy on purpose: optional dependency)
    except ImportError as exc:
        raise BackendError(
            f"{_NOT_AVAILABLE}: the tensorrt Python package cannot be imported ({exc}); "
            "use backend 'onnxruntime' (or 'auto')"
        ) from exc
    raise BackendError(
        f"{_NOT_AVAILABLE}: tensorrt {getattr(tensorrt, '__version__', '?')} is installed but "
        "this version of posenet_ros has no TensorRT engine runner yet; use backend "
        "'onnxruntime' (or 'auto')"
    )
