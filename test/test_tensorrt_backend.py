"""TensorRT backend: its contract, error messages, backend selection, the verify_engine CLI.

Three kinds of test:

* without TensorRT: the backend's input/output contract over a stand-in runner, every refusal
  message (no tensorrt, too old, TensorRT 11 with fp16, no cuda-python, no GPU, stale engine),
  create_backend's options and fallbacks, verify_engine's comparison and CLI;
* against test doubles of the TensorRT and cuda-python APIs (test/fake_tensorrt.py, strict
  where NVIDIA's documentation is): the whole path build -> cache -> load -> run, for TensorRT
  8.6, 10.x and 11.x behaviour, INT8 calibration batches and cache, DLA options, buffers;
* on a machine with TensorRT, cuda-python and an NVIDIA GPU (a Jetson): real engine builds and
  runs compared with ONNX Runtime. They are skipped elsewhere, with the reason.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import posenet_ros.backends as backends
import posenet_ros.backends.tensorrt as tensorrt_backend
import posenet_ros.tensorrt as trt_engine
import posenet_ros.tensorrt.cuda as trt_cuda
import posenet_ros.tensorrt.gpu as trt_gpu
from posenet_ros.backends import create_backend, cuda_gpu_present, tensorrt_importable
from posenet_ros.backends.onnxruntime import OnnxRuntimeBackend
from posenet_ros.backends.tensorrt import TensorRTBackend, create_tensorrt_backend
from posenet_ros.errors import BackendError
from posenet_ros.model_file import load_model_info
from posenet_ros.tensorrt import (
    BuildOptions,
    EngineError,
    EngineRunner,
    StaleEngineError,
    current_key,
    engine_path_for,
    find_cached_engine,
    make_sidecar,
    read_sidecar,
    sidecar_path_for,
    write_json_atomic,
)
from posenet_ros.verify_engine import build_parser as verify_parser
from posenet_ros.verify_engine import cli as verify_cli
from posenet_ros.verify_engine import main as verify_main
from posenet_ros.verify_engine import pose_differences

from fake_tensorrt import FakeCudart, make_fake_tensorrt, plan_header
from model_factory import make_test_model

QUAT_WXYZ = (0.6, 0.0, 0.0, 0.8)
GPU = ("Orin", "8.7")


def _solid_batch(colours_rgb, hw=(32, 32)) -> np.ndarray:
    colours = np.asarray(colours_rgb, dtype=np.float32) / np.float32(255.0)
    batch = np.empty((len(colours), 3, *hw), dtype=np.float32)
    batch[:] = colours[:, :, None, None]
    return batch


@pytest.fixture()
def model(tmp_path):
    path = make_test_model(str(tmp_path / "dino.onnx"), quat_wxyz=QUAT_WXYZ, position_scale=2.5)
    return Path(path), load_model_info(path)


@pytest.fixture()
def calibration(model):
    path, _ = model
    images = np.random.default_rng(1).random((20, 3, 32, 32), dtype=np.float32)
    target = path.with_name("dino_calibration.npy")
    np.save(target, images)
    return target, images


@pytest.fixture()
def fake_gpu(monkeypatch):
    """Install TensorRT/cuda-python doubles and a GPU named Orin; returns ``install(version)``."""

    def install(version: str = "10.3.0", dla_cores: int = 2):
        trt = make_fake_tensorrt(version, dla_cores=dla_cores)
        cudart = FakeCudart()
        trt.cudart = cudart
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(trt_cuda, "_load_cuda_runtime_module", lambda: cudart)
        monkeypatch.setattr(trt_gpu, "query_gpu", lambda device_index=0: GPU)
        monkeypatch.setattr(tensorrt_backend, "query_gpu", lambda device_index=0: GPU)
        return trt, cudart

    return install


@pytest.fixture()
def auto_backend(model, fake_gpu, monkeypatch):
    """``make(version)``: backend "auto" for the model where TensorRT ``version`` imports and a
    CUDA GPU is present; returns ``(backend, log messages)``."""
    monkeypatch.setattr(backends, "tensorrt_importable", lambda: True)
    monkeypatch.setattr(backends, "cuda_gpu_present", lambda: True)
    path, info = model

    def make(version: str):
        fake_gpu(version)
        messages: list[str] = []
        return create_backend("auto", str(path), info, log=messages.append), messages

    return make


class StubRunner:
    """What EngineRunner.run returns, computed like the test model (mean colour * 2.5)."""

    def __init__(self, outputs=None) -> None:
        self.outputs = outputs
        self.calls = 0
        self.closed = False

    def run(self, image_BCHW):
        self.calls += 1
        if self.outputs is not None:
            return self.outputs
        batch = image_BCHW.shape[0]
        return {
            "position": 2.5 * image_BCHW.mean(axis=(2, 3)),
            "orientation": np.tile(np.float32(QUAT_WXYZ), (batch, 1)),
        }

    def close(self):
        self.closed = True


def _sidecar(model_path, info, tmp_path, **build):
    key = current_key(model_path, "fp16", tensorrt_version="10.3.0", gpu=GPU)
    engine = engine_path_for(tmp_path, model_path, key)
    data = make_sidecar(key, info, BuildOptions(**build), engine, "c" * 64)
    write_json_atomic(sidecar_path_for(engine), data)
    return read_sidecar(sidecar_path_for(engine)), engine


# --- the backend's contract over a stand-in runner -------------------------------------------


def test_backend_contract_with_stub_runner(model, tmp_path):
    path, info = model
    sidecar, engine = _sidecar(path, info, tmp_path, max_batch=4)
    backend = TensorRTBackend(StubRunner(), info, sidecar, str(engine))
    assert isinstance(backend, backends.Backend) and backend.name == "tensorrt"
    colours = [(255, 0, 51), (10, 20, 30)]
    outputs = backend.infer(_solid_batch(colours))
    position_m, quat_wxyz = outputs["position"], outputs["orientation"]
    assert position_m.dtype == np.float64 and position_m.shape == (2, 3)
    assert quat_wxyz.dtype == np.float64 and quat_wxyz.shape == (2, 4)
    np.testing.assert_allclose(position_m, 2.5 * np.asarray(colours) / 255.0, atol=1e-6)
    description = backend.describe()
    assert description.startswith("tensorrt 10.3.0 (Orin 8.7, fp16, max batch 4), engine ")
    assert str(engine) in description
    backend.close()
    assert backend.runner.closed


@pytest.mark.parametrize(
    "image, words",
    [
        (np.zeros((1, 3, 32), np.float32), ["[N,3,H,W]"]),
        (np.zeros((1, 3, 32, 32), np.float64), ["float64"]),
        (np.zeros((1, 4, 32, 32), np.float32), ["(1, 4, 32, 32)"]),
        (np.zeros((1, 3, 24, 32), np.float32), ["24x32", "32x32"]),
        (np.zeros((2, 3, 32, 32), np.float32), ["batch of 2", "1 to 1", "--max-batch"]),
        ([[0.0]], ["None"]),
    ],
)
def test_backend_rejects_bad_input_before_the_gpu(model, tmp_path, image, words):
    path, info = model
    sidecar, engine = _sidecar(path, info, tmp_path)
    runner = StubRunner()
    backend = TensorRTBackend(runner, info, sidecar, str(engine))
    with pytest.raises(BackendError) as excinfo:
        backend.infer(image)
    for word in words:
        assert word in str(excinfo.value)
    assert runner.calls == 0


def test_backend_checks_output_shapes_and_wraps_runner_errors(model, tmp_path):
    path, info = model
    sidecar, engine = _sidecar(path, info, tmp_path)
    bad = StubRunner({"position": np.zeros((1, 2)), "orientation": np.zeros((1, 4))})
    with pytest.raises(BackendError, match=r"shapes \(1, 2\) and \(1, 4\)"):
        TensorRTBackend(bad, info, sidecar, str(engine)).infer(_solid_batch([(1, 2, 3)]))

    class Failing(StubRunner):
        def run(self, image_BCHW):
            raise EngineError("CUDA cudaMemcpyAsync failed: cudaErrorIllegalAddress")

    with pytest.raises(BackendError, match="TensorRT inference failed: CUDA cudaMemcpyAsync"):
        TensorRTBackend(Failing(), info, sidecar, str(engine)).infer(_solid_batch([(1, 2, 3)]))


def test_nan_outputs_are_passed_through_raw(model, tmp_path):
    path, info = model
    sidecar, engine = _sidecar(path, info, tmp_path)
    nan = StubRunner({"position": np.full((1, 3), np.nan), "orientation": np.zeros((1, 4))})
    outputs = TensorRTBackend(nan, info, sidecar, str(engine)).infer(_solid_batch([(1, 2, 3)]))
    position_m, quat_wxyz = outputs["position"], outputs["orientation"]
    assert np.isnan(position_m).all() and not quat_wxyz.any()


# --- refusals without TensorRT / GPU ---------------------------------------------------------


def test_no_tensorrt(model, monkeypatch):
    path, info = model
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendError) as excinfo:
        create_tensorrt_backend(str(path), info)
    message = str(excinfo.value)
    assert message.startswith("TensorRT backend not available in this build: ")
    assert "tensorrt Python package cannot be imported" in message and "onnxruntime" in message


@pytest.mark.parametrize(
    "version, precision, words",
    [
        ("8.4.3", "fp16", ["TensorRT 8.4.3 is too old", ">= 8.5"]),
        ("11.0.0", "fp16", ["removed the FP16/INT8 builder flags", "trt_precision"]),
        ("11.2.0", "int8", ["removed"]),
    ],
)
def test_unsupported_tensorrt(model, fake_gpu, version, precision, words):
    path, info = model
    fake_gpu(version)
    with pytest.raises(BackendError) as excinfo:
        create_tensorrt_backend(str(path), info, precision=precision)
    for word in ["not available in this build", *words]:
        assert word in str(excinfo.value)


def test_no_cuda_python(model, fake_gpu, monkeypatch):
    path, info = model
    fake_gpu("10.3.0")

    def missing():
        raise EngineError("cuda-python cannot be imported (No module named 'cuda')")

    monkeypatch.setattr(trt_cuda, "_load_cuda_runtime_module", missing)
    with pytest.raises(BackendError) as excinfo:
        create_tensorrt_backend(str(path), info)
    message = str(excinfo.value)
    assert "tensorrt 10.3.0 is installed but cuda-python cannot be imported" in message
    assert "onnxruntime" in message


def test_no_gpu(model, fake_gpu, monkeypatch):
    path, info = model
    fake_gpu("10.3.0")

    def no_gpu(device_index=0):
        raise EngineError("no CUDA driver (libcuda.so.1) on this machine: no GPU to build for")

    monkeypatch.setattr(tensorrt_backend, "query_gpu", no_gpu)
    with pytest.raises(BackendError, match="tensorrt 10.3.0 is installed but no CUDA driver"):
        create_tensorrt_backend(str(path), info)


# --- the whole path against the API doubles --------------------------------------------------


@pytest.mark.parametrize(
    "version, precision",
    [("8.6.1", "fp16"), ("10.3.0", "fp16"), ("10.3.0", "fp32"), ("11.0.0", "fp32")],
)
def test_build_cache_load_run_matches_onnxruntime(model, fake_gpu, version, precision):
    path, info = model
    trt, cudart = fake_gpu(version)
    messages: list[str] = []
    backend = create_tensorrt_backend(str(path), info, log=messages.append, precision=precision)
    assert any("no cached TensorRT engine" in m for m in messages)
    assert any(m.startswith(f"building TensorRT {precision} engine") for m in messages)
    engine = Path(backend.engine_path)
    header = plan_header(engine.read_bytes())
    fp16 = getattr(trt.BuilderFlag, "FP16", None)  # TensorRT 11 has no such flag
    assert (fp16 is not None and int(fp16) in header["flags"]) == (precision == "fp16")
    assert header["max_batch"] == 1 and header["workspace"] == 1024 << 20
    reference = OnnxRuntimeBackend(str(path), info, num_threads=1)
    image = _solid_batch([(255, 0, 51)])
    got, want = backend.infer(image), reference.infer(image)
    for name in ("position", "orientation"):
        np.testing.assert_allclose(got[name], want[name], atol=1e-6)
    assert f"tensorrt {version} (Orin 8.7, {precision}" in backend.describe()
    # Second start: loaded from the cache, not built.
    messages.clear()
    again = create_tensorrt_backend(str(path), info, log=messages.append, precision=precision)
    assert again.engine_path == backend.engine_path
    assert not any("building" in m for m in messages)
    backend.close()
    again.close()
    assert cudart.memory == {} and cudart.streams == set()  # everything freed
    assert trt.log == []


def test_int8_calibration_batches_and_cache(model, fake_gpu, calibration):
    path, info = model
    trt, cudart = fake_gpu("8.6.1")
    _, images = calibration
    messages: list[str] = []
    backend = create_tensorrt_backend(str(path), info, precision="int8", log=messages.append)
    header = plan_header(Path(backend.engine_path).read_bytes())
    assert {int(trt.BuilderFlag.INT8), int(trt.BuilderFlag.FP16)} <= set(header["flags"])
    # 20 images in batches of 8: two batches, the last 4 images left out.
    assert header["calibrated"]["batches"] == 2
    np.testing.assert_allclose(header["calibrated"]["sum"], images[:16].sum(), rtol=1e-5)
    assert any(
        "INT8 calibration: 2 batches of 8 images" in m and "4 left out" in m for m in messages
    )
    cache = trt_engine.calibration_cache_path_for(backend.engine_path)
    assert cache.read_bytes() == b"batches=2"
    assert cudart.memory.keys() <= {p for p, _ in backend.runner._buffers.values()}  # freed
    # Rebuilding reads the scales from the calibration cache instead of calibrating again.
    rebuilt = create_tensorrt_backend(str(path), info, precision="int8", rebuild_engine=True)
    assert plan_header(Path(rebuilt.engine_path).read_bytes())["calibrated"] == {
        "from_cache": "batches=2"
    }


def test_int8_without_calibration_images(model, fake_gpu):
    path, info = model
    fake_gpu("10.3.0")
    with pytest.raises(EngineError, match="dino_calibration.npy not found"):
        create_tensorrt_backend(str(path), info, precision="int8")


def test_stale_engine_after_tensorrt_upgrade(model, fake_gpu):
    path, info = model
    fake_gpu("8.6.1")
    old = create_tensorrt_backend(str(path), info).engine_path
    fake_gpu("10.3.0")
    with pytest.raises(StaleEngineError) as excinfo:
        create_tensorrt_backend(str(path), info)
    message = str(excinfo.value)
    assert "TensorRT version: engine built for '8.6.1', now '10.3.0'" in message
    assert old in message and "rebuild_engine:=true" in message
    backend = create_tensorrt_backend(str(path), info, rebuild_engine=True)
    assert backend.engine_path != old and not Path(old).exists()


def test_stale_engine_after_model_changes(model, fake_gpu):
    path, info = model
    fake_gpu("10.3.0")
    create_tensorrt_backend(str(path), info)
    make_test_model(str(path), quat_wxyz=QUAT_WXYZ, position_scale=3.0)  # retrained, same name
    with pytest.raises(StaleEngineError, match=r"model file content \(SHA-256\)"):
        create_tensorrt_backend(str(path), load_model_info(str(path)))


def test_corrupt_engine_is_reported(model, fake_gpu):
    path, info = model
    fake_gpu("10.3.0")
    engine = Path(create_tensorrt_backend(str(path), info).engine_path)
    garbage = b"not a plan"
    engine.write_bytes(garbage)
    data = json.loads(sidecar_path_for(engine).read_text())
    data["engine_sha256"] = hashlib.sha256(garbage).hexdigest()
    sidecar_path_for(engine).write_text(json.dumps(data))
    with pytest.raises(EngineError) as excinfo:
        create_tensorrt_backend(str(path), info)
    assert "cannot deserialize" in str(excinfo.value)
    assert "rebuild_engine:=true" in str(excinfo.value)


def test_batches_grow_buffers(model, fake_gpu):
    path, info = model
    _, cudart = fake_gpu("10.3.0")
    trt_engine.main(path, max_batch=4, log=lambda m: None)
    backend = create_tensorrt_backend(str(path), info)
    assert backend.max_batch == 4
    reference = OnnxRuntimeBackend(str(path), info, num_threads=1)
    for colours in ([(1, 2, 3)], [(4, 5, 6), (7, 8, 9), (250, 0, 3)], [(9, 9, 9)]):
        image = _solid_batch(colours)
        np.testing.assert_allclose(
            backend.infer(image)["position"], reference.infer(image)["position"], atol=1e-6
        )
    with pytest.raises(BackendError, match="batch of 5"):
        backend.infer(_solid_batch([(0, 0, 0)] * 5))
    assert len(backend.runner._buffers) == 3
    backend.close()
    assert cudart.memory == {}


def test_runner_refuses_shape_outside_profile(model, fake_gpu):
    path, info = model
    trt, _ = fake_gpu("10.3.0")
    engine = Path(create_tensorrt_backend(str(path), info).engine_path)
    runner = EngineRunner(engine.read_bytes(), "image", ("position", "orientation"), trt=trt)
    with pytest.raises(EngineError, match="outside the engine's optimisation profile"):
        runner.run(_solid_batch([(1, 1, 1)] * 2))
    with pytest.raises(EngineError, match="inputs are \\['image'\\]"):
        EngineRunner(engine.read_bytes(), "img", ("position", "orientation"), trt=trt)
    with pytest.raises(EngineError, match="no output"):
        EngineRunner(engine.read_bytes(), "image", ("pos", "orientation"), trt=trt)


def test_dla_engine(model, fake_gpu):
    path, info = model
    trt, _ = fake_gpu("8.6.1", dla_cores=2)
    engine = trt_engine.main(path, dla_core=1, log=lambda m: None)
    header = plan_header(engine.read_bytes())
    assert header["device"] == int(trt.DeviceType.DLA) and header["dla_core"] == 1
    assert int(trt.BuilderFlag.GPU_FALLBACK) in header["flags"]
    backend = create_tensorrt_backend(str(path), info)
    assert trt.deserialized_with_dla_core == 1  # the runtime is told the engine's DLA core
    assert "DLA core 1" in backend.describe()
    with pytest.raises(EngineError, match="DLA core 2 requested; this device has 2"):
        trt_engine.main(path, dla_core=2, overwrite=True, log=lambda m: None)


def test_build_failure_is_reported(model, fake_gpu, tmp_path):
    path, info = model
    fake_gpu("10.3.0")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    with pytest.raises(EngineError, match="cannot parse"):
        trt_engine.build_serialized_engine(broken, info, BuildOptions())


# --- create_backend: selection, options, fallbacks -------------------------------------------


def test_create_backend_passes_tensorrt_options(model, fake_gpu, tmp_path):
    path, info = model
    fake_gpu("10.3.0")
    messages: list[str] = []
    backend = create_backend(
        "tensorrt",
        str(path),
        info,
        log=messages.append,
        engine_cache_dir=str(tmp_path / "engines"),
        trt_precision="fp32",
    )
    assert backend.name == "tensorrt"
    assert Path(backend.engine_path).parent == tmp_path / "engines"
    assert ".fp32." in Path(backend.engine_path).name
    assert messages[0] == "inference backend: tensorrt (requested backend 'tensorrt')"


def test_auto_picks_tensorrt_with_gpu(auto_backend):
    backend, messages = auto_backend("10.3.0")
    assert backend.name == "tensorrt"
    assert messages[0] == (
        "inference backend: tensorrt (auto: TensorRT is importable and a CUDA GPU is present)"
    )


def test_auto_does_not_hide_a_stale_engine(model, fake_gpu, auto_backend):
    path, info = model
    fake_gpu("8.6.1")
    create_tensorrt_backend(str(path), info)
    with pytest.raises(StaleEngineError):
        auto_backend("10.3.0")


def test_auto_falls_back_on_other_tensorrt_failures(auto_backend):
    backend, messages = auto_backend("8.4.0")
    assert backend.name == "onnxruntime"
    assert "too old" in messages[1] and "falling back to onnxruntime" in messages[1]
    assert messages[2].startswith("onnxruntime execution providers: CPUExecutionProvider")


def test_onnxruntime_choice_logs_its_provider(model):
    path, info = model
    messages: list[str] = []
    create_backend("onnxruntime", str(path), info, log=messages.append)
    assert messages[1].startswith("onnxruntime execution providers: ")
    assert "CPU" in messages[1] or "CUDA" in messages[1]


@pytest.mark.parametrize("precision", ["fp64", "", "FP16"])
def test_bad_trt_precision(model, precision):
    path, info = model
    with pytest.raises(BackendError, match="trt_precision"):
        create_backend("onnxruntime", str(path), info, trt_precision=precision)


# --- verify_engine ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pa, qa, pb, qb, position_m, rotation_deg",
    [
        ([0, 0, 0], [1, 0, 0, 0], [0, 0, 0], [1, 0, 0, 0], 0.0, 0.0),
        ([0, 0, 0], [1, 0, 0, 0], [3, 4, 0], [-1, 0, 0, 0], 5.0, 0.0),  # q == -q
        ([0, 0, 0], [1, 0, 0, 0], [0, 0, 0], [0.70710678, 0, 0, 0.70710678], 0.0, 90.0),
        ([0, 0, 0], [2, 0, 0, 0], [0, 0, 0], [0, 0, 0, 3], 0.0, 180.0),  # normalised first
        ([0, 0, np.nan], [1, 0, 0, 0], [0, 0, 0], [1, 0, 0, 0], np.nan, 0.0),
        ([0, 0, 0], [0, 0, 0, 0], [0, 0, 0], [1, 0, 0, 0], 0.0, np.nan),
    ],
)
def test_pose_differences(pa, qa, pb, qb, position_m, rotation_deg):
    got_p, got_r = pose_differences(np.array([pa]), np.array([qa]), np.array([pb]), np.array([qb]))
    np.testing.assert_allclose(got_p, [position_m], atol=1e-6)
    np.testing.assert_allclose(got_r, [rotation_deg], atol=1e-4)


def test_pose_differences_counts_must_match():
    with pytest.raises(BackendError, match="counts differ"):
        pose_differences(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((1, 3)), np.zeros((2, 4)))


def test_verify_same_model_passes(model, calibration, capsys):
    path, _ = model
    report = verify_main(path, candidate_onnx=path, num_threads=1)
    assert report.passed and report.count == 20 and report.non_finite == 0
    assert report.position_max_m == 0.0 and report.rotation_max_deg == 0.0
    out = capsys.readouterr().out
    assert "position difference: max 0 m" in out and "PASS" in out


def test_verify_detects_a_different_network(model, calibration, tmp_path, capsys):
    path, _ = model
    other = make_test_model(str(tmp_path / "other.onnx"), quat_wxyz=QUAT_WXYZ, position_scale=2.6)
    report = verify_main(path, candidate_onnx=other, limit=5, num_threads=1)
    assert not report.passed and report.count == 5
    assert report.position_max_m > 0.01 and report.rotation_max_deg < 1e-3
    assert "FAIL" in capsys.readouterr().out
    assert verify_cli(["--model", str(path), "--candidate-onnx", other, "--threads", "1"]) == 1
    assert (
        verify_cli(["--model", str(path), "--candidate-onnx", other, "--max-position-m", "0.1"])
        == 0
    )


def test_verify_the_engine(model, calibration, fake_gpu, capsys):
    path, _ = model
    fake_gpu("10.3.0")
    assert verify_cli(["--model", str(path)]) == 2
    assert "build it first with `ros2 run posenet_ros build_engine" in capsys.readouterr().err
    assert trt_engine.cli(["--model", str(path)]) == 0
    assert verify_cli(["--model", str(path), "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert "candidate: tensorrt 10.3.0 (Orin 8.7, fp16" in out and "PASS" in out


def test_verify_reports_nan_as_failure(model, calibration, tmp_path):
    path, _ = model
    nan_model = make_test_model(str(tmp_path / "nan.onnx"), mode="nan")
    report = verify_main(path, candidate_onnx=nan_model, limit=3, num_threads=1)
    assert not report.passed and report.non_finite == 3


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"precision": "fp64"}, ["fp64"]),
        ({"max_position_m": 0.0}, ["max_position_m"]),
        ({"max_rotation_deg": float("nan")}, ["max_rotation_deg"]),
        ({"limit": 0}, ["limit"]),
        ({"calibration": "missing.npy"}, ["not found"]),
    ],
)
def test_verify_rejects_bad_options(model, calibration, kwargs, words):
    path, _ = model
    with pytest.raises(BackendError) as excinfo:
        verify_main(path, candidate_onnx=path, **kwargs)
    for word in words:
        assert word in str(excinfo.value)


def test_verify_rejects_a_candidate_of_another_size(model, calibration, tmp_path):
    path, _ = model
    small = make_test_model(str(tmp_path / "small.onnx"), input_hw=(24, 24), resize_shorter=24)
    with pytest.raises(BackendError, match="not the same network"):
        verify_main(path, candidate_onnx=small)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--model", "m.onnx", "--precision", "int4"],
        ["--model", "m.onnx", "--limit", "0"],
        ["--model", "m.onnx", "--max-position-m", "-1"],
        ["--model", "m.onnx", "--max-rotation-deg", "inf"],
        ["--model", "m.onnx", "--max-rotation-deg", "x"],
        ["--model", "m.onnx", "--threads", "two"],
    ],
)
def test_verify_cli_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        verify_parser().parse_args(argv)
    assert excinfo.value.code == 2
    assert "error" in capsys.readouterr().err


def test_verify_cli_bad_files(tmp_path, capsys):
    assert verify_cli(["--model", str(tmp_path / "none.onnx")]) == 2
    assert "verify_engine: error: model file not found" in capsys.readouterr().err


# --- on a real GPU with TensorRT (a Jetson); skipped elsewhere -------------------------------


def _real_gpu_reason() -> str:
    if not tensorrt_importable():
        return "needs TensorRT (python3-libnvinfer) and an NVIDIA GPU; not on this machine"
    if not cuda_gpu_present():
        return "TensorRT is installed but no CUDA GPU is present"
    if importlib.util.find_spec("cuda") is None:
        return "needs cuda-python (pip install cuda-python)"
    return ""


on_gpu = pytest.mark.skipif(bool(_real_gpu_reason()), reason=_real_gpu_reason() or "GPU present")


@pytest.fixture()
def real_model(tmp_path):
    path = make_test_model(str(tmp_path / "gpu.onnx"), quat_wxyz=QUAT_WXYZ, position_scale=2.5)
    np.save(
        tmp_path / "gpu_calibration.npy",
        np.random.default_rng(2).random((16, 3, 32, 32), dtype=np.float32),
    )
    return Path(path), load_model_info(path)


@on_gpu
@pytest.mark.parametrize("precision", ["fp16", "fp32", "int8"])
def test_gpu_engine_matches_onnxruntime(real_model, precision):
    path, info = real_model
    messages: list[str] = []
    backend = create_tensorrt_backend(str(path), info, precision=precision, log=messages.append)
    reference = OnnxRuntimeBackend(str(path), info, num_threads=1)
    for colours in ([(255, 0, 51)], [(10, 20, 30)]):
        image = _solid_batch(colours)
        got, want = backend.infer(image), reference.infer(image)
        tolerance = 0.05 if precision == "int8" else 5e-3
        for name in ("position", "orientation"):
            np.testing.assert_allclose(got[name], want[name], atol=tolerance)
    assert find_cached_engine(path.parent, path, backend.sidecar.key).status == "hit"
    backend.close()


@on_gpu
def test_gpu_stale_engine_is_refused(real_model):
    path, info = real_model
    create_tensorrt_backend(str(path), info).close()
    make_test_model(str(path), quat_wxyz=QUAT_WXYZ, position_scale=3.0)
    with pytest.raises(StaleEngineError, match="model file content"):
        create_tensorrt_backend(str(path), load_model_info(str(path)))
    rebuilt = create_tensorrt_backend(str(path), load_model_info(str(path)), rebuild_engine=True)
    position_m = rebuilt.infer(_solid_batch([(255, 0, 0)]))["position"]
    np.testing.assert_allclose(position_m[0], [3.0, 0.0, 0.0], atol=5e-3)
    rebuilt.close()


@on_gpu
def test_gpu_verify_engine_cli(real_model):
    path, _ = real_model
    assert trt_engine.cli(["--model", str(path)]) == 0
    assert verify_cli(["--model", str(path)]) == 0
