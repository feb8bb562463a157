"""backends: the selection table, the ONNX Runtime backend against the test model's formula,
and the TensorRT placeholder's clear refusal."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import posenet_ros
import posenet_ros.backends as backends
from posenet_ros.backends import (
    BACKEND_CHOICES,
    Backend,
    create_backend,
    cuda_gpu_present,
    select_backend,
    tensorrt_importable,
)
from posenet_ros.backends.onnxruntime import OnnxRuntimeBackend, make_session
from posenet_ros.backends.tensorrt import create_tensorrt_backend
from posenet_ros.errors import BackendError, ModelFileError
from posenet_ros.model_file import load_model_info

from model_factory import make_test_model

QUAT_WXYZ = (0.6, 0.0, 0.0, 0.8)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = make_test_model(
        str(tmp_path_factory.mktemp("models") / "mean.onnx"),
        quat_wxyz=QUAT_WXYZ,
        position_scale=2.5,
    )
    return path, load_model_info(path)


def _solid_batch(colours_rgb, hw=(32, 32)) -> np.ndarray:
    colours = np.asarray(colours_rgb, dtype=np.float32) / np.float32(255.0)
    batch = np.empty((len(colours), 3, *hw), dtype=np.float32)
    batch[:] = colours[:, :, None, None]
    return batch


# --- selection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, tensorrt, cuda, expected, reason_words",
    [
        ("auto", True, True, "tensorrt", ["TensorRT is importable", "CUDA GPU is present"]),
        ("auto", True, False, "onnxruntime", ["no CUDA GPU"]),
        ("auto", False, True, "onnxruntime", ["TensorRT is not installed"]),
        ("auto", False, False, "onnxruntime", ["not installed", "no CUDA GPU"]),
        ("onnxruntime", True, True, "onnxruntime", ["requested"]),
        ("onnxruntime", False, False, "onnxruntime", ["requested"]),
        ("tensorrt", False, False, "tensorrt", ["requested"]),  # fails loudly later, no fallback
        ("tensorrt", True, True, "tensorrt", ["requested"]),
    ],
)
def test_select_backend_table(kind, tensorrt, cuda, expected, reason_words):
    choice, reason = select_backend(kind, tensorrt_available=tensorrt, cuda_available=cuda)
    assert choice == expected
    for word in reason_words:
        assert word in reason


@pytest.mark.parametrize("kind", ["cuda9", "", "ONNXRUNTIME", "trt"])
def test_unknown_backend(kind, model):
    path, info = model
    for call in (
        lambda: select_backend(kind, tensorrt_available=False, cuda_available=False),
        lambda: create_backend(kind, path, info),
    ):
        with pytest.raises(BackendError) as excinfo:
            call()
        message = str(excinfo.value)
        assert repr(kind) in message
        assert all(choice in message for choice in BACKEND_CHOICES)


def test_probes_return_booleans():
    assert isinstance(tensorrt_importable(), bool)
    assert isinstance(cuda_gpu_present(), bool)


# --- ONNX Runtime backend ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["onnxruntime", "auto"])
def test_create_backend_runs_the_model_formula(kind, model):
    path, info = model
    messages: list[str] = []
    backend = create_backend(kind, path, info, num_threads=1, log=messages.append)
    assert isinstance(backend, Backend)
    assert backend.name == "onnxruntime"
    assert messages and messages[0].startswith("inference backend: onnxruntime")
    colours = [(255, 0, 51), (0, 0, 0), (10, 20, 30)]
    outputs = backend.infer(_solid_batch(colours))
    assert list(outputs) == ["position", "orientation"]
    position_m, quat_wxyz = outputs["position"], outputs["orientation"]
    assert position_m.dtype == np.float64 and position_m.shape == (3, 3)
    assert quat_wxyz.dtype == np.float64 and quat_wxyz.shape == (3, 4)
    expected = 2.5 * np.asarray(colours, dtype=np.float64) / 255.0
    np.testing.assert_allclose(position_m, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(quat_wxyz, np.tile(QUAT_WXYZ, (3, 1)), atol=1e-7)
    assert "onnxruntime" in backend.describe() and "CPUExecutionProvider" in backend.describe()
    assert "intra-op threads: 1" in backend.describe()


def test_raw_outputs_are_not_validated(tmp_path):
    path = make_test_model(str(tmp_path / "nan.onnx"), mode="nan")
    backend = create_backend("onnxruntime", path, load_model_info(path))
    position_m = backend.infer(_solid_batch([(1, 2, 3)]))["position"]
    assert np.isnan(position_m).all()
    path = make_test_model(str(tmp_path / "nonunit.onnx"), mode="nonunit_quat")
    quat_wxyz = create_backend("onnxruntime", path, load_model_info(path)).infer(
        _solid_batch([(1, 2, 3)])
    )["orientation"]
    np.testing.assert_array_equal(quat_wxyz, [[2.0, 0.0, 0.0, 0.0]])


def test_session_reuse(model):
    path, info = model
    session = make_session(path, num_threads=1)
    backend = create_backend("onnxruntime", path, info, session=session)
    assert backend.session is session
    assert load_model_info(path, session=backend.session) == info


@pytest.mark.parametrize(
    "image, words",
    [
        (np.zeros((1, 3, 32), np.float32), ["[N,3,H,W]", "(1, 3, 32)"]),
        (np.zeros((1, 3, 32, 32), np.float64), ["float32", "float64"]),
        (np.zeros((1, 4, 32, 32), np.float32), ["(1, 4, 32, 32)"]),
        ([[0.0]], ["None"]),
        (np.zeros((1, 3, 16, 32), np.float32), ["ONNX Runtime inference failed"]),
    ],
    ids=["rank3", "float64", "4-channels", "list", "wrong-height"],
)
def test_infer_rejects_bad_input(model, image, words):
    path, info = model
    backend = OnnxRuntimeBackend(path, info, num_threads=1)
    with pytest.raises(BackendError) as excinfo:
        backend.infer(image)
    for word in words:
        assert word in str(excinfo.value), str(excinfo.value)


def test_backend_checks_its_graph_against_info(tmp_path, model):
    _, info = model  # 32x32
    other = make_test_model(str(tmp_path / "other.onnx"), input_hw=(24, 24), resize_shorter=24)
    with pytest.raises(ModelFileError, match="H = 32"):
        OnnxRuntimeBackend(other, info)


def test_backend_load_failure_is_backend_error(tmp_path, model):
    _, info = model
    text = tmp_path / "text.onnx"
    text.write_text("not a model")
    with pytest.raises(BackendError, match="cannot load"):
        OnnxRuntimeBackend(str(text), info)


@pytest.mark.parametrize("num_threads", [-1, 1.5, "2"])
def test_bad_thread_count(model, num_threads):
    path, info = model
    with pytest.raises(BackendError, match="num_threads"):
        create_backend("onnxruntime", path, info, num_threads=num_threads)


# --- TensorRT ------------------------------------------------------------------------------------


def test_explicit_tensorrt_not_available(model, monkeypatch):
    path, info = model
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # make `import tensorrt` fail here
    with pytest.raises(BackendError) as excinfo:
        create_backend("tensorrt", path, info)
    message = str(excinfo.value)
    assert message.startswith("TensorRT backend not available in this build: ")
    assert "cannot be imported" in message and "onnxruntime" in message


def test_tensorrt_installed_but_no_runner(model, monkeypatch):
    path, info = model
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    with pytest.raises(BackendError, match="not available in this build: tensorrt 10.3.0"):
        create_tensorrt_backend(path, info)


def test_auto_falls_back_when_tensorrt_backend_fails(model, monkeypatch):
    path, info = model
    monkeypatch.setattr(backends, "tensorrt_importable", lambda: True)
    monkeypatch.setattr(backends, "cuda_gpu_present", lambda: True)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    messages: list[str] = []
    backend = create_backend("auto", path, info, log=messages.append)
    assert backend.name == "onnxruntime"
    assert messages[0] == (
        "inference backend: tensorrt (auto: TensorRT is importable and a CUDA GPU is present)"
    )
    assert "falling back to onnxruntime" in messages[1]
    assert "not available in this build" in messages[1]


def test_tensorrt_is_imported_lazily():
    # A fresh interpreter: importing every backend module and running one must not import
    # tensorrt (only creating the TensorRT backend may).
    root = Path(posenet_ros.__file__).resolve().parents[1]
    code = (
        "import sys, posenet_ros.backends, posenet_ros.backends.tensorrt, "
        "posenet_ros.backends.onnxruntime\n"
        "assert 'tensorrt' not in sys.modules, 'tensorrt imported at module level'\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


@pytest.mark.parametrize(
    "rgb, expected_position, expected_quat",
    [
        ((255, 255, 255), [np.nan] * 3, QUAT_WXYZ),
        ((0, 0, 0), [0.0, 0.0, 0.0], (0.0, 0.0, 0.0, 0.0)),
        ((255, 255, 0), [1.0, 1.0, 0.0], (2.0, 0.0, 0.0, 0.0)),
        ((10, 20, 30), [10 / 255, 20 / 255, 30 / 255], QUAT_WXYZ),
        ((255, 0, 51), [1.0, 0.0, 0.2], QUAT_WXYZ),
    ],
)
@pytest.mark.parametrize("opset", [17, 18])
def test_conditional_test_model(tmp_path, rgb, expected_position, expected_quat, opset):
    path = make_test_model(
        str(tmp_path / "conditional.onnx"), mode="conditional", quat_wxyz=QUAT_WXYZ, opset=opset
    )
    backend = create_backend("onnxruntime", path, load_model_info(path), num_threads=1)
    outputs = backend.infer(_solid_batch([rgb, (10, 20, 30)]))
    position_m, quat_wxyz = outputs["position"], outputs["orientation"]
    np.testing.assert_allclose(position_m[0], expected_position, atol=1e-6)
    np.testing.assert_allclose(quat_wxyz[0], expected_quat, atol=1e-7)
    # Each batch row is judged on its own colour.
    np.testing.assert_allclose(position_m[1], [10 / 255, 20 / 255, 30 / 255], atol=1e-6)
