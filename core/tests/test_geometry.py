"""posenet_core.geometry and .covariance (moved from the node's geometry): quaternion orders,
matrices, the Cambridge convention against real calibration, the optical frame, and
pose-covariance propagation against numerical references."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from posenet_core.covariance import covariance_6x6_from_diagonal, transform_pose_covariance
from posenet_core.errors import InvalidPoseError
from posenet_core.geometry import (
    R_BODY_OPTICAL,
    R_OPTICAL_BODY,
    R_body_optical,
    cambridge_to_T_world_camera,
    compose_poses,
    invert_pose,
    matrix_to_pose,
    matrix_to_quat_wxyz,
    matrix_to_rotvec,
    normalize_quat_wxyz,
    pose_to_matrix,
    quat_wxyz_to_matrix,
    quat_wxyz_to_xyzw,
    quat_xyzw_to_wxyz,
    rotvec_to_matrix,
    skew,
    validate_position,
)

from dino import read_calibration

RNG = np.random.default_rng(1234)


def _random_quats(n: int) -> np.ndarray:
    quats = RNG.normal(size=(n, 4))
    return quats / np.linalg.norm(quats, axis=1, keepdims=True)


def _hamilton(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def _rotate_by_quat(quat_wxyz: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """q v q* with explicit quaternion products: independent of the matrix formula."""
    conjugate = quat_wxyz * np.array([1.0, -1.0, -1.0, -1.0])
    return _hamilton(_hamilton(quat_wxyz, np.concatenate([[0.0], vector])), conjugate)[1:]


def _random_pose() -> np.ndarray:
    return pose_to_matrix(RNG.normal(size=3), _random_quats(1)[0])


# --- quaternion orders and normalisation --------------------------------------------------------


def test_quaternion_order_round_trips():
    quat_wxyz = np.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_array_equal(quat_wxyz_to_xyzw(quat_wxyz), [0.2, 0.3, 0.4, 0.1])
    np.testing.assert_array_equal(quat_xyzw_to_wxyz([0.2, 0.3, 0.4, 0.1]), quat_wxyz)
    batch = _random_quats(5)
    np.testing.assert_array_equal(quat_xyzw_to_wxyz(quat_wxyz_to_xyzw(batch)), batch)


@pytest.mark.parametrize("bad", [[1.0, 2.0, 3.0], 1.0, [[1.0, 2.0, 3.0, 4.0, 5.0]], ["a"] * 4])
def test_quaternion_order_rejects_wrong_length(bad):
    for convert in (quat_wxyz_to_xyzw, quat_xyzw_to_wxyz):
        with pytest.raises(InvalidPoseError, match=r"expected \(\.\.\., 4\)|not numeric"):
            convert(bad)


@pytest.mark.parametrize(
    "quat, expected",
    [
        ([2.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]),
        ([-1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]),  # canonical sign: w >= 0
        ([-0.6, 0.0, 0.0, 0.8], [0.6, 0.0, 0.0, -0.8]),
        ([0.0, 0.0, 3.0, 4.0], [0.0, 0.0, 0.6, 0.8]),
        ((1e-3, 0.0, 0.0, 0.0), [1.0, 0.0, 0.0, 0.0]),
    ],
)
def test_normalize_quat(quat, expected):
    np.testing.assert_allclose(normalize_quat_wxyz(quat), expected, atol=1e-15)


@pytest.mark.parametrize(
    "quat, max_dev, words",
    [
        ([np.nan, 0.0, 0.0, 1.0], None, "not finite"),
        ([np.inf, 0.0, 0.0, 1.0], None, "not finite"),
        ([0.0, 0.0, 0.0, 0.0], None, "zero quaternion"),
        ([1e-7, 0.0, 0.0, 0.0], None, "zero quaternion"),
        ([2.0, 0.0, 0.0, 0.0], 0.05, "norm 2"),
        ([0.9, 0.0, 0.0, 0.0], 0.05, r"norm 0.9; allowed 1 \+- 0.05"),
        ([1.0, 0.0, 0.0], None, "3 values; expected 4"),
        (["a", "b", "c", "d"], None, "not numeric"),
    ],
)
def test_invalid_quaternions_rejected(quat, max_dev, words):
    with pytest.raises(InvalidPoseError, match=words):
        normalize_quat_wxyz(quat, max_norm_deviation=max_dev)


def test_norm_deviation_within_bound_accepted():
    np.testing.assert_allclose(
        normalize_quat_wxyz([1.04, 0.0, 0.0, 0.0], max_norm_deviation=0.05), [1.0, 0, 0, 0]
    )


@pytest.mark.parametrize(
    "position, words",
    [
        ([np.nan, 0.0, 0.0], "not finite"),
        ([0.0, -np.inf, 0.0], "not finite"),
        ([0.0, 0.0], "2 values; expected 3"),
        ([[1.0, 2.0, 3.0, 4.0]], "4 values"),
    ],
)
def test_invalid_positions_rejected(position, words):
    with pytest.raises(InvalidPoseError, match=words):
        validate_position(position)


def test_validate_position_returns_float64():
    position = validate_position(np.array([1, 2, 3], dtype=np.float32))
    assert position.dtype == np.float64 and position.shape == (3,)


# --- matrices ---------------------------------------------------------------------------------


def test_quat_to_matrix_matches_quaternion_rotation():
    for quat in _random_quats(20):
        R = quat_wxyz_to_matrix(quat)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        vector = RNG.normal(size=3)
        np.testing.assert_allclose(R @ vector, _rotate_by_quat(quat, vector), atol=1e-12)


def test_matrix_quat_round_trip_canonical_sign():
    for quat in _random_quats(20):
        canonical = quat if quat[0] >= 0 else -quat
        np.testing.assert_allclose(
            matrix_to_quat_wxyz(quat_wxyz_to_matrix(quat)), canonical, atol=1e-12
        )


def test_quat_to_matrix_rejects_zero():
    with pytest.raises(InvalidPoseError, match="zero quaternion"):
        quat_wxyz_to_matrix([0.0, 0.0, 0.0, 0.0])


def test_known_rotation():
    # 90 degrees about z: x -> y.
    quat = [math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]
    np.testing.assert_allclose(quat_wxyz_to_matrix(quat) @ [1.0, 0.0, 0.0], [0, 1, 0], atol=1e-15)


def test_pose_matrix_round_trip_inverse_and_compose():
    position = np.array([1.0, -2.0, 0.5])
    quat = normalize_quat_wxyz(_random_quats(1)[0])
    T = pose_to_matrix(position, quat)
    back_position, back_quat = matrix_to_pose(T)
    np.testing.assert_allclose(back_position, position)
    np.testing.assert_allclose(back_quat, quat, atol=1e-12)
    np.testing.assert_allclose(invert_pose(T), np.linalg.inv(T), atol=1e-12)
    np.testing.assert_allclose(compose_poses(T, invert_pose(T)), np.eye(4), atol=1e-12)
    T_b_c = _random_pose()
    np.testing.assert_allclose(compose_poses(T, T_b_c), T @ T_b_c)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: matrix_to_pose(np.eye(3)), r"shape \(3, 3\); expected \(4, 4\)"),
        (lambda: invert_pose(np.full((4, 4), np.nan)), "NaN"),
        (lambda: matrix_to_quat_wxyz(np.eye(4)), r"expected \(3, 3\)"),
        (lambda: pose_to_matrix([0, 0, np.nan], [1, 0, 0, 0]), "not finite"),
        (lambda: compose_poses(np.eye(4), "x"), "not numeric"),
    ],
)
def test_bad_matrices_rejected(call, words):
    with pytest.raises(InvalidPoseError, match=words):
        call()


def test_rotvec_round_trip_and_skew():
    for rotvec in [RNG.normal(size=3) for _ in range(10)] + [np.zeros(3), np.array([0, 0, 3.1])]:
        R = rotvec_to_matrix(rotvec)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(rotvec_to_matrix(matrix_to_rotvec(R)), R, atol=1e-12)
    a, b = RNG.normal(size=3), RNG.normal(size=3)
    np.testing.assert_allclose(skew(a) @ b, np.cross(a, b))


# --- optical frame ------------------------------------------------------------------------------


def test_body_optical_rotation_rep103():
    # Optical z (forward) is body x; optical x (right) is body -y; optical y (down) is body -z.
    np.testing.assert_array_equal(R_BODY_OPTICAL @ [0, 0, 1], [1, 0, 0])
    np.testing.assert_array_equal(R_BODY_OPTICAL @ [1, 0, 0], [0, -1, 0])
    np.testing.assert_array_equal(R_BODY_OPTICAL @ [0, 1, 0], [0, 0, -1])
    np.testing.assert_array_equal(R_OPTICAL_BODY @ R_BODY_OPTICAL, np.eye(3))
    assert np.linalg.det(R_BODY_OPTICAL) == pytest.approx(1.0)
    assert R_body_optical is R_BODY_OPTICAL
    np.testing.assert_allclose(
        quat_wxyz_to_xyzw(matrix_to_quat_wxyz(R_BODY_OPTICAL)), [-0.5, 0.5, -0.5, 0.5]
    )
    assert not R_BODY_OPTICAL.flags.writeable


# --- the Cambridge convention against the dino's original calibration ---------------------------


def test_cambridge_conversion_matches_dino_projection(dino):
    calibration = read_calibration(dino)
    cambridge = {}
    for line in (dino / "dataset_train.txt").read_text().splitlines()[3:]:
        fields = line.split()
        if fields:
            cambridge[Path(fields[0]).name] = np.array(fields[1:], dtype=np.float64)
    assert len(cambridge) == 273

    # The dino's bounding box (README.txt) and points around it, in world coordinates (m).
    points_world = np.vstack(
        [
            [[x, y, z] for x in (-0.042, 0.031) for y in (0.001, 0.088) for z in (-0.038, 0.035)],
            RNG.uniform(-0.05, 0.09, size=(20, 3)),
        ]
    )
    for name, values in cambridge.items():
        K, R, t = calibration[name]
        T_world_camera = cambridge_to_T_world_camera(values[:3], values[3:])
        # Reference: the original x ~ K [R | t] X.
        reference = (K @ (R @ points_world.T + t[:, None])).T
        reference = reference[:, :2] / reference[:, 2:]
        # Ours: into the camera frame with the inverse of T_world_camera, then K.
        T_camera_world = invert_pose(T_world_camera)
        points_camera = (T_camera_world[:3, :3] @ points_world.T).T + T_camera_world[:3, 3]
        assert np.all(points_camera[:, 2] > 0.3), name  # in front of the optical camera (z fwd)
        ours = (K @ points_camera.T).T
        ours = ours[:, :2] / ours[:, 2:]
        np.testing.assert_allclose(ours, reference, atol=0.05, err_msg=name)  # pixels
        np.testing.assert_allclose(T_world_camera[:3, :3], R.T, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(T_world_camera[:3, 3], -R.T @ t, atol=1e-6, err_msg=name)


def test_cambridge_rejects_bad_values():
    with pytest.raises(InvalidPoseError, match="zero quaternion"):
        cambridge_to_T_world_camera([0, 0, 0], [0, 0, 0, 0])
    with pytest.raises(InvalidPoseError, match="not finite"):
        cambridge_to_T_world_camera([0, np.nan, 0], [1, 0, 0, 0])


# --- covariance ---------------------------------------------------------------------------------


def test_covariance_from_diagonal():
    cov = covariance_6x6_from_diagonal([0.1, 0.2, 0.3], [0.01, 0.02, 0.03])
    assert isinstance(cov, list) and len(cov) == 36
    assert all(isinstance(value, float) for value in cov)
    matrix = np.array(cov).reshape(6, 6)
    np.testing.assert_array_equal(np.diag(matrix), [0.1, 0.2, 0.3, 0.01, 0.02, 0.03])
    assert np.count_nonzero(matrix - np.diag(np.diag(matrix))) == 0


@pytest.mark.parametrize(
    "position_var, rotation_var, words",
    [
        ([0.1, -1.0, 0.1], [0.1, 0.1, 0.1], "non-negative"),
        ([0.1, 0.1, 0.1], [np.nan, 0.1, 0.1], "finite"),
        ([0.1, 0.1], [0.1, 0.1, 0.1], "2 values; expected 3"),
        ([0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1], "4 values; expected 3"),
        ("abc", [0.1, 0.1, 0.1], "not numeric"),
    ],
)
def test_covariance_from_diagonal_rejects(position_var, rotation_var, words):
    with pytest.raises(InvalidPoseError, match=words):
        covariance_6x6_from_diagonal(position_var, rotation_var)


def _pose_error(T_estimate: np.ndarray, T_true: np.ndarray) -> np.ndarray:
    """The module's error coordinates: world-frame position difference, left rotation vector."""
    return np.concatenate(
        [
            T_true[:3, 3] - T_estimate[:3, 3],
            matrix_to_rotvec(T_true[:3, :3] @ T_estimate[:3, :3].T),
        ]
    )


