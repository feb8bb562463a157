"""Pose geometry in numpy: quaternions (wxyz), rotation matrices, dataset conventions, projection.

The one internal convention is ``T_world_camera``: ``position_m`` is the camera centre in the world
frame (metres) and ``quat_wxyz`` the camera-to-world rotation (unit, canonical sign ``w >= 0``);
camera axes are optical (x right, y down, z forward). A world point ``X`` is seen in the camera at
``R_world_camera.T @ (X - position_m)``.

Every function accepts a single quaternion ``(4,)`` or a batch ``(..., 4)`` where that makes sense
and returns float64 arrays.
"""

from __future__ import annotations

import numpy as np

from posenet_train.errors import PoseNetTrainError

__all__ = [
    "average_quaternions",
    "cambridge_to_world_camera",
    "matrix_to_pose",
    "matrix_to_quat",
    "orthonormalize_rotation",
    "pose_to_matrix",
    "project_points",
    "project_points_krt",
    "quat_canonical",
    "quat_conjugate",
    "quat_multiply",
    "quat_normalize",
    "quat_to_matrix",
    "rotation_error_deg",
    "world_camera_to_cambridge",
]


def _as_quat(q: np.ndarray, name: str = "quat_wxyz") -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1:] != (4,):
        raise PoseNetTrainError(f"{name} must have shape (..., 4) in wxyz order, got {q.shape}")
    return q


def quat_normalize(quat_wxyz: np.ndarray) -> np.ndarray:
    """Return the quaternion(s) scaled to unit norm; zero or non-finite ones are an error."""
    q = _as_quat(quat_wxyz)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if not np.all(np.isfinite(norm)) or np.any(norm < 1e-12):
        raise PoseNetTrainError(
            f"cannot normalise quaternion(s) with norm {norm.ravel()[:5]} (must be finite, > 0)"
        )
    return q / norm


def quat_canonical(quat_wxyz: np.ndarray) -> np.ndarray:
    """Return the quaternion(s) with the sign chosen so that ``w >= 0`` (q, -q: one rotation).

    Where ``w == 0`` the first non-zero of x, y, z is made positive so the choice is unique.
    """
    q = _as_quat(quat_wxyz).copy()
    flat = q.reshape(-1, 4)
    for row in flat:
        for value in row:
            if value != 0.0:
                if value < 0.0:
                    row *= -1.0
                break
    return flat.reshape(q.shape)


def quat_conjugate(quat_wxyz: np.ndarray) -> np.ndarray:
    """Return the conjugate (the inverse rotation for unit quaternions)."""
    q = _as_quat(quat_wxyz)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_multiply(q1_wxyz: np.ndarray, q2_wxyz: np.ndarray) -> np.ndarray:
    """Hamilton product ``q1 * q2`` (apply q2 first, then q1), broadcasting over leading axes."""
    a = _as_quat(q1_wxyz, "q1_wxyz")
    b = _as_quat(q2_wxyz, "q2_wxyz")
    w1, x1, y1, z1 = np.moveaxis(a, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        axis=-1,
    )


