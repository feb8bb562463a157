"""PnP and its covariance: Jacobian vs finite differences, covariance vs Monte Carlo."""

from __future__ import annotations

import numpy as np
import pytest

from posenet_core.refine.errors import RefineError
from posenet_core.refine.pnp import (
    T_world_camera_from_rvec_tvec,
    pnp_covariance,
    pose_jacobian,
    project,
    refine_pose,
    rvec_tvec_from_T_world_camera,
    solve_pnp_ransac,
)

K = np.array([[600.0, 0.0, 320.0], [0.0, 580.0, 240.0], [0.0, 0.0, 1.0]])


def _exp(rotvec: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.Rodrigues(np.asarray(rotvec, float).reshape(3, 1))[0]


def _log(R: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.Rodrigues(np.ascontiguousarray(R))[0].reshape(3)


def _perturb(T: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The project's convention: position + dp (world), rotation Exp(dtheta) R (world, left)."""
    P = T.copy()
    P[:3, 3] += delta[:3]
    P[:3, :3] = _exp(delta[3:]) @ T[:3, :3]
    return P


def _scene(n: int, seed: int, depth: float = 5.0):
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = _exp(rng.normal(0, 0.5, 3))
    T[:3, 3] = rng.normal(0, 2.0, 3)
    # points in front of the camera, inside the image
    uv = rng.uniform([20, 20], [620, 460], size=(n, 2))
    z = rng.uniform(0.6 * depth, 1.4 * depth, n)
    rays = np.linalg.solve(K, np.column_stack([uv, np.ones(n)]).T).T
    X_c = rays * z[:, None]
    X_w = X_c @ T[:3, :3].T + T[:3, 3]
    return T, X_w


POSE_CASES = [(0, 40, 5.0), (1, 200, 2.0), (2, 15, 20.0)]


@pytest.mark.parametrize(("seed", "n", "depth"), POSE_CASES)
def test_jacobian_matches_finite_differences(seed, n, depth):
    T, X = _scene(n, seed, depth)
    J = pose_jacobian(X, T, K)
    numeric = np.zeros_like(J)
    h = 1e-6
    for k in range(6):
        d = np.zeros(6)
        d[k] = h
        numeric[:, k] = (project(X, _perturb(T, d), K) - project(X, _perturb(T, -d), K)).reshape(
            -1
        ) / (2 * h)
    np.testing.assert_allclose(J, numeric, rtol=1e-5, atol=1e-5 * np.abs(numeric).max())


def test_rvec_tvec_round_trip():
    T, _ = _scene(5, 3)
    rvec, tvec = rvec_tvec_from_T_world_camera(T)
    np.testing.assert_allclose(T_world_camera_from_rvec_tvec(rvec, tvec), T, atol=1e-12)


@pytest.mark.parametrize(
    ("seed", "n", "depth", "sigma_px"), [(4, 60, 5.0, 1.0), (5, 25, 3.0, 2.0)]
)
def test_covariance_matches_monte_carlo(seed, n, depth, sigma_px):
    """Noisy pixels -> LM pose, many times: the spread of the pose errors is sigma^2 (J^T J)^-1."""
    T, X = _scene(n, seed, depth)
    clean = project(X, T, K)
    rng = np.random.default_rng(100 + seed)
    errors, predicted = [], []
    for _ in range(1500):
        uv = clean + rng.normal(0, sigma_px, clean.shape)
        T_est = refine_pose(X, uv, K, T)
        errors.append(np.concatenate([T_est[:3, 3] - T[:3, 3], _log(T_est[:3, :3] @ T[:3, :3].T)]))
        predicted.append(pnp_covariance(X, uv, T_est, K)[0])
    errors = np.array(errors)
    sample = np.cov(errors.T)
    mean_predicted = np.mean(predicted, axis=0)
    # diagonal within 15 % (1500 samples: the sample variance itself scatters ~4 %)
    np.testing.assert_allclose(np.diag(mean_predicted), np.diag(sample), rtol=0.15)
    # and the correlations (translation-rotation coupling) match too
    corr = lambda c: c / np.sqrt(np.outer(np.diag(c), np.diag(c)))  # noqa: E731
    np.testing.assert_allclose(corr(mean_predicted), corr(sample), atol=0.08)
    # the estimated sigma recovers the pixel noise
    sigmas = [
        pnp_covariance(X, clean + rng.normal(0, sigma_px, clean.shape), T, K)[1] for _ in range(20)
    ]
    assert abs(np.mean(sigmas) / sigma_px - 1) < 0.1


def test_covariance_floor_and_degenerate_cases():
    T, X = _scene(30, 6)
    uv = project(X, T, K)  # exact: zero residuals
    cov, sigma = pnp_covariance(X, uv, T, K)
    assert sigma < 1e-6
    cov, sigma = pnp_covariance(X, uv, T, K, min_sigma_px=0.5)
    assert sigma == 0.5 and np.all(np.diag(cov) > 0)
    with pytest.raises(RefineError, match="at least 4"):
        pnp_covariance(X[:3], uv[:3], T, K)
    same = np.repeat(X[:1], 6, axis=0)  # one point six times: no pose
    cov, _ = pnp_covariance(same, np.repeat(uv[:1], 6, axis=0), T, K, min_sigma_px=1.0)
    assert np.all(np.isinf(cov))


@pytest.mark.parametrize("outlier_share", [0.0, 0.3, 0.6])
def test_ransac_finds_the_pose_among_outliers(outlier_share):
    T, X = _scene(150, 7)
    rng = np.random.default_rng(8)
    uv = project(X, T, K) + rng.normal(0, 0.5, (150, 2))
    bad = rng.random(150) < outlier_share
    uv[bad] = rng.uniform([0, 0], [640, 480], size=(int(bad.sum()), 2))
    T_est, inliers = solve_pnp_ransac(X, uv, K, threshold_px=3.0, iterations=2000)
    assert np.linalg.norm(T_est[:3, 3] - T[:3, 3]) < 0.05
    assert np.degrees(np.linalg.norm(_log(T_est[:3, :3] @ T[:3, :3].T))) < 0.2
    assert inliers[~bad].mean() > 0.95
    assert not bad.any() or inliers[bad].mean() < 0.05


def test_ransac_gives_none_without_a_pose():
    T, X = _scene(30, 9)
    rng = np.random.default_rng(10)
    assert solve_pnp_ransac(X[:3], project(X[:3], T, K), K, threshold_px=2.0) is None
    noise = rng.uniform([0, 0], [640, 480], size=(30, 2))
    result = solve_pnp_ransac(X, noise, K, threshold_px=0.5, iterations=200)
    assert result is None or result[1].sum() < 10
