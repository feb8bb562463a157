"""Similarity transforms between camera trajectories: Umeyama, a robust fit, pose interpolation.

Everything here is numpy on plain arrays so it can be tested without SfM:

- :func:`umeyama` — the closed-form least-squares similarity (or rigid) transform between two
  point sets (Umeyama 1991), with the reflection case handled;
- :func:`fit_similarity_robust` — the same inside a least-median-of-squares search (random
  minimal samples), then iteratively refitted on the inliers: parameter-free by default, the
  inlier threshold follows from the robust noise estimate;
- :func:`interpolate_poses` — positions linearly and orientations by slerp at query times, never
  extrapolated and never across a gap in the reference;
- :class:`Similarity` — ``x' = scale * R x + t``, applied to points and to ``T_world_camera``
  poses (the camera-to-world rotation becomes ``R @ R_world_camera``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from posenet_core.geometry import matrix_to_quat, quat_normalize, quat_to_matrix
from posenet_train.sfm.errors import SfmError

__all__ = [
    "RobustFit",
    "Similarity",
    "check_spread",
    "fit_similarity_robust",
    "interpolate_poses",
    "slerp",
    "umeyama",
]


@dataclass(frozen=True)
class Similarity:
    """``x_target = scale * rotation @ x_source + translation_m``.

    Attributes:
        scale: positive scale factor (1 for a rigid transform).
        rotation: (3, 3) proper rotation, source axes to target axes.
        translation_m: (3,) target-frame translation.
    """

    scale: float
    rotation: np.ndarray
    translation_m: np.ndarray

    @classmethod
    def identity(cls) -> Similarity:
        """The transform that changes nothing."""
        return cls(1.0, np.eye(3), np.zeros(3))

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        """Transform points ``(N, 3)`` (or one ``(3,)``)."""
        p = np.asarray(points, dtype=np.float64)
        return self.scale * p @ self.rotation.T + self.translation_m

    def apply_poses(
        self, positions_m: np.ndarray, quats_wxyz: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Transform ``T_world_camera`` poses: centres as points, orientations rotated."""
        rotations = quat_to_matrix(np.asarray(quats_wxyz, dtype=np.float64).reshape(-1, 4))
        new_quats = matrix_to_quat(self.rotation @ rotations)
        return self.apply_points(np.asarray(positions_m).reshape(-1, 3)), new_quats

    def matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix ``[[s R, t], [0, 1]]``."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation_m
        return m

    def to_json(self) -> dict:
        """JSON-ready form (scale, rotation matrix, quaternion wxyz, translation)."""
        return {
            "scale": float(self.scale),
            "rotation": np.round(self.rotation, 12).tolist(),
            "rotation_quat_wxyz": matrix_to_quat(self.rotation).tolist(),
            "translation_m": [float(v) for v in self.translation_m],
        }


