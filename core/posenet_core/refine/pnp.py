"""2D-3D pose estimation and its covariance, in the project's pose and covariance conventions.

Poses are ``T_world_camera`` (camera centre in the scene frame, camera-to-scene rotation; optical
camera axes). The covariance is the 6x6 over (x, y, z, rotation about the scene's fixed x, y, z):
positions perturbed additively in the scene frame (m^2), rotations as a small rotation vector
``d`` applied on the left, ``R_true = Exp(d) @ R_estimate`` (rad^2): the convention of
geometry_msgs/PoseWithCovariance as robot_localization reads it (README, "Which uncertainty").

The covariance of a least-squares pose is ``sigma^2 (J^T J)^-1``: ``J`` the Jacobian of the
inliers' reprojections with respect to that 6-vector, ``sigma^2`` the variance of one pixel
coordinate's residual, estimated from the inliers' residuals (sum of squares over 2N - 6).
"""

from __future__ import annotations

import numpy as np

from posenet_core.refine.errors import RefineError

__all__ = [
    "T_world_camera_from_rvec_tvec",
    "pnp_covariance",
    "pose_jacobian",
    "project",
    "refine_pose",
    "reprojection_residuals",
    "rvec_tvec_from_T_world_camera",
    "solve_pnp_ransac",
]


def _cv2():
    import cv2  # lazy: importing posenet_core must not need OpenCV

    return cv2


def _skew_rows(v: np.ndarray) -> np.ndarray:
    """(N, 3, 3) cross-product matrices of the rows of ``v``."""
    out = np.zeros((len(v), 3, 3))
    out[:, 0, 1], out[:, 0, 2] = -v[:, 2], v[:, 1]
    out[:, 1, 0], out[:, 1, 2] = v[:, 2], -v[:, 0]
    out[:, 2, 0], out[:, 2, 1] = -v[:, 1], v[:, 0]
    return out


def project(points_world: np.ndarray, T_world_camera: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 2) pixels of scene points seen by a pinhole camera (OpenCV pixel convention).

    Points at or behind the camera give non-finite or meaningless pixels; use the depth to tell.
    """
    R = T_world_camera[:3, :3]
    X_c = (np.asarray(points_world, np.float64) - T_world_camera[:3, 3]) @ R
    with np.errstate(divide="ignore", invalid="ignore"):
        x = X_c[:, 0] / X_c[:, 2]
        y = X_c[:, 1] / X_c[:, 2]
    return np.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], axis=1)


def camera_depth(points_world: np.ndarray, T_world_camera: np.ndarray) -> np.ndarray:
    """(N,) z of scene points in the camera frame (positive in front of the camera)."""
    return (np.asarray(points_world, np.float64) - T_world_camera[:3, 3]) @ T_world_camera[:3, 2]


def reprojection_residuals(
    points_world: np.ndarray, xy: np.ndarray, T_world_camera: np.ndarray, K: np.ndarray
) -> np.ndarray:
    """(N, 2) ``projected - observed`` pixels."""
    return project(points_world, T_world_camera, K) - np.asarray(xy, np.float64)


def pose_jacobian(
    points_world: np.ndarray, T_world_camera: np.ndarray, K: np.ndarray
) -> np.ndarray:
    """(2N, 6) Jacobian of the projections w.r.t. the pose perturbation (dp, dtheta).

    ``dp``: camera centre moved in the scene frame; ``dtheta``: rotation vector about the scene's
    fixed axes applied on the left (``R' = Exp(dtheta) R``). Rows are (u0, v0, u1, v1, ...).
    With ``v = X - p`` the camera-frame point is ``X_c = R^T Exp(-dtheta) (v - dp)``, so
    ``dX_c/ddp = -R^T`` and ``dX_c/ddtheta = R^T [v]_x``.
    """
    R = T_world_camera[:3, :3]
    v = np.asarray(points_world, np.float64) - T_world_camera[:3, 3]
    X_c = v @ R
    z = X_c[:, 2]
    fx, fy, skew = K[0, 0], K[1, 1], K[0, 1]
    # d(u, v)/dX_c for u = fx x/z + s y/z + cx, v = fy y/z + cy
    d_proj = np.zeros((len(v), 2, 3))
    d_proj[:, 0, 0] = fx / z
    d_proj[:, 0, 1] = skew / z
    d_proj[:, 0, 2] = -(fx * X_c[:, 0] + skew * X_c[:, 1]) / z**2
    d_proj[:, 1, 1] = fy / z
    d_proj[:, 1, 2] = -fy * X_c[:, 1] / z**2
    d_xc = np.zeros((len(v), 3, 6))
    d_xc[:, :, :3] = -R.T
    d_xc[:, :, 3:] = np.einsum("ij,njk->nik", R.T, _skew_rows(v))
    return np.einsum("nij,njk->nik", d_proj, d_xc).reshape(-1, 6)


def pnp_covariance(
    points_world: np.ndarray,
    xy: np.ndarray,
    T_world_camera: np.ndarray,
    K: np.ndarray,
    *,
    min_sigma_px: float = 0.0,
) -> tuple[np.ndarray, float]:
    """``(covariance 6x6, sigma_px)`` of a PnP pose from its inliers.

    ``sigma_px`` is the residual standard deviation per pixel coordinate
    (``sqrt(sum r^2 / (2N - 6))``, at least ``min_sigma_px``); the covariance is
    ``sigma^2 (J^T J)^-1`` in this module's convention. Needs N >= 4 points; a singular
    ``J^T J`` (degenerate geometry) gives an infinite covariance.
    """
    n = len(points_world)
    if n < 4:
        raise RefineError(f"the covariance needs at least 4 inliers, got {n}")
    r = reprojection_residuals(points_world, xy, T_world_camera, K).reshape(-1)
    sigma = max(float(np.sqrt(np.sum(r**2) / (2 * n - 6))), float(min_sigma_px))
    J = pose_jacobian(points_world, T_world_camera, K)
    JtJ = J.T @ J
    # Conditioning guard: a rank-deficient JtJ (all points on a line, one point repeated...) has
    # no finite covariance; say so with inf instead of returning round-off.
    if not np.all(np.isfinite(JtJ)) or np.linalg.cond(JtJ) > 1e15:
        return np.full((6, 6), np.inf), sigma
    return sigma**2 * np.linalg.inv(JtJ), sigma


def rvec_tvec_from_T_world_camera(T_world_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's (rvec, tvec) of world -> camera for a ``T_world_camera``."""
    cv2 = _cv2()
    R_cw = T_world_camera[:3, :3].T
    rvec, _ = cv2.Rodrigues(np.ascontiguousarray(R_cw))
    return rvec.reshape(3), -R_cw @ T_world_camera[:3, 3]


def T_world_camera_from_rvec_tvec(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:  # noqa: N802
    """``T_world_camera`` of OpenCV's (rvec, tvec) (world -> camera: ``X_c = R X_w + t``)."""
    cv2 = _cv2()
    R_cw, _ = cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3, 1))
    T = np.eye(4)
    T[:3, :3] = R_cw.T
    T[:3, 3] = -R_cw.T @ np.asarray(tvec, np.float64).reshape(3)
    return T


