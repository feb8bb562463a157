"""posenet_core.metrics: the error metrics of the node's online and the trainer's offline
evaluation (tests moved from test/test_pose_matching.py and training/tests/test_evaluate.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import transforms3d.quaternions as t3q

from posenet_core.errors import PoseNetError as PoseNetTrainError
from posenet_core.metrics import pose_errors, rotation_error_deg, translation_error_m


def about(axis, degrees) -> np.ndarray:
    return t3q.axangle2quat(axis, math.radians(degrees))


def quat_z(angle_deg: float) -> list[float]:
    half = math.radians(angle_deg) / 2.0
    return [math.cos(half), 0.0, 0.0, math.sin(half)]


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "q_est, q_gt, expected_deg",
    [
        ((1, 0, 0, 0), (1, 0, 0, 0), 0.0),
        ((1, 0, 0, 0), (-1, 0, 0, 0), 0.0),
        (about([0, 0, 1], 30), -about([0, 0, 1], 30), 0.0),
        (about([0, 0, 1], 90), (1, 0, 0, 0), 90.0),
        (about([1, 1, 0], 179), (1, 0, 0, 0), 179.0),
        (about([0, 1, 0], 180), (1, 0, 0, 0), 180.0),
        (about([1, 0, 0], 200), (1, 0, 0, 0), 160.0),
        (about([0, 0, 1], 10), about([0, 0, 1], -15), 25.0),
        (-about([0, 0, 1], 10), about([0, 0, 1], -15), 25.0),
        (about([1, 2, 3], 1e-6), (1, 0, 0, 0), 1e-6),
        ((2, 0, 0, 0), about([0, 1, 0], 45), 45.0),
    ],
)
def test_rotation_error_is_sign_invariant_and_accurate(q_est, q_gt, expected_deg):
    got = float(rotation_error_deg(q_est, q_gt))
    assert math.isclose(got, expected_deg, rel_tol=1e-9, abs_tol=1e-12)


def test_rotation_error_relative_not_per_axis():
    # Same relative rotation, applied after very different orientations: the same error.
    base = [about([0, 0, 1], 0), about([1, 0, 0], 120), about([0.3, -1, 2], 77)]
    delta = about([0, 1, 0], 5)
    errors = [float(rotation_error_deg(t3q.qmult(q, delta), q)) for q in base]
    np.testing.assert_allclose(errors, 5.0, rtol=1e-9)


def test_errors_broadcast_over_rows():
    q_est = np.stack([about([0, 0, 1], a) for a in (0, 10, 20)])
    np.testing.assert_allclose(rotation_error_deg(q_est, [1, 0, 0, 0]), [0, 10, 20], atol=1e-9)
    est = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(translation_error_m(est, [1.0, 2.0, 7.0]), [4.0, math.sqrt(54)])


# ------------------------------------------------------------------- batches of predictions


@pytest.mark.parametrize(
    ("pred_p", "pred_q", "gt_p", "gt_q", "t_expected", "r_expected"),
    [
        ([0, 0, 0], [1, 0, 0, 0], [0, 0, 0], [1, 0, 0, 0], 0.0, 0.0),
        ([3, 4, 0], [1, 0, 0, 0], [0, 0, 0], [-1, 0, 0, 0], 5.0, 0.0),  # q vs -q: 0 deg
        ([1, 1, 1], quat_z(10), [1, 1, 2], quat_z(-80), 1.0, 90.0),
        ([0, 0, 0], [0, 1, 0, 0], [0, 0, 0], [1, 0, 0, 0], 0.0, 180.0),
        ([0, 0, 0], [2, 0, 0, 0], [0, 0, 0], [1, 0, 0, 0], 0.0, 0.0),  # unnormalised input
    ],
)
def test_pose_errors_known_values(pred_p, pred_q, gt_p, gt_q, t_expected, r_expected) -> None:
    t_err, r_err = pose_errors(
        np.array([pred_p], float),
        np.array([pred_q], float),
        np.array([gt_p], float),
        np.array([gt_q], float),
    )
    assert t_err.shape == (1,) and r_err.shape == (1,)
    assert t_err[0] == pytest.approx(t_expected, abs=1e-12)
    assert r_err[0] == pytest.approx(r_expected, abs=1e-9)


def test_pose_errors_count_mismatch() -> None:
    with pytest.raises(PoseNetTrainError, match="counts differ"):
        pose_errors(np.zeros((2, 3)), np.ones((2, 4)), np.zeros((3, 3)), np.ones((3, 4)))
