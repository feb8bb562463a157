"""posenet_core.contract and posenet_ros.model_file: the metadata contract, the graph signature
checks, and files that are not models."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from posenet_core.contract import (
    EXPORT_HINT,
    FORMAT_VERSION,
    OPTIONAL_KEYS,
    REQUIRED_KEYS,
    ModelInfo,
    parse_metadata,
    validate_session,
)
from posenet_ros.errors import ModelFileError
from posenet_ros.model_file import load_model_info

from model_factory import (
    WRONG_SHAPE_VARIANTS,
    contract_metadata,
    make_test_model,
    make_wrong_shape_model,
)


def _assert_model_error(excinfo, *words):
    message = str(excinfo.value)
    assert message.endswith(EXPORT_HINT), message
    for word in words:
        assert word in message, message


# --- parse_metadata ---------------------------------------------------------------------------


def test_parse_good_metadata():
    metadata = contract_metadata(input_hw=(224, 240), resize_shorter=256, scene_frame="scene")
    metadata["vendor.extra"] = "ignored but kept"
    info = parse_metadata(metadata, path="/models/kings.onnx")
    assert info == ModelInfo(
        path="/models/kings.onnx",
        input_name="image",
        position_output="position",
        orientation_output="orientation",
        input_hw=(224, 240),
        resize_shorter=256,
        scene_frame="scene",
        architecture="test-mean-color",
        dataset="synthetic-test",
        median_error="n/a (test model)",
        format_version=FORMAT_VERSION,
        metadata=metadata,
    )
    assert info.name == "kings.onnx (test-mean-color)"
    assert hash(info) == hash(parse_metadata(dict(metadata), path="/models/kings.onnx"))
    assert REQUIRED_KEYS == (
        "posenet.format",
        "posenet.input",
        "posenet.outputs",
        "posenet.input_size",
        "posenet.resize",
        "posenet.scene_frame",
    )


def test_optional_keys_default_to_unknown():
    metadata = contract_metadata()
    for key in OPTIONAL_KEYS:
        del metadata[key]
    info = parse_metadata(metadata)
    assert (info.architecture, info.dataset, info.median_error) == ("unknown",) * 3
    assert info.name == "<memory> (unknown)"


def test_spaces_around_values_are_tolerated():
    metadata = contract_metadata()
    metadata.update({"posenet.outputs": "pos , ori", "posenet.input_size": " 32 , 48 "})
    metadata["posenet.resize"] = " 50 "
    info = parse_metadata(metadata)
    assert (info.position_output, info.orientation_output) == ("pos", "ori")
    assert info.input_hw == (32, 48) and info.resize_shorter == 50


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_missing_required_key(key):
    metadata = contract_metadata()
    del metadata[key]
    with pytest.raises(ModelFileError) as excinfo:
        parse_metadata(metadata, path="m.onnx")
    _assert_model_error(excinfo, "m.onnx", "metadata lacks", key)


def test_no_metadata_at_all():
    with pytest.raises(ModelFileError) as excinfo:
        parse_metadata({})
    _assert_model_error(excinfo, "found none", *REQUIRED_KEYS)


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("posenet.format", "3", ["'3'", "version(s) 1, 2"]),
        ("posenet.format", "", ["''", "version(s) 1"]),
        ("posenet.input", " ", ["posenet.input is empty"]),
        ("posenet.outputs", "position", ["'position'", "two different"]),
        ("posenet.outputs", "a,b,c", ["'a,b,c'"]),
        ("posenet.outputs", "a,a", ["'a,a'"]),
        ("posenet.outputs", "a,", ["'a,'"]),
        ("posenet.input_size", "224", ["'224'", "'H,W'"]),
        ("posenet.input_size", "224x224", ["'224x224'"]),
        ("posenet.input_size", "0,224", ["'0,224'", "positive"]),
        ("posenet.input_size", "-1,2", ["'-1,2'"]),
        ("posenet.input_size", "a,b", ["'a,b'"]),
        ("posenet.input_size", "32,32,3", ["'32,32,3'"]),
        ("posenet.input_size", "2.5,3", ["'2.5,3'"]),
        ("posenet.resize", "0", ["posenet.resize '0'", "positive integer"]),
        ("posenet.resize", "abc", ["'abc'"]),
        ("posenet.resize", "-36", ["'-36'"]),
        ("posenet.resize", "36.5", ["'36.5'"]),
        ("posenet.resize", "31", ["'31'", ">= min(H, W) = 32"]),
        ("posenet.scene_frame", "", ["posenet.scene_frame ''", "non-empty"]),
        ("posenet.scene_frame", " map", ["' map'", "whitespace"]),
        ("posenet.scene_frame", "my map", ["'my map'"]),
        ("posenet.scene_frame", "/map", ["'/map'", "leading slash", "'map'"]),
    ],
)
def test_bad_metadata_values(key, value, words):
    metadata = contract_metadata()
    metadata[key] = value
    with pytest.raises(ModelFileError) as excinfo:
        parse_metadata(metadata, path="bad.onnx")
    _assert_model_error(excinfo, "bad.onnx", key, *words)


def test_resize_may_be_below_max_for_non_square_input():
    # min(H, W) is the static bound; whether a given image's aspect ratio covers the crop is
    # checked per frame by preprocess.
    metadata = contract_metadata(input_hw=(32, 64), resize_shorter=40)
    assert parse_metadata(metadata).resize_shorter == 40


# --- load_model_info on real files --------------------------------------------------------------


def test_load_good_model(tmp_path):
    path = make_test_model(str(tmp_path / "good.onnx"), input_hw=(24, 40), resize_shorter=30)
    info = load_model_info(path)
    assert info.path == path
    assert info.input_hw == (24, 40) and info.resize_shorter == 30
    assert info.scene_frame == "map" and info.input_name == "image"
    assert (info.position_output, info.orientation_output) == ("position", "orientation")
    assert info.metadata == contract_metadata(input_hw=(24, 40), resize_shorter=30)
    assert info.name == "good.onnx (test-mean-color)"


def test_load_accepts_pathlike_and_opset18(tmp_path):
    path = make_test_model(str(tmp_path / "op18.onnx"), opset=18)
    assert load_model_info(tmp_path / "op18.onnx").path == path


def test_load_with_existing_session(tmp_path):
    import onnxruntime as ort

    path = make_test_model(str(tmp_path / "good.onnx"))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert load_model_info(path, session=session).input_hw == (32, 32)


def test_custom_tensor_names(tmp_path):
    path = make_test_model(
        str(tmp_path / "names.onnx"), input_name="rgb", output_names=("xyz", "wxyz")
    )
    info = load_model_info(path)
    assert (info.input_name, info.position_output, info.orientation_output) == (
        "rgb",
        "xyz",
        "wxyz",
    )


def test_missing_file(tmp_path):
    missing = str(tmp_path / "nope.onnx")
    with pytest.raises(ModelFileError) as excinfo:
        load_model_info(missing)
    _assert_model_error(excinfo, f"model file not found: {missing}")


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(ModelFileError) as excinfo:
        load_model_info(str(tmp_path))
    _assert_model_error(excinfo, str(tmp_path), "not a regular file")


@pytest.mark.parametrize(
    "content",
    [b"", os.urandom(2000), b"hello, this is a text file\nnot a model\n", b"\x08\x07" * 10],
    ids=["empty", "random-bytes", "text", "protobuf-ish"],
)
def test_not_onnx(tmp_path, content):
    path = tmp_path / "x.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as excinfo:
        load_model_info(str(path))
    _assert_model_error(excinfo, str(path), "cannot be loaded as an ONNX model")


def test_file_metadata_missing_key(tmp_path):
    path = make_test_model(str(tmp_path / "m.onnx"), drop_keys=("posenet.scene_frame",))
    with pytest.raises(ModelFileError) as excinfo:
        load_model_info(path)
    _assert_model_error(excinfo, path, "posenet.scene_frame")


def test_file_without_any_posenet_metadata(tmp_path):
    path = make_test_model(str(tmp_path / "m.onnx"), drop_keys=REQUIRED_KEYS + OPTIONAL_KEYS)
    with pytest.raises(ModelFileError) as excinfo:
        load_model_info(path)
    _assert_model_error(excinfo, "found none")


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"posenet.input": "img"}, ["'img'", "graph's inputs are image"]),
        ({"posenet.outputs": "position,pose"}, ["'pose'", "position, orientation"]),
        ({"posenet.outputs": "pose,orientation"}, ["'pose'", "position [N,3]"]),
        ({"posenet.input_size": "32,48", "posenet.resize": "48"}, ["[N,3,32,32]", "W = 48"]),
        ({"posenet.input_size": "16,32"}, ["[N,3,32,32]", "H = 16"]),
        ({"posenet.format": "0"}, ["'0'"]),
    ],
)
def test_metadata_disagreeing_with_graph(tmp_path, overrides, words):
    path = make_test_model(str(tmp_path / "m.onnx"), metadata_overrides=overrides)
    with pytest.raises(ModelFileError) as excinfo:
        load_model_info(path)
    _assert_model_error(excinfo, path, *words)


WRONG_SHAPE_WORDS = {
    "input_rank3": ["[3,32,32]", "rank 3", "rank 4"],
    "input_channels1": ["[N,1,32,32]", "1 channels", "3 (RGB)"],
    "input_size_mismatch": ["[N,3,33,34]", "H = 32"],
    "input_uint8": ["tensor(uint8)", "tensor(float)"],
    "two_inputs": ["2 inputs", "image, scale"],
    "position_2": ["'position'", "[N,2]", "last dimension 3"],
    "orientation_3": ["'orientation'", "[N,3]", "last dimension 4"],
}


@pytest.mark.parametrize("variant", WRONG_SHAPE_VARIANTS)
def test_wrong_graph_signature(tmp_path, variant):
    path = make_wrong_shape_model(str(tmp_path / f"{variant}.onnx"), variant)
    with pytest.raises(ModelFileError) as excinfo:
        load_model_info(path)
    _assert_model_error(excinfo, path, *WRONG_SHAPE_WORDS[variant])


# --- validate_session on duck-typed sessions ----------------------------------------------------


def _arg(name, shape, type_="tensor(float)"):
    return SimpleNamespace(name=name, shape=shape, type=type_)


def _session(inputs, outputs):
    return SimpleNamespace(get_inputs=lambda: inputs, get_outputs=lambda: outputs)


GOOD_OUTPUTS = [_arg("position", ["N", 3]), _arg("orientation", ["N", 4])]


@pytest.mark.parametrize(
    "image_shape",
    [["N", 3, 32, 32], ["batch", 3, "height", "width"], [1, 3, 32, 32], [None, 3, None, None]],
)
def test_validate_session_accepts_symbolic_dims(image_shape):
    info = parse_metadata(contract_metadata())
    validate_session(_session([_arg("image", image_shape)], GOOD_OUTPUTS), info)


@pytest.mark.parametrize(
    "inputs, outputs, words",
    [
        ([_arg("image", ["N", 3, 32, 32], "tensor(double)")], GOOD_OUTPUTS, ["tensor(double)"]),
        ([_arg("image", ["N", 3, 32, 32])], GOOD_OUTPUTS[:1], ["'orientation'", "position"]),
        (
            [_arg("image", ["N", 3, 32, 32])],
            [_arg("position", ["N", 3], "tensor(int64)"), GOOD_OUTPUTS[1]],
            ["tensor(int64)", "float position"],
        ),
        (
            [_arg("image", ["N", 3, 32, 32])],
            [_arg("position", []), GOOD_OUTPUTS[1]],
            ["shape []"],
        ),
        ([], GOOD_OUTPUTS, ["'image'", "inputs are none"]),
    ],
)
def test_validate_session_rejects(inputs, outputs, words):
    info = parse_metadata(contract_metadata(), path="s.onnx")
    with pytest.raises(ModelFileError) as excinfo:
        validate_session(_session(inputs, outputs), info)
    _assert_model_error(excinfo, "s.onnx", *words)
