"""ONNX Runtime backend: CPU, or CUDA when ONNX Runtime's CUDA provider is installed."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from posenet_core.contract import ORT_DISABLED_OPTIMIZERS, ModelInfo, validate_session
from posenet_ros.backends.base import check_image_batch, checked_outputs, output_names
from posenet_ros.errors import BackendError


def default_providers() -> list[str]:
    """``CUDAExecutionProvider`` (with CPU fallback) when this ORT build has it, else CPU."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(model_path: str, num_threads: int = 0, providers: list[str] | None = None) -> Any:
    """An inference session tuned for one-frame-at-a-time latency.

    intra-op threads ``num_threads`` (0 = ORT's default, one per core), inter-op 1, sequential
    execution, all graph optimisations. Raises BackendError when ORT cannot load the file.
    """
    if not isinstance(num_threads, int) or num_threads < 0:
        raise BackendError(f"num_threads {num_threads!r} must be an integer >= 0 (0 = default)")
    providers = list(providers) if providers else default_providers()
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(
            model_path,
            sess_options=options,
            providers=providers,
            disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS),
        )
    except Exception as exc:  # ORT raises its own pybind exception types
        raise BackendError(
            f"ONNX Runtime cannot load {model_path} with providers {providers}: {exc}"
        ) from exc


class OnnxRuntimeBackend:
    """Runs the model file with ONNX Runtime; see ``backends.Backend`` for the interface.

    The session is created once (``.session``; or pass ``session`` to reuse one already open on
    the same file) and checked against ``info`` with ``model_file.validate_session``, which
    raises ModelFileError on a mismatch.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str,
        info: ModelInfo,
        num_threads: int = 0,
        providers: list[str] | None = None,
        session: Any = None,
    ) -> None:
        self.model_path = model_path
        self.info = info
        self.num_threads = num_threads
        self.session = (
            session if session is not None else make_session(model_path, num_threads, providers)
        )
        validate_session(self.session, info)
        self._input_name = info.input_name
        self._output_names = output_names(info)

    def infer(self, image_BCHW: np.ndarray) -> dict[str, np.ndarray]:
        """``{output name: float64 array}``, raw (see ``backends.Backend``); BackendError on
        failure."""
        check_image_batch(image_BCHW)
        try:
            values = self.session.run(self._output_names, {self._input_name: image_BCHW})
        except Exception as exc:  # ORT raises its own pybind exception types
            raise BackendError(f"ONNX Runtime inference failed: {exc}") from exc
        return checked_outputs(
            dict(zip(self._output_names, values, strict=True)),
            self.info,
            image_BCHW.shape[0],
            "model",
        )

    def describe(self) -> str:
        """E.g. ``onnxruntime 1.32.0 (CPUExecutionProvider), intra-op threads: default``."""
        threads = self.num_threads if self.num_threads > 0 else "default"
        return (
            f"onnxruntime {ort.__version__} ({', '.join(self.session.get_providers())}), "
            f"intra-op threads: {threads}"
        )
