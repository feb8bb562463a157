"""posenet_core.geometry's batch functions (moved from the trainer's geometry): quaternion
algebra, conventions, projection, averaging."""

from __future__ import annotations

import math

import numpy as np
import pytest

from posenet_core.errors import PoseNetError as PoseNetTrainError
from posenet_core.geometry import (
    average_quaternions,
    cambridge_to_world_camera,
    matrix_to_pose,
    matrix_to_quat,
    orthonormalize_rotation,
    pose_to_matrix,
    project_points,
    project_points_krt,
    quat_canonical,
    quat_conjugate,
    quat_multiply,
    quat_normalize,
    quat_to_matrix,
    world_camera_to_cambridge,
)
from posenet_core.metrics import rotation_error_deg


def random_quats(count: int, seed: int = 0) -> np.ndarray:
    return quat_canonical(quat_normalize(np.random.default_rng(seed).normal(size=(count, 4))))


def axis_angle_quat(axis, angle_deg: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    half = math.radians(angle_deg) / 2.0
    return np.concatenate([[math.cos(half)], math.sin(half) * axis])


@pytest.mark.parametrize(
    ("quat_wxyz", "matrix"),
    [
        ([1, 0, 0, 0], np.eye(3)),
        # 90 deg about z: x -> y, y -> -x.
        (axis_angle_quat([0, 0, 1], 90), [[0, -1, 0], [1, 0, 0], [0, 0, 1]]),
        # 180 deg about x: y -> -y, z -> -z (w = 0 branch of matrix_to_quat).
        ([0, 1, 0, 0], [[1, 0, 0], [0, -1, 0], [0, 0, -1]]),
        # 180 deg about y and about z exercise the two remaining branches.
        ([0, 0, 1, 0], [[-1, 0, 0], [0, 1, 0], [0, 0, -1]]),
        ([0, 0, 0, 1], [[-1, 0, 0], [0, -1, 0], [0, 0, 1]]),
    ],
)
def test_quat_matrix_known_values(quat_wxyz, matrix) -> None:
    np.testing.assert_allclose(quat_to_matrix(np.array(quat_wxyz, float)), matrix, atol=1e-12)
    np.testing.assert_allclose(matrix_to_quat(np.array(matrix, float)), quat_wxyz, atol=1e-12)


def test_quat_matrix_round_trip_and_product() -> None:
    q = random_quats(200)
    np.testing.assert_allclose(matrix_to_quat(quat_to_matrix(q)), q, atol=1e-12)
    q2 = random_quats(200, seed=1)
    # Hamilton product composes like matrix product: R(q1 q2) = R(q1) R(q2).
    np.testing.assert_allclose(
        quat_to_matrix(quat_multiply(q, q2)), quat_to_matrix(q) @ quat_to_matrix(q2), atol=1e-12
    )
    np.testing.assert_allclose(
        quat_to_matrix(quat_conjugate(q)), np.swapaxes(quat_to_matrix(q), -1, -2), atol=1e-12
    )


def test_quat_canonical_and_normalize() -> None:
    np.testing.assert_array_equal(
        quat_canonical(np.array([-0.5, 0.5, 0.5, 0.5])), [0.5, -0.5, -0.5, -0.5]
    )
    np.testing.assert_array_equal(quat_canonical(np.array([0.0, -1.0, 0.0, 0.0])), [0, 1, 0, 0])
    np.testing.assert_allclose(quat_normalize(np.array([2.0, 0, 0, 0])), [1, 0, 0, 0])
    with pytest.raises(PoseNetTrainError, match="norm"):
        quat_normalize(np.zeros(4))
    with pytest.raises(PoseNetTrainError, match="wxyz"):
        quat_normalize(np.zeros(3))


@pytest.mark.parametrize(
    ("q1", "q2", "expected_deg"),
    [
        ([1, 0, 0, 0], [1, 0, 0, 0], 0.0),
        ([1, 0, 0, 0], [-1, 0, 0, 0], 0.0),  # q and -q are one rotation
        ([0.5, 0.5, -0.5, 0.5], [-0.5, -0.5, 0.5, -0.5], 0.0),
        ([1, 0, 0, 0], axis_angle_quat([0, 1, 0], 30), 30.0),
        ([1, 0, 0, 0], axis_angle_quat([1, 1, 0], 179), 179.0),
        ([1, 0, 0, 0], [0, 0, 0, 1], 180.0),
        (axis_angle_quat([0, 0, 1], 10), axis_angle_quat([0, 0, 1], -15), 25.0),
        ([1, 0, 0, 0], axis_angle_quat([0, 0, 1], 1e-6), 1e-6),  # accurate for tiny angles
    ],
)
def test_rotation_error_deg(q1, q2, expected_deg) -> None:
    got = rotation_error_deg(np.array(q1, float), np.array(q2, float))
    assert got == pytest.approx(expected_deg, rel=1e-9, abs=1e-12)


def test_orthonormalize_rotation() -> None:
    rotation = quat_to_matrix(random_quats(1)[0])
    noisy = rotation + 1e-5 * np.random.default_rng(3).normal(size=(3, 3))
    fixed = orthonormalize_rotation(noisy)
    np.testing.assert_allclose(fixed.T @ fixed, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(fixed, rotation, atol=1e-4)
    with pytest.raises(PoseNetTrainError, match="not a rotation"):
        orthonormalize_rotation(np.diag([1.0, 1.0, 1.1]))
    with pytest.raises(PoseNetTrainError, match="det"):
        orthonormalize_rotation(np.diag([1.0, 1.0, -1.0]))


def test_cambridge_conversion_by_projection() -> None:
    # A camera 2 m behind the origin on -z, turned 90 deg about its optical axis.
    k = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    r_camera_world = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])  # world -> camera
    center = np.array([0.0, 0.0, -2.0])
    t = -r_camera_world @ center
    quat_world_to_camera = matrix_to_quat(r_camera_world)
    position_m, quat_wxyz = cambridge_to_world_camera(center, quat_world_to_camera)
    points = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0.3, -0.2, 1.0]])
    expected = project_points_krt(points, k, r_camera_world, t)
    np.testing.assert_allclose(project_points(points, k, position_m, quat_wxyz), expected)
    # Worked by hand: world x maps to camera -y, so (1, 0, 0) at depth 2 is 250 px up.
    np.testing.assert_allclose(expected[:2], [[320, 240], [320, 240 - 250]])
    back_center, back_quat = world_camera_to_cambridge(position_m, quat_wxyz)
    np.testing.assert_allclose(back_center, center)
    assert rotation_error_deg(back_quat, quat_world_to_camera) < 1e-9


