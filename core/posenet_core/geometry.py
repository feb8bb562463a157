"""Pose conventions: quaternions, rotation matrices, poses, dataset conventions, projection.

Internal convention everywhere: ``T_world_camera`` is a 4x4 homogeneous matrix whose rotation is
camera-to-world and whose translation is the camera centre in the world (scene) frame, metres;
camera axes are the optical frame (x right, y down, z forward; REP-103 ``_optical``). A point
maps as ``X_world = T_world_camera @ X_camera``; a world point ``X`` is seen in the camera at
``R_world_camera.T @ (X - position_m)``. ``T_a_b @ T_b_c = T_a_c``.

Quaternions are named by their order: ``quat_wxyz`` (the model's output, the datasets' order)
and ``quat_xyzw`` (ROS messages); unit, canonical sign ``w >= 0`` where a function says so.

Two families of functions share this convention:

- single poses, validated (the node's per-frame path): :func:`normalize_quat_wxyz`,
  :func:`validate_position`, :func:`quat_wxyz_to_matrix`, :func:`matrix_to_quat_wxyz`,
  :func:`pose_to_matrix`, :func:`matrix_to_pose`, :func:`invert_pose`, :func:`compose_poses`;
  each raises :class:`InvalidPoseError` naming the bad value;
- batches ``(..., 4)`` / ``(..., 3, 3)`` (datasets, evaluation, structure from motion):
  :func:`quat_normalize`, :func:`quat_canonical`, :func:`quat_conjugate`,
  :func:`quat_multiply`, :func:`quat_to_matrix`, :func:`matrix_to_quat`,
  :func:`quat_to_rotvec`, :func:`average_quaternions`.

The single-pose functions are built on the batch ones, so both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from posenet_core.errors import InvalidPoseError

__all__ = [
    "R_BODY_OPTICAL",
    "R_OPTICAL_BODY",
    "R_body_optical",
    "average_quaternions",
    "cambridge_to_T_world_camera",
    "cambridge_to_world_camera",
    "compose_poses",
    "invert_pose",
    "matrix_to_pose",
    "matrix_to_quat",
    "matrix_to_quat_wxyz",
    "matrix_to_rotvec",
    "normalize_quat_wxyz",
    "orthonormalize_rotation",
    "pose_to_matrix",
    "project_points",
    "project_points_krt",
    "quat_canonical",
    "quat_conjugate",
    "quat_multiply",
    "quat_normalize",
    "quat_to_matrix",
    "quat_to_rotvec",
    "quat_wxyz_to_matrix",
    "quat_wxyz_to_xyzw",
    "quat_xyzw_to_wxyz",
    "rotvec_to_matrix",
    "skew",
    "validate_position",
    "world_camera_to_cambridge",
]

_ZERO_QUATERNION_NORM = 1e-6
# KinectFusion / SfM rotations are orthonormal to ~1e-6; 1e-3 only rejects matrices that are not
# rotations (a wrong column, another format), not rounding.
ROTATION_TOLERANCE = 1e-3

R_BODY_OPTICAL = np.array(
    [
        [0.0, 0.0, 1.0],
        [-1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0],
    ]
)
R_BODY_OPTICAL.setflags(write=False)
"""Rotation from a camera's optical frame to its body frame (REP-103): ``v_body = R @ v_optical``.