def _as_points(points: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise SfmError(f"{name} must be an (N, 3) array of points, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise SfmError(f"{name} holds non-finite values")
    return p


def umeyama(
    source: np.ndarray,
    target: np.ndarray,
    *,
    with_scale: bool = True,
    weights: np.ndarray | None = None,
) -> Similarity:
    """Least-squares transform with ``target ≈ s R source + t`` (Umeyama 1991).

    Args:
        source, target: (N, 3) corresponding points, N >= 3 and not all on one line.
        with_scale: fit the scale too (a similarity); False fits a rigid transform (s = 1).
        weights: optional (N,) non-negative weights.

    Raises SfmError for mismatched shapes, fewer than 3 points or a degenerate configuration
    (all source points (nearly) on a line, or in one point).
    """
    x = _as_points(source, "source")
    y = _as_points(target, "target")
    if x.shape != y.shape:
        raise SfmError(f"source and target must have the same shape, got {x.shape} and {y.shape}")
    if len(x) < 3:
        raise SfmError(f"need at least 3 point pairs for a 3D transform, got {len(x)}")
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(x),) or np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise SfmError("weights must be N finite non-negative numbers with a positive sum")
    w = w / w.sum()
    mean_x = w @ x
    mean_y = w @ y
    xc = x - mean_x
    yc = y - mean_y
    var_x = float(w @ np.sum(xc * xc, axis=1))
    covariance = (yc * w[:, None]).T @ xc
    u, d, vt = np.linalg.svd(covariance)
    # A rank below 2 leaves a rotation about the points' line (or everything) free.
    if var_x <= 0.0 or d[1] <= 1e-9 * max(d[0], 1e-300):
        raise SfmError(
            "the points are (nearly) on one line or in one point: the rotation about that line"
            " is undetermined"
        )
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0.0:
        sign[2] = -1.0  # the best orthogonal matrix is a reflection: flip the weakest axis
    rotation = u @ np.diag(sign) @ vt
    scale = float(np.sum(d * sign) / var_x) if with_scale else 1.0
    if not (math.isfinite(scale) and scale > 0.0):
        raise SfmError(f"the fitted scale is not a positive number ({scale}); degenerate points")
    translation = mean_y - scale * rotation @ mean_x
    return Similarity(scale, rotation, translation)


def check_spread(points: np.ndarray, what: str, *, min_ratio: float = 1e-2) -> None:
    """Raise SfmError when ``points`` lie (nearly) on a line: a similarity fitted to such points
    leaves the rotation about the line free.

    The check compares the two largest singular values of the centred points; ``what`` names the
    points in the message (e.g. "the odometry camera positions").
    """
    p = _as_points(points, what)
    if len(p) < 3:
        raise SfmError(f"{what}: need at least 3 positions, got {len(p)}")
    s = np.linalg.svd(p - p.mean(axis=0), compute_uv=False)
    if s[0] <= 0.0 or s[1] < min_ratio * s[0]:
        ratio = 0.0 if s[0] <= 0.0 else s[1] / s[0]
        raise SfmError(
            f"{what} lie (nearly) on a straight line (spread ratio {ratio:.2g} < {min_ratio:g}):"
            " the rotation about that line cannot be determined; record a path that turns or"
            " moves sideways"
        )


@dataclass(frozen=True)
class RobustFit:
    """Result of :func:`fit_similarity_robust`.

    Attributes:
        transform: fitted on the final inliers.
        inliers: (N,) bool.
        residuals_m: (N,) distance of every transformed source point to its target.
        threshold_m: inlier threshold used (given, or derived from the robust noise scale).
        sigma_m: robust estimate of the inlier noise (from the median residual of the best
            minimal-sample model).
    """

    transform: Similarity
    inliers: np.ndarray
    residuals_m: np.ndarray
    threshold_m: float
    sigma_m: float

    @property
    def rms_inliers_m(self) -> float:
        """RMS residual over the inliers."""
        return float(np.sqrt(np.mean(self.residuals_m[self.inliers] ** 2)))

    @property
    def rms_all_m(self) -> float:
        """RMS residual over all pairs."""
        return float(np.sqrt(np.mean(self.residuals_m**2)))

    @property
    def outlier_share(self) -> float:
        """Fraction of pairs that are not inliers."""
        return float(1.0 - np.mean(self.inliers))

    def summary(self) -> dict:
        """JSON-ready numbers for a report."""
        return {
            "pairs": int(len(self.inliers)),
            "inliers": int(self.inliers.sum()),
            "outlier_share": self.outlier_share,
            "residual_rms_inliers_m": self.rms_inliers_m,
            "residual_rms_all_m": self.rms_all_m,
            "residual_median_m": float(np.median(self.residuals_m)),
            "residual_max_m": float(np.max(self.residuals_m)),
            "inlier_threshold_m": self.threshold_m,
            "noise_sigma_m": self.sigma_m,
        }


def fit_similarity_robust(
    source: np.ndarray,
    target: np.ndarray,
    *,
    with_scale: bool = True,
    inlier_threshold_m: float | None = None,
    min_threshold_m: float = 0.01,
    samples: int = 500,
    seed: int = 0,
) -> RobustFit:
    """Fit ``target ≈ s R source + t`` robustly (least median of squares, then inlier refits).

    1. Draw up to ``samples`` random minimal sets of 3 pairs; fit each with :func:`umeyama`;
       keep the model with the smallest median squared residual (tolerates < 50 % outliers).
    2. Noise scale ``sigma = 1.4826 (1 + 5 / (N - 3)) sqrt(median r^2)`` (Rousseeuw & Leroy);
       threshold = ``inlier_threshold_m`` if given, else ``max(3 sigma, min_threshold_m)``.
    3. Refit with Umeyama on the inliers and recompute the inliers until they stop changing.

    Raises SfmError for fewer than 4 pairs, degenerate points or fewer than 3 final inliers.
    """
    x = _as_points(source, "source")
    y = _as_points(target, "target")
    if x.shape != y.shape:
        raise SfmError(f"source and target must have the same shape, got {x.shape} and {y.shape}")
    n = len(x)
    if n < 4:
        raise SfmError(f"a robust fit needs at least 4 point pairs, got {n}")
    if inlier_threshold_m is not None and not (
        math.isfinite(inlier_threshold_m) and inlier_threshold_m > 0
    ):
        raise SfmError(f"inlier_threshold_m must be a positive number, got {inlier_threshold_m}")
    rng = np.random.default_rng(seed)
    best: tuple[float, Similarity] | None = None
    # All triples when there are few pairs; random ones otherwise.
    if math.comb(n, 3) <= samples:
        triples = [(i, j, k) for i in range(n) for j in range(i + 1, n) for k in range(j + 1, n)]
    else:
        triples = [tuple(rng.choice(n, 3, replace=False)) for _ in range(samples)]
    for triple in triples:
        idx = list(triple)
        try:
            model = umeyama(x[idx], y[idx], with_scale=with_scale)
        except SfmError:
            continue  # a collinear sample
        r2 = np.sum((model.apply_points(x) - y) ** 2, axis=1)
        score = float(np.median(r2))
        if best is None or score < best[0]:
            best = (score, model)
    if best is None:
        raise SfmError("every sample of 3 point pairs is degenerate (points on a line)")
    median_r2, model = best
    sigma = 1.4826 * (1.0 + 5.0 / max(n - 3, 1)) * math.sqrt(median_r2)
    threshold = (
        float(inlier_threshold_m)
        if inlier_threshold_m is not None
        else max(3.0 * sigma, min_threshold_m)
    )
    inliers = np.linalg.norm(model.apply_points(x) - y, axis=1) <= threshold
    for _ in range(20):
        if inliers.sum() < 3:
            raise SfmError(
                f"only {int(inliers.sum())} of {n} point pairs agree within {threshold:.3g} m;"
                " the trajectories do not match (wrong topic, frame or time offset?)"
            )
        model = umeyama(x[inliers], y[inliers], with_scale=with_scale)
        new_inliers = np.linalg.norm(model.apply_points(x) - y, axis=1) <= threshold
        if np.array_equal(new_inliers, inliers):
            break
        inliers = new_inliers
    residuals = np.linalg.norm(model.apply_points(x) - y, axis=1)
    return RobustFit(model, inliers, residuals, threshold, sigma)


def slerp(q0_wxyz: np.ndarray, q1_wxyz: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions, row by row (shortest path)."""
    q0 = quat_normalize(np.asarray(q0_wxyz, dtype=np.float64).reshape(-1, 4))
    q1 = quat_normalize(np.asarray(q1_wxyz, dtype=np.float64).reshape(-1, 4))
    t = np.asarray(fraction, dtype=np.float64).reshape(-1, 1)
    dot = np.sum(q0 * q1, axis=1, keepdims=True)
    q1 = np.where(dot < 0.0, -q1, q1)  # q and -q: take the short way round
    dot = np.abs(dot)
    angle = np.arccos(np.clip(dot, -1.0, 1.0))
    sin_angle = np.sin(angle)
    small = sin_angle < 1e-9
    with np.errstate(invalid="ignore", divide="ignore"):
        w0 = np.where(small, 1.0 - t, np.sin((1.0 - t) * angle) / sin_angle)
        w1 = np.where(small, t, np.sin(t * angle) / sin_angle)
    return quat_normalize(w0 * q0 + w1 * q1)


def interpolate_poses(
    stamps_s: np.ndarray,
    positions_m: np.ndarray,
    quats_wxyz: np.ndarray,
    query_s: np.ndarray,
    *,
    max_gap_s: float,
    tolerance_s: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poses of a time series at ``query_s``: linear in position, slerp in orientation.

    Args:
        stamps_s: (M,) strictly increasing reference times.
        positions_m, quats_wxyz: (M, 3), (M, 4) reference poses.
        query_s: (N,) times to interpolate at.
        max_gap_s: a query between two reference samples further apart than this is invalid
            (the reference has a gap there).
        tolerance_s: a query this close outside the reference span snaps to the end sample.

    Returns ``(positions (N, 3), quats_wxyz (N, 4), valid (N,) bool)``; invalid rows (outside the
    reference span or in a gap) are NaN.
    """
    t = np.asarray(stamps_s, dtype=np.float64).reshape(-1)
    p = np.asarray(positions_m, dtype=np.float64).reshape(-1, 3)
    q = np.asarray(quats_wxyz, dtype=np.float64).reshape(-1, 4)
    query = np.asarray(query_s, dtype=np.float64).reshape(-1)
    if len(t) != len(p) or len(t) != len(q):
        raise SfmError(
            f"stamps, positions and quaternions differ in length: {len(t)}, {len(p)}, {len(q)}"
        )
    if len(t) == 0:
        raise SfmError("the reference trajectory is empty")
    if np.any(np.diff(t) <= 0.0):
        raise SfmError("reference stamps must be strictly increasing")
    out_p = np.full((len(query), 3), np.nan)
    out_q = np.full((len(query), 4), np.nan)
    valid = np.zeros(len(query), dtype=bool)
    if len(t) == 1:
        near = np.abs(query - t[0]) <= tolerance_s
        out_p[near], out_q[near], valid[near] = p[0], q[0], True
        return out_p, out_q, valid
    clipped = np.where(
        (query < t[0]) & (query >= t[0] - tolerance_s),
        t[0],
        np.where((query > t[-1]) & (query <= t[-1] + tolerance_s), t[-1], query),
    )
    inside = (clipped >= t[0]) & (clipped <= t[-1])
    upper = np.clip(np.searchsorted(t, clipped, side="right"), 1, len(t) - 1)
    lower = upper - 1
    gap = t[upper] - t[lower]
    # A query exactly at a sample needs no interpolation, even next to a gap.
    on_sample = (clipped == t[lower]) | (clipped == t[upper])
    valid = inside & ((gap <= max_gap_s) | on_sample)
    if not valid.any():
        return out_p, out_q, valid
    lo, hi = lower[valid], upper[valid]
    frac = (clipped[valid] - t[lo]) / (t[hi] - t[lo])
    out_p[valid] = p[lo] + frac[:, None] * (p[hi] - p[lo])
    out_q[valid] = slerp(q[lo], q[hi], frac)
    return out_p, out_q, valid
