"""TensorRT engine cache without a GPU: keys, sidecars, look-up, the stale-engine policy,
calibration images and batches, version checks, cuda-python error handling, the build_engine
CLI (with a stand-in builder)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import posenet_ros
import posenet_ros.tensorrt as trt_engine
import posenet_ros.tensorrt.cache as trt_cache
import posenet_ros.tensorrt.gpu as trt_gpu
from posenet_core.calibration import default_calibration_path
from posenet_ros.errors import BackendError, ModelFileError
from posenet_ros.model_file import load_model_info
from posenet_ros.tensorrt import (
    PRECISIONS,
    BuildOptions,
    CalibrationBatcher,
    CudaRuntime,
    EngineError,
    EngineKey,
    StaleEngineError,
    build_parser,
    calibration_cache_path_for,
    check_tensorrt_version,
    cli,
    current_key,
    engine_path_for,
    file_sha256,
    find_cached_engine,
    load_calibration_images,
    make_sidecar,
    parse_version,
    prepare_engine,
    query_gpu,
    read_engine_bytes,
    read_sidecar,
    resolve_cache_dir,
    sidecar_path_for,
    write_json_atomic,
)

from fake_tensorrt import FakeCudart, cudaError_t
from model_factory import make_test_model

GPU = ("Orin", "8.7")
REPO_ROOT = Path(posenet_ros.__file__).resolve().parents[1]


@pytest.fixture()
def model(tmp_path):
    path = make_test_model(str(tmp_path / "models" / "dino.onnx"))
    return Path(path), load_model_info(path)


def _key(model_path, precision="fp16", version="10.3.0", gpu=GPU) -> EngineKey:
    return current_key(model_path, precision, tensorrt_version=version, gpu=gpu)


class FakeBuilder:
    """Stands in for build_engine_file: writes a plan and its sidecar as the real one does."""

    def __init__(self, payload: bytes = b"plan") -> None:
        self.calls: list[tuple] = []
        self.payload = payload

    def __call__(self, model_path, info, key, options, engine_path, log):
        self.calls.append((Path(model_path), key, options, Path(engine_path)))
        plan = self.payload + key.digest().encode()
        trt_cache.atomic_write(Path(engine_path), plan)
        sidecar = make_sidecar(
            key, info, options, Path(engine_path), trt_cache.hashlib.sha256(plan).hexdigest()
        )
        write_json_atomic(sidecar_path_for(engine_path), sidecar)
        return read_sidecar(sidecar_path_for(engine_path))


# --- keys ----------------------------------------------------------------------------------------


def test_key_from_file_content(model, tmp_path):
    path, _ = model
    key = _key(path)
    assert key.onnx_sha256 == file_sha256(path)
    assert key.as_dict() == {
        "onnx_sha256": file_sha256(path),
        "tensorrt_version": "10.3.0",
        "gpu_name": "Orin",
        "gpu_compute_capability": "8.7",
        "precision": "fp16",
    }
    assert len(key.digest()) == 16 and key.digest() == _key(path).digest()
    # The same bytes under another name give the same key; one changed byte another key.
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(path.read_bytes())
    assert _key(copy) == key
    copy.write_bytes(path.read_bytes() + b" ")
    assert _key(copy).digest() != key.digest()


@pytest.mark.parametrize(
    "field, value, label",
    [
        ("tensorrt_version", "8.6.2", "TensorRT version"),
        ("gpu_name", "NVIDIA GeForce RTX 4090", "GPU"),
        ("gpu_compute_capability", "8.9", "GPU compute capability"),
        ("precision", "int8", "precision"),
        ("onnx_sha256", "f" * 64, "model file content"),
    ],
)
def test_every_key_field_changes_digest_and_is_named(model, field, value, label):
    path, _ = model
    key = _key(path)
    other = dataclasses.replace(key, **{field: value})
    assert other.digest() != key.digest()
    (difference,) = other.differences(key)
    assert difference.startswith(label)
    assert "engine built for" in difference and "now" in difference


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"onnx_sha256": "abc"}, ["onnx_sha256", "64"]),
        ({"onnx_sha256": "A" * 64}, ["onnx_sha256"]),
        ({"precision": "fp64"}, ["fp64", "fp16, fp32, int8"]),
        ({"gpu_name": ""}, ["gpu_name"]),
        ({"tensorrt_version": "  "}, ["tensorrt_version"]),
        ({"gpu_compute_capability": 8.7}, ["gpu_compute_capability"]),
    ],
)
def test_key_rejects_bad_fields(model, changes, words):
    path, _ = model
    fields = {**_key(path).as_dict(), **changes}
    with pytest.raises(EngineError) as excinfo:
        EngineKey(**fields)
    for word in words:
        assert word in str(excinfo.value)


@pytest.mark.parametrize(
    "data, words",
    [
        (None, ["must be an object"]),
        ({"precision": "fp16"}, ["lacks", "onnx_sha256"]),
        ({"onnx_sha256": "0" * 64, "tensorrt_version": "10", "gpu_name": "x",
          "gpu_compute_capability": "8.7", "precision": "bf16"}, ["bf16"]),
    ],
)  # fmt: skip
def test_key_from_dict_errors_name_the_source(data, words):
    with pytest.raises(EngineError) as excinfo:
        EngineKey.from_dict(data, source="engine sidecar X.json")
    assert "engine sidecar X.json" in str(excinfo.value)
    for word in words:
        assert word in str(excinfo.value)


# --- paths ---------------------------------------------------------------------------------------


def test_paths(model, tmp_path):
    path, _ = model
    key = _key(path, "int8")
    engine = engine_path_for(tmp_path / "cache", path, key)
    assert engine == tmp_path / "cache" / f"dino.int8.{key.digest()}.engine"
    assert sidecar_path_for(engine).name == f"dino.int8.{key.digest()}.engine.json"
    assert calibration_cache_path_for(engine).name == f"dino.int8.{key.digest()}.calibration.cache"
    assert default_calibration_path(path) == path.parent / "dino_calibration.npy"
    assert resolve_cache_dir(path, "") == path.parent.absolute()
    assert resolve_cache_dir(path, None) == path.parent.absolute()
    assert resolve_cache_dir(path, "~/engines") == Path.home() / "engines"
    assert resolve_cache_dir(path, tmp_path / "c") == tmp_path / "c"


# --- build options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"precision": "fp8"}, ["fp8"]),
        ({"workspace_mib": 0}, ["workspace_mib", "[16,"]),
        ({"workspace_mib": 1.5}, ["workspace_mib"]),
        ({"max_batch": 0}, ["max_batch"]),
        ({"max_batch": True}, ["max_batch"]),
        ({"calibration_batch": 0}, ["calibration_batch"]),
        ({"dla_core": -1}, ["dla_core", ">= 0"]),
        ({"dla_core": "0"}, ["dla_core"]),
        ({"dla_core": 0, "precision": "fp32"}, ["DLA", "fp16 or int8"]),
        ({"dla_core": 0, "max_batch": 4}, ["DLA", "batch 1"]),
        ({"calibration": "c.npy", "precision": "fp16"}, ["int8 engines only"]),
    ],
)
def test_build_options_reject(kwargs, words):
    with pytest.raises(EngineError) as excinfo:
        BuildOptions(**kwargs)
    for word in words:
        assert word in str(excinfo.value)


def test_build_options_defaults():
    options = BuildOptions()
    assert options.as_dict() == {
        "precision": "fp16",
        "workspace_mib": 1024,
        "max_batch": 1,
        "dla_core": None,
        "calibration": None,
        "calibration_batch": 8,
    }
    assert BuildOptions(precision="int8", dla_core=1, calibration="c.npy").dla_core == 1


# --- sidecar -------------------------------------------------------------------------------------


def test_sidecar_round_trip(model, tmp_path):
    path, info = model
    key = _key(path)
    engine = engine_path_for(tmp_path, path, key)
    data = make_sidecar(key, info, BuildOptions(dla_core=0), engine, "a" * 64, build_seconds=61.23)
    write_json_atomic(sidecar_path_for(engine), data)
    sidecar = read_sidecar(sidecar_path_for(engine))
    assert sidecar.key == key
    assert sidecar.engine_file == engine.name
    assert sidecar.model_file == "dino.onnx"
    assert sidecar.dla_core == 0 and sidecar.max_batch == 1
    assert sidecar.data["model_metadata"]["posenet.input"] == "image"
    assert sidecar.data["model_metadata"] == info.metadata
    assert sidecar.data["build_seconds"] == 61.2
    assert sidecar.data["key_digest"] == key.digest()
    stored = json.loads(sidecar_path_for(engine).read_text())
    assert stored["key"] == key.as_dict()


def _good_sidecar(model_path, info, tmp_path) -> dict:
    key = _key(model_path)
    return make_sidecar(key, info, BuildOptions(), tmp_path / "e.engine", "b" * 64)


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda d: "not json {", ["not valid JSON"]),
        (lambda d: [1, 2], ["JSON object"]),
        (lambda d: {**d, "format": "other/9"}, ["format", "other/9"]),
        (lambda d: {k: v for k, v in d.items() if k != "key"}, ["'key' must be an object"]),
        (lambda d: {**d, "key": {**d["key"], "precision": "half"}}, ["half"]),
        (lambda d: {**d, "engine_file": ""}, ["engine_file"]),
        (lambda d: {**d, "engine_sha256": "xyz"}, ["engine_sha256"]),
        (lambda d: {k: v for k, v in d.items() if k != "model_file"}, ["model_file"]),
        (lambda d: {**d, "build": [1]}, ["'build' must be an object"]),
    ],
)
def test_malformed_sidecars(model, tmp_path, mutate, words):
    path, info = model
    data = mutate(_good_sidecar(path, info, tmp_path))
    target = tmp_path / "bad.engine.json"
    target.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(EngineError) as excinfo:
        read_sidecar(target)
    message = str(excinfo.value)
    assert str(target) in message
    for word in words:
        assert word in message


def test_missing_and_binary_sidecar(tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        read_sidecar(tmp_path / "none.engine.json")
    (tmp_path / "bin.engine.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(EngineError, match="cannot read"):
        read_sidecar(tmp_path / "bin.engine.json")


# --- cache look-up and policy --------------------------------------------------------------------


def test_first_start_builds_then_reuses(model, tmp_path):
    path, info = model
    key, builder, messages = _key(path), FakeBuilder(), []
    engine, sidecar = prepare_engine(path, info, key=key, build=builder, log=messages.append)
    assert engine == engine_path_for(path.parent, path, key) and engine.is_file()
    assert len(builder.calls) == 1 and sidecar.key == key
    assert any("no cached TensorRT engine" in m for m in messages)
    messages.clear()
    engine2, sidecar2 = prepare_engine(path, info, key=key, build=builder, log=messages.append)
    assert engine2 == engine and len(builder.calls) == 1  # loaded, not rebuilt
    assert sidecar2 == sidecar
    assert messages == [f"using cached TensorRT engine {engine} ({key.describe()})"]
    assert read_engine_bytes(engine, sidecar) == engine.read_bytes()
    assert find_cached_engine(path.parent, path, key).status == "hit"


@pytest.mark.parametrize(
    "change, reason",
    [
        (
            {"tensorrt_version": "10.7.0"},
            "TensorRT version: engine built for '10.3.0', now '10.7.0'",
        ),
        ({"gpu_name": "Xavier", "gpu_compute_capability": "7.2"}, "GPU: engine built for 'Orin'"),
        ({"onnx_sha256": "e" * 64}, "model file content (SHA-256)"),
    ],
)
def test_stale_engine_is_refused_with_reasons(model, change, reason):
    path, info = model
    old_key = _key(path)
    builder = FakeBuilder()
    old_engine, _ = prepare_engine(path, info, key=old_key, build=builder)
    new_key = dataclasses.replace(old_key, **change)
    with pytest.raises(StaleEngineError) as excinfo:
        prepare_engine(path, info, key=new_key, build=builder)
    message = str(excinfo.value)
    assert str(old_engine) in message and reason in message
    assert "never rebuilt silently" in message and "rebuild_engine:=true" in message
    assert "ros2 run posenet_ros build_engine --model" in message
    assert len(builder.calls) == 1 and old_engine.exists()  # nothing built, nothing deleted
    lookup = find_cached_engine(path.parent, path, new_key)
    assert lookup.status == "stale" and lookup.stale[0][0] == old_engine


def test_rebuild_replaces_stale_engine(model):
    path, info = model
    old_key, builder, messages = _key(path, "int8"), FakeBuilder(), []
    old_engine, _ = prepare_engine(
        path, info, key=old_key, build=builder, options=BuildOptions(precision="int8")
    )
    calibration_cache_path_for(old_engine).write_bytes(b"old scales")
    new_key = dataclasses.replace(old_key, tensorrt_version="10.7.0")
    engine, sidecar = prepare_engine(
        path,
        info,
        key=new_key,
        build=builder,
        rebuild=True,
        options=BuildOptions(precision="int8"),
        log=messages.append,
    )
    assert sidecar.key == new_key and engine.exists() and len(builder.calls) == 2
    assert not old_engine.exists() and not sidecar_path_for(old_engine).exists()
    assert not calibration_cache_path_for(old_engine).exists()
    assert any("rebuild requested" in m for m in messages)
    assert any(m.startswith(f"removed stale engine {old_engine}") for m in messages)
    assert find_cached_engine(path.parent, path, new_key).status == "hit"


def test_rebuild_of_a_matching_engine(model):
    path, info = model
    key, builder = _key(path), FakeBuilder()
    prepare_engine(path, info, key=key, build=builder)
    prepare_engine(path, info, key=key, build=builder, rebuild=True)
    assert len(builder.calls) == 2


def test_other_precisions_and_models_are_not_stale(model, tmp_path):
    path, info = model
    builder = FakeBuilder()
    prepare_engine(path, info, key=_key(path, "fp32"), build=builder, options=BuildOptions("fp32"))
    # A model whose stem extends this one's ("dino.fp16.x" vs "dino") shares the glob pattern.
    other = Path(make_test_model(str(path.parent / "dino.fp16.x.onnx")))
    other_info = load_model_info(str(other))
    prepare_engine(other, other_info, key=_key(other), build=builder)
    key = _key(path)
    assert find_cached_engine(path.parent, path, key).status == "missing"
    prepare_engine(path, info, key=key, build=builder)
    assert len(builder.calls) == 3


def test_engine_without_usable_sidecar_is_stale(model):
    path, info = model
    key = _key(path)
    engine, _ = prepare_engine(path, info, key=key, build=FakeBuilder())
    sidecar_path_for(engine).write_text("{broken")
    lookup = find_cached_engine(path.parent, path, key)
    assert lookup.status == "stale" and "sidecar unusable" in lookup.stale_message()
    with pytest.raises(StaleEngineError, match="sidecar unusable"):
        prepare_engine(path, info, key=key, build=FakeBuilder())
    sidecar_path_for(engine).unlink()
    assert find_cached_engine(path.parent, path, key).status == "stale"


def test_sidecar_without_engine_is_ignored(model):
    path, info = model
    key, builder = _key(path), FakeBuilder()
    engine, _ = prepare_engine(path, info, key=key, build=builder)
    engine.unlink()
    assert find_cached_engine(path.parent, path, key).status == "missing"
    prepare_engine(path, info, key=key, build=builder)
    assert len(builder.calls) == 2 and engine.exists()


def test_sidecar_key_that_does_not_match_its_file_name(model):
    path, info = model
    key = _key(path)
    engine, _ = prepare_engine(path, info, key=key, build=FakeBuilder())
    data = json.loads(sidecar_path_for(engine).read_text())
    data["key"]["gpu_name"] = "Xavier"
    sidecar_path_for(engine).write_text(json.dumps(data))
    with pytest.raises(StaleEngineError, match="GPU: engine built for 'Xavier', now 'Orin'"):
        prepare_engine(path, info, key=key, build=FakeBuilder())


def test_changed_engine_file_is_detected(model):
    path, info = model
    engine, sidecar = prepare_engine(path, info, key=_key(path), build=FakeBuilder())
    engine.write_bytes(engine.read_bytes()[:-1])
    with pytest.raises(StaleEngineError, match="changed or truncated"):
        read_engine_bytes(engine, sidecar)


def test_allow_build_false_and_unwritable_cache(model, tmp_path):
    path, info = model
    with pytest.raises(EngineError, match="build it first with `ros2 run posenet_ros"):
        prepare_engine(path, info, key=_key(path), build=FakeBuilder(), allow_build=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EngineError, match="cannot create the engine cache folder"):
        prepare_engine(
            path, info, key=_key(path), build=FakeBuilder(), engine_cache_dir=blocker / "sub"
        )
    if os.geteuid() != 0:  # root may write anywhere
        readonly = tmp_path / "ro"
        readonly.mkdir(mode=0o500)
        with pytest.raises(EngineError, match="not writable"):
            prepare_engine(
                path, info, key=_key(path), build=FakeBuilder(), engine_cache_dir=readonly
            )


def test_engine_cache_dir_is_used(model, tmp_path):
    path, info = model
    cache = tmp_path / "cache" / "deep"
    engine, _ = prepare_engine(
        path, info, key=_key(path), build=FakeBuilder(), engine_cache_dir=cache
    )
    assert engine.parent == cache
    assert not list(path.parent.glob("*.engine"))


def test_key_precision_must_match_options(model):
    path, info = model
    with pytest.raises(EngineError, match="differs from the build precision"):
        prepare_engine(path, info, key=_key(path, "fp32"), build=FakeBuilder())


# --- calibration images and batches --------------------------------------------------------------


def _calibration(tmp_path, array, name="dino_calibration.npy", description=None) -> Path:
    path = tmp_path / name
    np.save(path, array, allow_pickle=False)
    if description is not None:
        path.with_suffix(".json").write_text(
            description if isinstance(description, str) else json.dumps(description)
        )
    return path


def test_calibration_images_round_trip(tmp_path):
    images = np.random.default_rng(0).random((5, 3, 32, 32), dtype=np.float32)
    path = _calibration(tmp_path, images, description={"layout": "NCHW", "color": "RGB"})
    loaded = load_calibration_images(path, (32, 32))
    np.testing.assert_array_equal(loaded, images)
    assert loaded.flags.c_contiguous


@pytest.mark.parametrize(
    "array, description, words",
    [
        (np.zeros((2, 3, 32, 32), np.float64), None, ["float64", "float32"]),
        (np.zeros((2, 32, 32, 3), np.float32), None, ["[2, 32, 32, 3]", "[N,3,32,32]"]),
        (np.zeros((2, 3, 24, 32), np.float32), None, ["[2, 3, 24, 32]"]),
        (np.zeros((3, 32, 32), np.float32), None, ["[3, 32, 32]"]),
        (np.zeros((0, 3, 32, 32), np.float32), None, ["no image"]),
        (np.full((1, 3, 32, 32), np.nan, np.float32), None, ["NaN"]),
        (np.full((1, 3, 32, 32), 255.0, np.float32), None, ["255", "0..1"]),
        (np.zeros((1, 3, 32, 32), np.float32), {"layout": "NHWC"}, ["layout", "NHWC"]),
        (np.zeros((1, 3, 32, 32), np.float32), {"color": "BGR"}, ["BGR"]),
        (np.zeros((1, 3, 32, 32), np.float32), "{oops", ["unreadable"]),
        (np.zeros((1, 3, 32, 32), np.float32), "[]", ["JSON object"]),
    ],
)
def test_malformed_calibration_images(tmp_path, array, description, words):
    path = _calibration(tmp_path, array, description=description)
    with pytest.raises(EngineError) as excinfo:
        load_calibration_images(path, (32, 32))
    for word in words:
        assert word in str(excinfo.value)


def test_calibration_file_missing_or_not_npy(tmp_path):
    with pytest.raises(EngineError, match="posenet_train.export"):
        load_calibration_images(tmp_path / "none.npy", (32, 32))
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(EngineError, match="not a readable .npy"):
        load_calibration_images(tmp_path / "text.npy", (32, 32))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(EngineError, match="not a readable"):
        load_calibration_images(tmp_path / "obj.npy", (32, 32))


@pytest.mark.parametrize(
    "count, batch, batch_size, batches, dropped",
    [(64, 8, 8, 8, 0), (10, 4, 4, 2, 2), (3, 8, 3, 1, 0), (1, 1, 1, 1, 0), (9, 3, 3, 3, 0)],
)
def test_calibration_batches(count, batch, batch_size, batches, dropped):
    images = np.arange(count * 3 * 2 * 2, dtype=np.float32).reshape(count, 3, 2, 2)
    batcher = CalibrationBatcher(images, batch)
    assert (batcher.batch_size, batcher.num_batches, batcher.dropped) == (
        batch_size,
        batches,
        dropped,
    )
    assert batcher.shape == (batch_size, 3, 2, 2)
    assert batcher.nbytes == batch_size * 3 * 2 * 2 * 4
    served = []
    while (b := batcher.next_batch()) is not None:
        assert b.shape == batcher.shape and b.flags.c_contiguous and b.dtype == np.float32
        served.append(b)
    assert len(served) == batches
    np.testing.assert_array_equal(np.concatenate(served), images[: batches * batch_size])
    assert batcher.next_batch() is None
    batcher.reset()
    np.testing.assert_array_equal(batcher.next_batch(), served[0])


@pytest.mark.parametrize(
    "images, batch",
    [
        (np.zeros((2, 3, 2, 2), np.float32), 0),
        (np.zeros((2, 3, 2, 2), np.float32), 2.0),
        (np.zeros((0, 3, 2, 2), np.float32), 1),
        (np.zeros((2, 3, 2, 2), np.float64), 1),
        (np.zeros((3, 2, 2), np.float32), 1),
    ],
)
def test_calibration_batcher_rejects(images, batch):
    with pytest.raises(EngineError):
        CalibrationBatcher(images, batch)


# --- versions, GPU probe, cuda-python ------------------------------------------------------------


@pytest.mark.parametrize(
    "text, parsed",
    [("10.3.0.30", (10, 3)), ("8.5.2", (8, 5)), ("11.0", (11, 0)), (" 8.6", (8, 6))],
)
def test_parse_version(text, parsed):
    assert parse_version(text) == parsed


@pytest.mark.parametrize("text", ["", "ten", "10", "v10.3"])
def test_parse_version_rejects(text):
    with pytest.raises(EngineError, match="version"):
        parse_version(text)


@pytest.mark.parametrize(
    "version, precision, words",
    [
        ("8.5.2", "fp16", None),
        ("8.6.2", "int8", None),
        ("10.3.0", "fp16", None),
        ("10.7.0", "int8", None),
        ("11.0.0", "fp32", None),
        ("11.4.0", None, None),
        ("8.4.1", "fp16", ["too old", ">= 8.5", "JetPack 5.1"]),
        ("7.1.3", None, ["too old"]),
        ("11.0.0", "fp16", ["removed the FP16/INT8 builder flags", "fp32"]),
        ("11.4.0", "int8", ["removed"]),
    ],
)
def test_tensorrt_version_support(version, precision, words):
    if words is None:
        check_tensorrt_version(version, precision)
        return
    with pytest.raises(EngineError) as excinfo:
        check_tensorrt_version(version, precision)
    for word in words:
        assert word in str(excinfo.value)


def test_query_gpu_without_driver(monkeypatch):
    def no_library(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(trt_gpu.ctypes, "CDLL", no_library)
    with pytest.raises(EngineError, match="no CUDA driver"):
        query_gpu()


def test_query_gpu_on_this_machine():
    # Real call: a GPU-less machine says so clearly; a GPU machine gives a name and "X.Y".
    try:
        name, capability = query_gpu()
    except EngineError as exc:
        assert "CUDA" in str(exc)
    else:
        assert name and parse_version(capability)


def test_current_key_without_tensorrt(model, monkeypatch):
    path, _ = model
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EngineError, match="tensorrt Python package cannot be imported"):
        current_key(path, "fp16", gpu=GPU)


def test_cuda_runtime_checks_error_tuples():
    fake = FakeCudart(fail={"cudaMalloc": cudaError_t.cudaErrorMemoryAllocation})
    cuda = CudaRuntime(fake)
    with pytest.raises(EngineError) as excinfo:
        cuda.malloc(64)
    assert "cudaMalloc failed: cudaErrorMemoryAllocation" in str(excinfo.value)
    assert "fake message" in str(excinfo.value)
    fake.fail.clear()
    pointer = cuda.malloc(16)
    stream = cuda.stream_create()
    host = np.arange(4, dtype=np.float32)
    cuda.copy_to_device(pointer, host, stream)
    back = np.zeros(4, np.float32)
    cuda.copy_to_host(back, pointer, stream)
    cuda.stream_synchronize(stream)
    np.testing.assert_array_equal(back, host)
    cuda.copy_to_device(pointer, host[::-1].copy())  # synchronous copy
    cuda.copy_to_host(back, pointer, stream)
    np.testing.assert_array_equal(back, host[::-1])
    cuda.free(pointer)
    with pytest.raises(EngineError, match="cudaFree failed: cudaErrorInvalidValue"):
        cuda.free(pointer)
    cuda.stream_destroy(stream)


def test_real_cuda_python_errors_are_reported():
    # cuda-python (cuda.bindings) is installed here with PyTorch but there is no GPU/driver: its
    # real tuple API must come back as a clear EngineError, not a crash or a silent None.
    try:
        cuda = CudaRuntime.load()
    except EngineError:
        pytest.skip("cuda-python is not installed")
    try:
        pointer = cuda.malloc(64)
    except EngineError as exc:
        assert str(exc).startswith("CUDA cudaMalloc failed: cudaError")
    else:  # a machine with a GPU
        assert isinstance(pointer, int) and pointer
        cuda.free(pointer)


def test_cuda_python_missing(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(EngineError) as excinfo:
        CudaRuntime.load()
    assert "cuda-python cannot be imported" in str(excinfo.value)
    assert "pip install" in str(excinfo.value)


# --- build_engine CLI ----------------------------------------------------------------------------


def test_cli_main_builds_then_keeps(model, capsys):
    path, _ = model
    key, builder = _key(path), FakeBuilder()
    engine = trt_engine.main(path, key=key, build=builder)
    assert engine.exists() and len(builder.calls) == 1
    assert trt_engine.main(path, key=key, build=builder) == engine
    out = capsys.readouterr().out
    assert "exists for this model, TensorRT and GPU: kept" in out and "--overwrite" in out
    trt_engine.main(path, key=key, build=builder, max_batch=4)
    assert "you asked for {'max_batch': 4" in capsys.readouterr().out
    trt_engine.main(path, key=key, build=builder, overwrite=True)
    assert len(builder.calls) == 2


def test_cli_main_replaces_stale_engine(model):
    path, _ = model
    builder = FakeBuilder()
    old = trt_engine.main(path, key=_key(path, version="8.6.2"), build=builder)
    new = trt_engine.main(path, key=_key(path), build=builder)
    assert new != old and new.exists() and not old.exists()


def test_cli_main_int8_needs_calibration(model, tmp_path):
    path, _ = model
    builder = FakeBuilder()
    with pytest.raises(EngineError, match="dino_calibration.npy not found"):
        trt_engine.main(path, precision="int8", key=_key(path, "int8"), build=builder)
    _calibration(path.parent, np.zeros((4, 3, 32, 32), np.float32))
    engine = trt_engine.main(path, precision="int8", key=_key(path, "int8"), build=builder)
    options = builder.calls[0][2]
    assert options.calibration == str(path.parent / "dino_calibration.npy")
    assert engine.name.startswith("dino.int8.")
    with pytest.raises(EngineError, match="int8 engines only"):
        trt_engine.main(path, calibration="x.npy", key=_key(path), build=builder)


def test_cli_bad_model(tmp_path, capsys):
    assert cli(["--model", str(tmp_path / "missing.onnx")]) == 2
    assert "build_engine: error: model file not found" in capsys.readouterr().err
    (tmp_path / "bad.onnx").write_text("not onnx")
    assert cli(["--model", str(tmp_path / "bad.onnx")]) == 2
    assert "cannot be loaded as an ONNX model" in capsys.readouterr().err


def test_cli_without_tensorrt_says_so(model, monkeypatch, capsys):
    path, _ = model
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert cli(["--model", str(path)]) == 2
    assert "tensorrt Python package cannot be imported" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--model", "m.onnx", "--precision", "fp64"],
        ["--model", "m.onnx", "--workspace-mib", "0"],
        ["--model", "m.onnx", "--workspace-mib", "lots"],
        ["--model", "m.onnx", "--max-batch", "-2"],
        ["--model", "m.onnx", "--dla-core", "-1"],
        ["--model", "m.onnx", "--dla-core", "x"],
        ["--model", "m.onnx", "--calibration-batch", "0"],
        ["--model", "m.onnx", "--unknown"],
    ],
)
def test_cli_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        build_parser().parse_args(argv)
    assert excinfo.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_help_documents_every_flag():
    help_text = build_parser().format_help()
    for flag in (
        "--model",
        "--engine-cache-dir",
        "--precision",
        "--workspace-mib",
        "--max-batch",
        "--dla-core",
        "--calibration",
        "--calibration-batch",
        "--overwrite",
    ):
        assert flag in help_text
    assert all(p in help_text for p in PRECISIONS)


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "posenet_ros.tensorrt", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and "build_engine" in result.stdout


def test_errors_are_backend_errors():
    assert issubclass(StaleEngineError, EngineError)
    assert issubclass(EngineError, BackendError)
    assert not issubclass(EngineError, ModelFileError)