Optical frame: z forward, x right, y down. Body (``camera_link``-style) frame: x forward, y left,
z up. The columns are the optical axes in body coordinates: optical x (right) = body -y, optical
y (down) = body -z, optical z (forward) = body x. As a quaternion xyzw it is
(-0.5, 0.5, -0.5, 0.5), the usual ``rpy = (-pi/2, 0, -pi/2)`` static transform from a camera
link to its ``_optical`` frame.
"""

R_OPTICAL_BODY = R_BODY_OPTICAL.T.copy()
R_OPTICAL_BODY.setflags(write=False)
"""Inverse of ``R_BODY_OPTICAL``: ``v_optical = R_OPTICAL_BODY @ v_body``."""

R_body_optical = R_BODY_OPTICAL
"""Alias of ``R_BODY_OPTICAL`` under the name used in the design notes."""


# ------------------------------------------------------------------------------ input checks


def _as_vector(values: object, length: int, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidPoseError(f"{what} {values!r} is not numeric") from exc
    if array.shape != (length,):
        raise InvalidPoseError(f"{what} has {array.size} values; expected {length}")
    return array


def _as_matrix(values: object, size: int, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidPoseError(f"{what} is not numeric") from exc
    if array.shape != (size, size):
        raise InvalidPoseError(f"{what} has shape {array.shape}; expected ({size}, {size})")
    if not np.all(np.isfinite(array)):
        raise InvalidPoseError(f"{what} contains NaN or infinite values")
    return array


def _as_quat(values: object, what: str = "quaternion wxyz") -> np.ndarray:
    """``(..., 4)`` float64 array; InvalidPoseError for another shape or non-numbers."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidPoseError(f"{what} {values!r} is not numeric") from exc
    if array.ndim == 0 or array.shape[-1] != 4:
        order = what.split()[-1]
        raise InvalidPoseError(
            f"{what} has shape {array.shape}; expected (..., 4) in {order} order"
        )
    return array


# -------------------------------------------------------------------------- quaternion orders


def quat_wxyz_to_xyzw(quat_wxyz: Sequence[float] | np.ndarray) -> np.ndarray:
    """Reorder a quaternion (w, x, y, z) -> (x, y, z, w). Works on ``[..., 4]`` arrays."""
    return _as_quat(quat_wxyz, "quaternion wxyz")[..., [1, 2, 3, 0]]


def quat_xyzw_to_wxyz(quat_xyzw: Sequence[float] | np.ndarray) -> np.ndarray:
    """Reorder a quaternion (x, y, z, w) -> (w, x, y, z). Works on ``[..., 4]`` arrays."""
    return _as_quat(quat_xyzw, "quaternion xyzw")[..., [3, 0, 1, 2]]


# ---------------------------------------------------------------------------- batch algebra