def test_pose_matrix_round_trip() -> None:
    quat = random_quats(1, seed=5)[0]
    position = np.array([1.0, -2.0, 3.5])
    t = pose_to_matrix(position, quat)
    np.testing.assert_allclose(t[3], [0, 0, 0, 1])
    got_position, got_quat = matrix_to_pose(t)
    np.testing.assert_allclose(got_position, position)
    np.testing.assert_allclose(got_quat, quat, atol=1e-12)
    with pytest.raises(PoseNetTrainError, match="4x4"):
        matrix_to_pose(np.eye(3))


def test_average_quaternions() -> None:
    q = axis_angle_quat([0, 0, 1], 20)
    # Sign flips of the inputs do not change the mean (a plain mean would cancel out).
    same = np.stack([q, -q, q, -q])
    np.testing.assert_allclose(average_quaternions(same), q, atol=1e-12)
    pair = np.stack([axis_angle_quat([0, 0, 1], 10), -axis_angle_quat([0, 0, 1], 30)])
    np.testing.assert_allclose(average_quaternions(pair), q, atol=1e-12)
    batch = np.stack([same, same[::-1]])
    np.testing.assert_allclose(average_quaternions(batch), np.stack([q, q]), atol=1e-12)
    with pytest.raises(PoseNetTrainError, match="at least one"):
        average_quaternions(np.zeros((0, 4)))
