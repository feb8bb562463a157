"""Open the model file with ONNX Runtime and check it against the contract.

The contract itself -- the ``posenet.*`` keys, :class:`~posenet_core.contract.ModelInfo`,
:func:`~posenet_core.contract.parse_metadata` and the graph signature check
:func:`~posenet_core.contract.validate_session` -- is ``posenet_core.contract``, shared with the
trainer that writes the file. This module adds what only the node does: load the ``.onnx`` with
ONNX Runtime (imported when a file is opened; the ``onnx`` package is not a runtime dependency
on the robot).
"""

from __future__ import annotations

import os
from typing import Any

from posenet_core.contract import EXPORT_HINT, ModelInfo, parse_metadata, validate_session
from posenet_core.errors import ModelFileError

__all__ = ["load_model_info", "load_session_for_inspection"]


def _error(path: str, problem: str) -> ModelFileError:
    return ModelFileError(f"model file {path}: {problem}; {EXPORT_HINT}")


def load_session_for_inspection(path: str) -> Any:
    """Open ``path`` with ONNX Runtime on the CPU, cheaply (no graph optimisation, one thread).

    Raises ModelFileError when the file is missing or ONNX Runtime cannot load it.
    """
    if not os.path.exists(path):
        raise ModelFileError(f"model file not found: {path}; {EXPORT_HINT}")
    if not os.path.isfile(path):
        raise _error(path, "is not a regular file")
    import onnxruntime as ort  # deferred: importing ORT takes ~0.2 s, parse_metadata needs none

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own pybind exception types for every load failure
        raise _error(path, f"cannot be loaded as an ONNX model: {exc}") from exc


def load_model_info(path: str, session: Any = None) -> ModelInfo:
    """Read, validate and describe the model file at ``path``.

    Opens it with ONNX Runtime on the CPU (or uses ``session`` when the caller already holds
    one for this file, so the file is loaded once), validates the metadata (``parse_metadata``)
    and the graph's input/output signature (``validate_session``). Raises ModelFileError with
    the file name, the problem and how to produce a valid file.
    """
    path = os.fspath(path)
    if session is None:
        session = load_session_for_inspection(path)
    try:
        metadata = dict(session.get_modelmeta().custom_metadata_map)
    except Exception as exc:
        raise _error(path, f"its metadata cannot be read: {exc}") from exc
    info = parse_metadata(metadata, path=path)
    validate_session(session, info)
    return info