def quat_to_matrix(quat_wxyz: np.ndarray) -> np.ndarray:
    """Rotation matrix/matrices ``(..., 3, 3)`` of (normalised) quaternion(s) ``(..., 4)`` wxyz."""
    w, x, y, z = np.moveaxis(quat_normalize(quat_wxyz), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def matrix_to_quat(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion(s) wxyz, canonical sign ``w >= 0``, of rotation matrix/matrices (..., 3, 3).

    Uses the largest-diagonal branch (Shepperd) so it is accurate for every rotation angle.
    """
    r = np.asarray(rotation, dtype=np.float64)
    if r.shape[-2:] != (3, 3):
        raise PoseNetTrainError(f"rotation must have shape (..., 3, 3), got {r.shape}")
    flat = r.reshape(-1, 3, 3)
    out = np.empty((flat.shape[0], 4))
    for i, m in enumerate(flat):
        # Divide by the largest of 4w^2, 4x^2, 4y^2, 4z^2 so the square root is well away from 0.
        trace = m[0, 0] + m[1, 1] + m[2, 2]
        if trace > max(m[0, 0], m[1, 1], m[2, 2]):
            s = 2.0 * np.sqrt(1.0 + trace)
            q = [
                0.25 * s,
                (m[2, 1] - m[1, 2]) / s,
                (m[0, 2] - m[2, 0]) / s,
                (m[1, 0] - m[0, 1]) / s,
            ]
        elif m[0, 0] >= m[1, 1] and m[0, 0] >= m[2, 2]:
            s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
            q = [
                (m[2, 1] - m[1, 2]) / s,
                0.25 * s,
                (m[0, 1] + m[1, 0]) / s,
                (m[0, 2] + m[2, 0]) / s,
            ]
        elif m[1, 1] >= m[2, 2]:
            s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
            q = [
                (m[0, 2] - m[2, 0]) / s,
                (m[0, 1] + m[1, 0]) / s,
                0.25 * s,
                (m[1, 2] + m[2, 1]) / s,
            ]
        else:
            s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
            q = [
                (m[1, 0] - m[0, 1]) / s,
                (m[0, 2] + m[2, 0]) / s,
                (m[1, 2] + m[2, 1]) / s,
                0.25 * s,
            ]
        out[i] = q
    return quat_canonical(quat_normalize(out)).reshape(r.shape[:-2] + (4,))


def orthonormalize_rotation(rotation: np.ndarray, *, tolerance: float = 1e-3) -> np.ndarray:
    """Return the nearest proper rotation (SVD) to a 3x3 matrix that is already close to one.

    Raises PoseNetTrainError when ``max|R^T R - I| > tolerance`` or ``det(R) <= 0``: such a matrix
    is not a rotation with a little rounding noise but a wrong input.
    """
    r = np.asarray(rotation, dtype=np.float64)
    if r.shape != (3, 3) or not np.all(np.isfinite(r)):
        raise PoseNetTrainError(f"rotation must be a finite 3x3 matrix, got {r.tolist()}")
    deviation = float(np.max(np.abs(r.T @ r - np.eye(3))))
    det = float(np.linalg.det(r))
    if deviation > tolerance or det <= 0.0:
        raise PoseNetTrainError(
            f"not a rotation matrix: max|R^T R - I| = {deviation:.3g} (allowed <= {tolerance:g}),"
            f" det = {det:.6g} (must be +1)"
        )
    u, _, vt = np.linalg.svd(r)
    return u @ vt


def pose_to_matrix(position_m: np.ndarray, quat_wxyz: np.ndarray) -> np.ndarray:
    """4x4 homogeneous ``T_world_camera`` from a camera centre and a camera-to-world quaternion."""
    t = np.eye(4)
    t[:3, :3] = quat_to_matrix(quat_wxyz)
    t[:3, 3] = np.asarray(position_m, dtype=np.float64).reshape(3)
    return t


def matrix_to_pose(t_world_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(position_m (3,), quat_wxyz (4,))`` of a 4x4 or 3x4 camera-to-world matrix."""
    t = np.asarray(t_world_camera, dtype=np.float64)
    if t.shape not in ((4, 4), (3, 4)):
        raise PoseNetTrainError(f"T_world_camera must be 4x4 or 3x4, got shape {t.shape}")
    return t[:3, 3].copy(), matrix_to_quat(orthonormalize_rotation(t[:3, :3]))


def cambridge_to_world_camera(
    center: np.ndarray, quat_wxyz_world_to_camera: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Convert a Cambridge Landmarks pose to ``T_world_camera``.

    Cambridge (VisualSFM) stores the camera centre in the world frame and the quaternion of the
    world-to-camera rotation ``R`` (a world point projects as ``K R (X - C)``). The centre is kept;
    the orientation becomes its inverse, returned unit-normalised with ``w >= 0``.
    """
    position_m = np.asarray(center, dtype=np.float64).reshape(3).copy()
    quat = quat_canonical(quat_conjugate(quat_normalize(quat_wxyz_world_to_camera)))
    return position_m, quat.reshape(4)


def world_camera_to_cambridge(
    position_m: np.ndarray, quat_wxyz: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`cambridge_to_world_camera`: ``(center, quat_wxyz_world_to_camera)``."""
    center = np.asarray(position_m, dtype=np.float64).reshape(3).copy()
    quat = quat_canonical(quat_conjugate(quat_normalize(quat_wxyz)))
    return center, quat.reshape(4)


def project_points(
    points_world: np.ndarray,
    camera_matrix: np.ndarray,
    position_m: np.ndarray,
    quat_wxyz: np.ndarray,
) -> np.ndarray:
    """Pixel coordinates ``(N, 2)`` of world points ``(N, 3)`` seen by a ``T_world_camera`` pose.

    ``camera_matrix`` is the 3x3 pinhole K (no distortion); pixels are (x right, y down).
    """
    points = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
    r_world_camera = quat_to_matrix(quat_wxyz)
    points_camera = (points - np.asarray(position_m, dtype=np.float64).reshape(1, 3)) @ (
        r_world_camera
    )
    return _pinhole(points_camera, camera_matrix)


def project_points_krt(
    points_world: np.ndarray,
    camera_matrix: np.ndarray,
    rotation: np.ndarray,
    translation: np.ndarray,
) -> np.ndarray:
    """Pixel coordinates ``(N, 2)`` of world points under ``K [R | t]`` (R, t: world -> camera)."""
    points = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
    r = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    t = np.asarray(translation, dtype=np.float64).reshape(1, 3)
    return _pinhole(points @ r.T + t, camera_matrix)


def _pinhole(points_camera: np.ndarray, camera_matrix: np.ndarray) -> np.ndarray:
    k = np.asarray(camera_matrix, dtype=np.float64).reshape(3, 3)
    homogeneous = points_camera @ k.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def rotation_error_deg(q1_wxyz: np.ndarray, q2_wxyz: np.ndarray) -> np.ndarray:
    """Angle in degrees of the rotation between q1 and q2 (sign-invariant: q and -q give 0).

    Computed as ``2 atan2(|v|, |w|)`` of the relative quaternion, which stays accurate for tiny
    angles where ``2 acos(|<q1, q2>|)`` loses precision. Broadcasts over leading axes.
    """
    relative = quat_multiply(quat_conjugate(quat_normalize(q1_wxyz)), quat_normalize(q2_wxyz))
    vector_norm = np.linalg.norm(relative[..., 1:], axis=-1)
    return np.degrees(2.0 * np.arctan2(vector_norm, np.abs(relative[..., 0])))


def average_quaternions(quat_wxyz: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Average of rotations ``(..., K, 4) -> (..., 4)`` by the eigenvector method (Markley 2007).

    The mean is the eigenvector of ``sum_i w_i q_i q_i^T`` with the largest eigenvalue: it is
    invariant to the signs of the inputs (q and -q are the same rotation), unlike a plain mean.
    Returned unit-normalised with ``w >= 0``.
    """
    q = quat_normalize(quat_wxyz)
    if q.ndim < 2 or q.shape[-2] == 0:
        raise PoseNetTrainError(f"need at least one quaternion to average, got shape {q.shape}")
    w = np.ones(q.shape[:-1]) if weights is None else np.asarray(weights, dtype=np.float64)
    scatter = np.einsum("...k,...ki,...kj->...ij", w, q, q)
    _, vectors = np.linalg.eigh(scatter)
    return quat_canonical(vectors[..., :, -1])