def _perturb(T: np.ndarray, delta: np.ndarray) -> np.ndarray:
    perturbed = T.copy()
    perturbed[:3, 3] += delta[:3]
    perturbed[:3, :3] = rotvec_to_matrix(delta[3:]) @ T[:3, :3]
    return perturbed


def _random_covariance() -> np.ndarray:
    A = RNG.normal(size=(6, 6)) * np.array([0.05, 0.05, 0.05, 0.02, 0.02, 0.02])[:, None]
    return A @ A.T + np.diag([1e-4] * 3 + [1e-5] * 3)


@pytest.mark.parametrize("trial", range(5))
def test_transform_pose_covariance_matches_finite_difference_jacobian(trial):
    T_world_camera = _random_pose()
    T_camera_base = pose_to_matrix(RNG.normal(size=3) * 0.5, _random_quats(1)[0])
    T_world_base = compose_poses(T_world_camera, T_camera_base)
    eps = 1e-6
    J = np.zeros((6, 6))
    for k in range(6):
        delta = np.zeros(6)
        delta[k] = eps
        plus = compose_poses(_perturb(T_world_camera, delta), T_camera_base)
        minus = compose_poses(_perturb(T_world_camera, -delta), T_camera_base)
        J[:, k] = (_pose_error(T_world_base, plus) - _pose_error(T_world_base, minus)) / (2 * eps)
    cov = _random_covariance()
    result = transform_pose_covariance(cov, T_camera_base, T_world_camera)
    np.testing.assert_allclose(result, J @ cov @ J.T, atol=1e-9)
    np.testing.assert_allclose(result, result.T, atol=1e-15)
    # The 36-value message layout is accepted too.
    np.testing.assert_allclose(
        transform_pose_covariance(cov.ravel().tolist(), T_camera_base, T_world_camera), result
    )