def refine_pose(
    points_world: np.ndarray, xy: np.ndarray, K: np.ndarray, T_world_camera: np.ndarray
) -> np.ndarray:
    """Levenberg-Marquardt refinement (OpenCV ``solvePnPRefineLM``) of a pose on inliers."""
    cv2 = _cv2()
    rvec, tvec = rvec_tvec_from_T_world_camera(T_world_camera)
    rvec, tvec = cv2.solvePnPRefineLM(
        np.ascontiguousarray(points_world, np.float64).reshape(-1, 1, 3),
        np.ascontiguousarray(xy, np.float64).reshape(-1, 1, 2),
        np.asarray(K, np.float64),
        None,
        rvec.reshape(3, 1).copy(),
        tvec.reshape(3, 1).copy(),
        (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 50, 1e-12),
    )
    return T_world_camera_from_rvec_tvec(rvec, tvec)


def solve_pnp_ransac(
    points_world: np.ndarray,
    xy: np.ndarray,
    K: np.ndarray,
    *,
    threshold_px: float,
    iterations: int = 1000,
    confidence: float = 0.9999,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray] | None:
    """PnP-RANSAC then LM on the inliers, re-scored and refined once more.

    Returns ``(T_world_camera, inlier_mask)`` or None when RANSAC finds no pose. Minimal solver:
    AP3P (4 points); the pose is refined on all inliers with LM, the inliers re-selected at the
    refined pose with the same threshold (and in front of the camera), and refined again.
    """
    cv2 = _cv2()
    obj = np.ascontiguousarray(points_world, np.float64).reshape(-1, 1, 3)
    img = np.ascontiguousarray(xy, np.float64).reshape(-1, 1, 2)
    if len(obj) < 4:
        return None
    cv2.setRNGSeed(int(seed))
    try:
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            obj,
            img,
            np.asarray(K, np.float64),
            None,
            iterationsCount=int(iterations),
            reprojectionError=float(threshold_px),
            confidence=float(confidence),
            flags=cv2.SOLVEPNP_AP3P,
        )
    except cv2.error:
        return None
    if not ok or inliers is None or len(inliers) < 4:
        return None
    T = T_world_camera_from_rvec_tvec(rvec, tvec)
    pts = np.asarray(points_world, np.float64)
    uv = np.asarray(xy, np.float64)
    mask = np.zeros(len(pts), bool)
    mask[inliers.reshape(-1)] = True
    for _ in range(2):
        if mask.sum() < 4:
            return None
        try:
            T = refine_pose(pts[mask], uv[mask], K, T)
        except cv2.error:
            return None
        err = np.linalg.norm(reprojection_residuals(pts, uv, T, K), axis=1)
        mask = (err < threshold_px) & (camera_depth(pts, T) > 0)
    if mask.sum() < 4 or not np.all(np.isfinite(T)):
        return None
    return T, mask
