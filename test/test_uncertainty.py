"""Per-image uncertainty: the format 2 contract, reading the log-variance output through the
backends, the covariance the node publishes, and the base pose's covariance against a numerical
reference."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

import posenet_ros.pipeline as pipeline
from posenet_core.contract import EXPORT_HINT, parse_metadata
from posenet_core.covariance import (
    base_pose_with_covariance,
    covariance_6x6_from_log_variance,
    extrinsic_from_parameters,
    stddev_from_covariance,
)
from posenet_core.geometry import (
    R_OPTICAL_BODY,
    matrix_to_quat_wxyz,
    pose_to_matrix,
    quat_wxyz_to_matrix,
    quat_wxyz_to_xyzw,
    rotvec_to_matrix,
)
from posenet_ros.backends.onnxruntime import OnnxRuntimeBackend
from posenet_ros.backends.tensorrt import TensorRTBackend
from posenet_ros.errors import BackendError, InvalidPoseError, ModelFileError
from posenet_ros.model_file import load_model_info
from posenet_ros.pipeline import Relocalizer, pose_covariance

from covariance_reference import numerical_base_covariance
from model_factory import (
    DEFAULT_LOG_VARIANCE_OFFSET,
    contract_metadata,
    expected_log_variance,
    make_test_model,
)

RGB = (255, 0, 51)


def solid(rgb=RGB, height=48, width=64) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (height, width, 3)).copy()


# --- the contract -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, key, expected",
    [
        ("2", "sigma", "sigma"),
        ("2", " sigma ", "sigma"),
        ("2", None, None),  # format 2 without uncertainty: the fixed covariance
        ("1", "sigma", None),  # the key did not exist in format 1: ignored
    ],
)
def test_uncertainty_key(version, key, expected):
    metadata = contract_metadata(format_version=version, uncertainty_output=key)
    info = parse_metadata(metadata)
    assert info.uncertainty_output == expected
    assert info.format_version == version


@pytest.mark.parametrize(
    "value, words",
    [
        ("", ["''", "one tensor name"]),
        ("a,b", ["'a,b'", "one tensor name"]),
        ("position", ["'position'", "also in posenet.outputs"]),
    ],
)
def test_bad_uncertainty_key(value, words):
    metadata = contract_metadata(uncertainty_output=value)
    with pytest.raises(ModelFileError) as excinfo:
        parse_metadata(metadata, path="u.onnx")
    message = str(excinfo.value)
    assert message.endswith(EXPORT_HINT)
    for word in ["u.onnx", "posenet.uncertainty_output", *words]:
        assert word in message


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"uncertainty": "wrong_width"}, ["'log_variance'", "[N,5]", "last dimension 6 or 2"]),
        (
            {"metadata_overrides": {"posenet.uncertainty_output": "sigma"}},
            ["posenet.uncertainty_output names 'sigma'", "log-variances"],
        ),
    ],
)
def test_uncertainty_output_must_match_the_graph(tmp_path, kwargs, words):
    path = make_test_model(str(tmp_path / "m.onnx"), **kwargs)
    with pytest.raises(ModelFileError) as excinfo:
        load_model_info(path)
    for word in [path, *words]:
        assert word in str(excinfo.value)


# --- the pipeline -------------------------------------------------------------------------------


@pytest.mark.parametrize("uncertainty", ["diagonal", "isotropic"])
def test_relocalizer_reads_the_log_variances(tmp_path, uncertainty):
    offset = DEFAULT_LOG_VARIANCE_OFFSET if uncertainty == "diagonal" else (-4.0, -6.0)
    path = make_test_model(
        str(tmp_path / "u.onnx"), uncertainty=uncertainty, log_variance_offset=offset
    )
    relocalizer = Relocalizer(path, backend="onnxruntime", num_threads=1)
    assert relocalizer.has_uncertainty
    result = relocalizer.estimate_rgb(solid())
    expected = expected_log_variance(RGB, uncertainty, offset)
    if uncertainty == "isotropic":
        expected = np.repeat(expected, 3)
    np.testing.assert_allclose(result.log_variance, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(result.position_m, np.array(RGB) / 255.0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"uncertainty": None},
        {"uncertainty": "diagonal", "format_version": "1"},  # key ignored in format 1
    ],
)
def test_files_without_uncertainty_give_none(tmp_path, kwargs):
    relocalizer = Relocalizer(make_test_model(str(tmp_path / "m.onnx"), **kwargs), "onnxruntime")
    assert not relocalizer.has_uncertainty
    assert relocalizer.estimate_rgb(solid()).log_variance is None


def test_uncertainty_can_be_left_unread(tmp_path):
    path = make_test_model(str(tmp_path / "u.onnx"), uncertainty="diagonal")
    relocalizer = Relocalizer(path, "onnxruntime", read_uncertainty=False)
    assert relocalizer.estimate_rgb(solid()).log_variance is None


@pytest.mark.parametrize("bad", [math.nan, 800.0])
def test_unusable_log_variances_are_an_invalid_pose(tmp_path, bad):
    offset = list(DEFAULT_LOG_VARIANCE_OFFSET)
    offset[4] = bad
    path = make_test_model(
        str(tmp_path / "u.onnx"), uncertainty="diagonal", log_variance_offset=offset
    )
    relocalizer = Relocalizer(path, "onnxruntime")  # start-up does not judge the values
    with pytest.raises(InvalidPoseError, match="log-variances"):
        relocalizer.estimate_rgb(solid())


def test_backends_return_the_uncertainty_output_by_name(tmp_path):
    path = make_test_model(str(tmp_path / "u.onnx"), uncertainty="diagonal")
    info = load_model_info(path)
    batch = np.broadcast_to(
        (np.array(RGB, np.float32) / np.float32(255.0))[None, :, None, None], (1, 3, 32, 32)
    ).copy()
    onnx_outputs = OnnxRuntimeBackend(path, info, num_threads=1).infer(batch)
    assert list(onnx_outputs) == ["position", "orientation", "log_variance"]
    np.testing.assert_allclose(
        onnx_outputs["log_variance"][0], expected_log_variance(RGB), rtol=1e-6, atol=1e-6
    )
    # The TensorRT backend asks its runner for the same names and returns them the same way.
    runner = SimpleNamespace(run=lambda image: dict(onnx_outputs))
    trt = TensorRTBackend(runner, info, SimpleNamespace(max_batch=1), "u.engine")
    assert list(trt.infer(batch)) == list(onnx_outputs)


def test_a_backend_without_the_uncertainty_output_fails_at_start_up(tmp_path, monkeypatch):
    path = make_test_model(str(tmp_path / "u.onnx"), uncertainty="diagonal")

    class PoseOnly:
        name = "pose-only"

        def infer(self, image_BCHW):
            return {"position": np.zeros((1, 3)), "orientation": np.ones((1, 4))}

    monkeypatch.setattr(pipeline, "create_backend", lambda *args, **kwargs: PoseOnly())
    with pytest.raises(BackendError, match="returned no 'log_variance' output"):
        Relocalizer(path, "onnxruntime")
    assert not Relocalizer(path, "onnxruntime", read_uncertainty=False).has_uncertainty


# --- the published covariance -------------------------------------------------------------------

FIXED = np.diag([0.04, 0.09, 0.16, 0.01, 0.02, 0.03])


@pytest.mark.parametrize(
    "log_variance, use_model, scale, expected, from_model",
    [
        (None, True, 1.0, FIXED, False),
        (np.log([1, 2, 3, 4, 5, 6.0]), True, 1.0, np.diag([1, 2, 3, 4, 5, 6.0]), True),
        (np.log([1, 2, 3, 4, 5, 6.0]), True, 2.0, np.diag([2, 4, 6, 8, 10, 12.0]), True),
        (np.log([1, 2, 3, 4, 5, 6.0]), False, 2.0, FIXED, False),
    ],
)
def test_pose_covariance_choice(log_variance, use_model, scale, expected, from_model):
    covariance, model = pose_covariance(
        log_variance,
        FIXED.ravel().tolist(),
        use_model_covariance=use_model,
        model_covariance_scale=scale,
    )
    np.testing.assert_allclose(covariance, expected)
    assert model is from_model


@pytest.mark.parametrize(
    "values, scale, expected_diagonal",
    [
        (np.log([0.01, 0.04, 0.09, 1e-4, 4e-4, 9e-4]), 1.0, [0.01, 0.04, 0.09, 1e-4, 4e-4, 9e-4]),
        (np.log([0.25, 0.01]), 1.0, [0.25] * 3 + [0.01] * 3),
        (np.log([0.25, 0.01]), 4.0, [1.0] * 3 + [0.04] * 3),
    ],
)
def test_covariance_from_log_variance(values, scale, expected_diagonal):
    covariance = covariance_6x6_from_log_variance(values, scale)
    np.testing.assert_allclose(covariance, np.diag(expected_diagonal))
    np.testing.assert_allclose(stddev_from_covariance(covariance), np.sqrt(expected_diagonal))
    np.testing.assert_allclose(
        stddev_from_covariance(covariance.ravel().tolist()), np.sqrt(expected_diagonal)
    )


@pytest.mark.parametrize(
    "values, scale, words",
    [
        ([0.0] * 5, 1.0, "5 values; expected 6"),
        ([0.0] * 6 + [1.0], 1.0, "7 values"),
        ([0.0, math.nan], 1.0, "finite"),
        ([0.0] * 5 + [math.inf], 1.0, "finite"),
        ([0.0] * 5 + [710.0], 1.0, "<= 700"),
        ("abc", 1.0, "not numeric"),
        ([0.0] * 6, 0.0, "scale"),
        ([0.0] * 6, math.nan, "scale"),
    ],
)
def test_covariance_from_log_variance_rejects(values, scale, words):
    with pytest.raises(InvalidPoseError, match=words):
        covariance_6x6_from_log_variance(values, scale)


def test_stddev_rejects_negative_variances():
    with pytest.raises(InvalidPoseError, match="negative"):
        stddev_from_covariance(-np.eye(6))


# --- the extrinsic and the base pose ------------------------------------------------------------


def test_default_extrinsic_is_the_optical_to_body_rotation():
    T = extrinsic_from_parameters([0.0, 0.0, 0.0], [0.5, -0.5, 0.5, 0.5])
    np.testing.assert_allclose(T[:3, :3], R_OPTICAL_BODY, atol=1e-12)
    # A camera 0.2 m ahead of and 0.3 m above the base: the base is 0.3 m "down" (optical +y)
    # and 0.2 m "behind" (optical -z).
    T = extrinsic_from_parameters([0.0, 0.3, -0.2], [0.5, -0.5, 0.5, 0.5])
    base_in_body = R_OPTICAL_BODY.T @ T[:3, 3]
    np.testing.assert_allclose(base_in_body, [-0.2, 0.0, -0.3], atol=1e-12)


@pytest.mark.parametrize(
    "translation, quat, words",
    [
        ([0.0, 0.0], [0, 0, 0, 1], "position has 2 values"),
        ([0.0, math.nan, 0.0], [0, 0, 0, 1], "not finite"),
        ([0.0, 0.0, 0.0], [0, 0, 1], "3 values; expected 4"),
        ([0.0, 0.0, 0.0], [0, 0, 0, 2], "norm 2"),
        ([0.0, 0.0, 0.0], [0, 0, 0, 0], "zero quaternion"),
        ([0.0, 0.0, 0.0], [0, math.inf, 0, 1], "not finite"),
    ],
)
def test_bad_extrinsic(translation, quat, words):
    with pytest.raises(InvalidPoseError, match=words):
        extrinsic_from_parameters(translation, quat)


def _random_rotation(rng) -> np.ndarray:
    return rotvec_to_matrix(rng.normal(size=3) * 1.2)


@pytest.mark.parametrize("trial", range(4))
def test_base_pose_and_covariance_match_a_numerical_reference(trial):
    rng = np.random.default_rng(100 + trial)
    R_wc = _random_rotation(rng)
    position = rng.normal(size=3) * 3
    quat = matrix_to_quat_wxyz(R_wc)
    T_camera_base = extrinsic_from_parameters(
        rng.normal(size=3), quat_wxyz_to_xyzw(matrix_to_quat_wxyz(_random_rotation(rng)))
    )
    A = rng.normal(size=(6, 6)) * np.array([0.3, 0.3, 0.3, 0.05, 0.05, 0.05])
    covariance = A @ A.T
    base_position, base_quat, base_covariance = base_pose_with_covariance(
        position, quat, covariance, T_camera_base
    )
    T_world_camera = pose_to_matrix(position, quat)
    T_expected = T_world_camera @ T_camera_base
    np.testing.assert_allclose(base_position, T_expected[:3, 3], atol=1e-12)
    np.testing.assert_allclose(quat_wxyz_to_matrix(base_quat), T_expected[:3, :3], atol=1e-12)
    reference = numerical_base_covariance(T_world_camera, T_camera_base, covariance)
    np.testing.assert_allclose(base_covariance, reference, rtol=1e-6, atol=1e-9)