def test_transform_pose_covariance_matches_monte_carlo():
    T_world_camera = _random_pose()
    T_camera_base = pose_to_matrix([0.3, -0.1, 0.8], _random_quats(1)[0])
    T_world_base = compose_poses(T_world_camera, T_camera_base)
    cov = np.diag([1e-4, 4e-4, 1e-4, 1e-4, 2.5e-5, 4e-4])
    cov[0, 4] = cov[4, 0] = 2e-5
    samples = RNG.multivariate_normal(np.zeros(6), cov, size=4000)
    errors = np.array(
        [
            _pose_error(T_world_base, compose_poses(_perturb(T_world_camera, d), T_camera_base))
            for d in samples
        ]
    )
    empirical = np.cov(errors.T)
    predicted = transform_pose_covariance(cov, T_camera_base, T_world_camera)
    scale = np.sqrt(np.outer(np.diag(predicted), np.diag(predicted)))
    # Sampling error of a covariance from 4000 samples is ~2-3 % of the scale.
    np.testing.assert_allclose(empirical / scale, predicted / scale, atol=0.08)


def test_transform_pose_covariance_identity_extrinsic_is_unchanged():
    cov = _random_covariance()
    np.testing.assert_allclose(
        transform_pose_covariance(cov, np.eye(4), _random_pose()), cov, atol=1e-15
    )


@pytest.mark.parametrize(
    "cov, T_cb, T_wc, words",
    [
        (np.eye(5), np.eye(4), np.eye(4), r"shape \(5, 5\)"),
        (np.full((6, 6), np.nan), np.eye(4), np.eye(4), "NaN"),
        (np.eye(6), np.eye(3), np.eye(4), "T_camera_base"),
        (np.eye(6), np.eye(4), np.eye(3), "T_world_camera"),
    ],
)
def test_transform_pose_covariance_rejects(cov, T_cb, T_wc, words):
    with pytest.raises(InvalidPoseError, match=words):
        transform_pose_covariance(cov, T_cb, T_wc)