def quat_normalize(quat_wxyz: np.ndarray) -> np.ndarray:
    """Return the quaternion(s) scaled to unit norm; zero or non-finite ones are an error."""
    q = _as_quat(quat_wxyz)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if not np.all(np.isfinite(norm)) or np.any(norm < 1e-12):
        raise InvalidPoseError(
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
    return _as_quat(quat_wxyz) * np.array([1.0, -1.0, -1.0, -1.0])


def quat_multiply(q1_wxyz: np.ndarray, q2_wxyz: np.ndarray) -> np.ndarray:
    """Hamilton product ``q1 * q2`` (apply q2 first, then q1), broadcasting over leading axes."""
    a = _as_quat(q1_wxyz, "q1 wxyz")
    b = _as_quat(q2_wxyz, "q2 wxyz")
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
        raise InvalidPoseError(f"rotation must have shape (..., 3, 3), got {r.shape}")
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


def orthonormalize_rotation(
    rotation: np.ndarray, *, tolerance: float = ROTATION_TOLERANCE
) -> np.ndarray:
    """Return the nearest proper rotation (SVD) to a 3x3 matrix that is already close to one.

    Raises InvalidPoseError when ``max|R^T R - I| > tolerance`` or ``det(R) <= 0``: such a matrix
    is not a rotation with a little rounding noise but a wrong input.
    """
    r = np.asarray(rotation, dtype=np.float64)
    if r.shape != (3, 3) or not np.all(np.isfinite(r)):
        raise InvalidPoseError(f"rotation must be a finite 3x3 matrix, got {r.tolist()}")
    deviation = float(np.max(np.abs(r.T @ r - np.eye(3))))
    det = float(np.linalg.det(r))
    if deviation > tolerance or det <= 0.0:
        raise InvalidPoseError(
            f"not a rotation matrix: max|R^T R - I| = {deviation:.3g} (allowed <= {tolerance:g}),"
            f" det = {det:.6g} (must be +1)"
        )
    u, _, vt = np.linalg.svd(r)
    return u @ vt


def quat_to_rotvec(quat_wxyz: np.ndarray) -> np.ndarray:
    """Rotation vectors (..., 3), axis * angle in radians, angle in [0, pi], of unit
    quaternions (..., 4) wxyz (``Log``; q and -q give the same vector)."""
    q = np.asarray(quat_wxyz, dtype=np.float64)
    q = np.where(q[..., :1] < 0.0, -q, q)
    v = q[..., 1:]
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(n, q[..., :1])
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(n > 1e-12, angle / np.where(n > 1e-12, n, 1.0), 2.0)
    return v * factor


def average_quaternions(quat_wxyz: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Average of rotations ``(..., K, 4) -> (..., 4)`` by the eigenvector method (Markley 2007).

    The mean is the eigenvector of ``sum_i w_i q_i q_i^T`` with the largest eigenvalue: it is
    invariant to the signs of the inputs (q and -q are the same rotation), unlike a plain mean.
    Returned unit-normalised with ``w >= 0``.
    """
    q = quat_normalize(quat_wxyz)
    if q.ndim < 2 or q.shape[-2] == 0:
        raise InvalidPoseError(f"need at least one quaternion to average, got shape {q.shape}")
    w = np.ones(q.shape[:-1]) if weights is None else np.asarray(weights, dtype=np.float64)
    scatter = np.einsum("...k,...ki,...kj->...ij", w, q, q)
    _, vectors = np.linalg.eigh(scatter)
    return quat_canonical(vectors[..., :, -1])


# ----------------------------------------------------------------------- single, validated


def normalize_quat_wxyz(
    quat_wxyz: Sequence[float] | np.ndarray, *, max_norm_deviation: float | None = None
) -> np.ndarray:
    """Unit quaternion (w, x, y, z) with ``w >= 0`` (the canonical one of ``q`` and ``-q``).

    Raises InvalidPoseError when a component is NaN/infinite, the norm is below 1e-6 ("zero
    quaternion"), or, when ``max_norm_deviation`` is given, ``|norm - 1| > max_norm_deviation``
    (a network output far from unit length is a sign of a broken model or input).
    """
    quat = _as_vector(quat_wxyz, 4, "quaternion wxyz")
    if not np.all(np.isfinite(quat)):
        raise InvalidPoseError(f"quaternion wxyz {quat.tolist()} is not finite")
    norm = float(np.linalg.norm(quat))
    if norm < _ZERO_QUATERNION_NORM:
        raise InvalidPoseError(
            f"zero quaternion wxyz {quat.tolist()} (norm {norm:.3g} < {_ZERO_QUATERNION_NORM})"
        )
    if max_norm_deviation is not None and abs(norm - 1.0) > max_norm_deviation:
        raise InvalidPoseError(
            f"quaternion wxyz {quat.tolist()} has norm {norm:.6g}; allowed 1 +- "
            f"{max_norm_deviation}"
        )
    quat = quat / norm
    if quat[0] < 0.0:
        quat = -quat
    return quat


def validate_position(position_m: Sequence[float] | np.ndarray) -> np.ndarray:
    """Position as float64 (3,); raises InvalidPoseError unless it has 3 finite values."""
    position = _as_vector(position_m, 3, "position")
    if not np.all(np.isfinite(position)):
        raise InvalidPoseError(f"position {position.tolist()} (m) is not finite")
    return position


def quat_wxyz_to_matrix(quat_wxyz: Sequence[float] | np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a quaternion (w, x, y, z); normalised first (see above)."""
    return quat_to_matrix(normalize_quat_wxyz(quat_wxyz))


def matrix_to_quat_wxyz(R: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), ``w >= 0``, of one finite 3x3 rotation matrix."""
    return matrix_to_quat(_as_matrix(R, 3, "rotation matrix"))


def pose_to_matrix(
    position_m: Sequence[float] | np.ndarray, quat_wxyz: Sequence[float] | np.ndarray
) -> np.ndarray:
    """4x4 ``T_world_camera`` from the camera centre (m) and camera-to-world rotation wxyz."""
    T = np.eye(4)
    T[:3, :3] = quat_wxyz_to_matrix(quat_wxyz)
    T[:3, 3] = validate_position(position_m)
    return T


def matrix_to_pose(T: Sequence[Sequence[float]] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(position_m (3,), quat_wxyz (4,), w >= 0)`` of a 4x4 (or 3x4 ``[R | t]``) rigid
    transform; a rotation block slightly off orthonormal is projected onto the nearest rotation,
    one that is not a rotation raises InvalidPoseError."""
    try:
        array = np.asarray(T, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidPoseError("pose matrix is not numeric") from exc
    if array.shape not in ((4, 4), (3, 4)):
        raise InvalidPoseError(
            f"pose matrix has shape {array.shape}; expected (4, 4) (a 4x4 T_world_camera, "
            "or 3x4 without its last row)"
        )
    if not np.all(np.isfinite(array)):
        raise InvalidPoseError("pose matrix contains NaN or infinite values")
    return array[:3, 3].copy(), matrix_to_quat(orthonormalize_rotation(array[:3, :3]))


def invert_pose(T: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform (``T_b_a`` from ``T_a_b``), without a general inverse."""
    T = _as_matrix(T, 4, "pose matrix")
    inverse = np.eye(4)
    R_transposed = T[:3, :3].T
    inverse[:3, :3] = R_transposed
    inverse[:3, 3] = -R_transposed @ T[:3, 3]
    return inverse


def compose_poses(
    T_a_b: Sequence[Sequence[float]] | np.ndarray, T_b_c: Sequence[Sequence[float]] | np.ndarray
) -> np.ndarray:
    """``T_a_c = T_a_b @ T_b_c`` (e.g. ``T_world_base = T_world_camera @ T_camera_base``)."""
    return _as_matrix(T_a_b, 4, "pose matrix T_a_b") @ _as_matrix(T_b_c, 4, "pose matrix T_b_c")


# ------------------------------------------------------------------------- rotation vectors


def skew(vector: Sequence[float] | np.ndarray) -> np.ndarray:
    """3x3 cross-product matrix: ``skew(a) @ b == np.cross(a, b)``."""
    x, y, z = _as_vector(vector, 3, "vector")
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def rotvec_to_matrix(rotvec_rad: Sequence[float] | np.ndarray) -> np.ndarray:
    """Rotation matrix ``Exp(rotvec)`` (Rodrigues): axis * angle in radians -> 3x3."""
    rotvec = _as_vector(rotvec_rad, 3, "rotation vector")
    angle = float(np.linalg.norm(rotvec))
    K = skew(rotvec)
    if angle < 1e-12:
        return np.eye(3) + K
    return np.eye(3) + (np.sin(angle) / angle) * K + ((1.0 - np.cos(angle)) / angle**2) * (K @ K)


def matrix_to_rotvec(R: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Rotation vector ``Log(R)`` (axis * angle, radians, angle in [0, pi]) of a 3x3 rotation."""
    return quat_to_rotvec(matrix_to_quat_wxyz(R))


# ----------------------------------------------------------------------- dataset conventions


def cambridge_to_world_camera(
    center_m: Sequence[float] | np.ndarray,
    quat_wxyz_world_to_camera: Sequence[float] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``(position_m, quat_wxyz)`` of ``T_world_camera`` from a Cambridge Landmarks pose.

    Cambridge Landmarks (VisualSFM; and the middlebury_dino copy) store the camera centre ``C``
    in world coordinates and the quaternion of ``R``, the *world-to-camera* rotation of
    ``K [R | t]`` (``t = -R C``; a world point projects as ``K R (X - C)``). The centre is kept;
    the orientation becomes the inverse, unit-normalised with ``w >= 0``. Raises
    InvalidPoseError for a non-finite centre or a zero / non-finite quaternion.
    """
    position_m = validate_position(center_m)
    quat = quat_canonical(quat_conjugate(normalize_quat_wxyz(quat_wxyz_world_to_camera)))
    return position_m, quat


def cambridge_to_T_world_camera(
    center_m: Sequence[float] | np.ndarray,
    quat_wxyz_world_to_camera: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """4x4 ``T_world_camera`` from a Cambridge Landmarks pose line (see
    :func:`cambridge_to_world_camera`): rotation ``R^T``, translation the centre."""
    return pose_to_matrix(*cambridge_to_world_camera(center_m, quat_wxyz_world_to_camera))


def world_camera_to_cambridge(
    position_m: np.ndarray, quat_wxyz: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`cambridge_to_world_camera`: ``(center, quat_wxyz_world_to_camera)``."""
    center = np.asarray(position_m, dtype=np.float64).reshape(3).copy()
    quat = quat_canonical(quat_conjugate(quat_normalize(quat_wxyz)))
    return center, quat.reshape(4)


# -------------------------------------------------------------------------------- projection


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
