"""Pose conventions, quaternion orders, the optical frame, extrinsics and pose covariance.

Internal convention everywhere: ``T_world_camera`` is a 4x4 homogeneous matrix whose rotation is
camera-to-world and whose translation is the camera centre in the world (scene) frame, metres;
camera axes are the optical frame (x right, y down, z forward; REP-103 ``_optical``). A point
maps as ``X_world = T_world_camera @ X_camera``. ``T_a_b @ T_b_c = T_a_c``.

Quaternions are named by their order: ``quat_wxyz`` (the model's output, transforms3d's order)
and ``quat_xyzw`` (ROS messages).

Pose covariance follows geometry_msgs/PoseWithCovariance as robot_localization reads it:
6x6 row-major over (x, y, z, rotation about X, rotation about Y, rotation about Z), everything
in the message's ``frame_id`` (the world/scene frame). The rotation part is a small-angle
rotation vector about the world's fixed axes applied on the left: ``R_true = Exp(dtheta) @
R_estimate``; positions are perturbed additively in the world frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import transforms3d.quaternions as t3d_quaternions

from posenet_ros.errors import InvalidPoseError

_ZERO_QUATERNION_NORM = 1e-6

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


def _as_quat_array(values: object, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidPoseError(f"{what} {values!r} is not numeric") from exc
    if array.ndim == 0 or array.shape[-1] != 4:
        raise InvalidPoseError(f"{what} has shape {array.shape}; expected (..., 4)")
    return array


def quat_wxyz_to_xyzw(quat_wxyz: Sequence[float] | np.ndarray) -> np.ndarray:
    """Reorder a quaternion (w, x, y, z) -> (x, y, z, w). Works on ``[..., 4]`` arrays."""
    return _as_quat_array(quat_wxyz, "quaternion wxyz")[..., [1, 2, 3, 0]]


def quat_xyzw_to_wxyz(quat_xyzw: Sequence[float] | np.ndarray) -> np.ndarray:
    """Reorder a quaternion (x, y, z, w) -> (w, x, y, z). Works on ``[..., 4]`` arrays."""
    return _as_quat_array(quat_xyzw, "quaternion xyzw")[..., [3, 0, 1, 2]]


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
    return t3d_quaternions.quat2mat(normalize_quat_wxyz(quat_wxyz))


def matrix_to_quat_wxyz(R: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), ``w >= 0``, of a 3x3 rotation matrix.

    Uses the eigenvector method (transforms3d), which gives the nearest rotation's quaternion
    when ``R`` is slightly non-orthogonal.
    """
    R = _as_matrix(R, 3, "rotation matrix")
    return normalize_quat_wxyz(t3d_quaternions.mat2quat(R))


def pose_to_matrix(
    position_m: Sequence[float] | np.ndarray, quat_wxyz: Sequence[float] | np.ndarray
) -> np.ndarray:
    """4x4 ``T_world_camera`` from the camera centre (m) and camera-to-world rotation wxyz."""
    T = np.eye(4)
    T[:3, :3] = quat_wxyz_to_matrix(quat_wxyz)
    T[:3, 3] = validate_position(position_m)
    return T


def matrix_to_pose(T: Sequence[Sequence[float]] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position_m (3,), quat_wxyz (4,) with w >= 0) of a 4x4 rigid transform."""
    T = _as_matrix(T, 4, "pose matrix")
    return T[:3, 3].copy(), matrix_to_quat_wxyz(T[:3, :3])


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


def cambridge_to_T_world_camera(
    center_m: Sequence[float] | np.ndarray,
    quat_wxyz_world_to_camera: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """``T_world_camera`` from a Cambridge Landmarks pose line.

    Cambridge Landmarks (and the middlebury_dino copy) store the camera centre ``C`` in world
    coordinates and the quaternion of ``R``, the *world-to-camera* rotation of ``K [R | t]``
    (``t = -R C``). The camera-to-world rotation is ``R^T``.
    """
    R_camera_world = quat_wxyz_to_matrix(quat_wxyz_world_to_camera)
    T = np.eye(4)
    T[:3, :3] = R_camera_world.T
    T[:3, 3] = validate_position(center_m)
    return T


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
    quat = matrix_to_quat_wxyz(R)
    sin_half = float(np.linalg.norm(quat[1:]))
    if sin_half < 1e-12:
        return 2.0 * quat[1:]
    angle = 2.0 * np.arctan2(sin_half, quat[0])
    return quat[1:] * (angle / sin_half)


def covariance_6x6_from_diagonal(
    position_var_m2: Sequence[float], rotation_var_rad2: Sequence[float]
) -> list[float]:
    """Row-major 36-element pose covariance with the given diagonal (ROS PoseWithCovariance).

    Order x, y, z (m^2, world frame), rotation about X, Y, Z (rad^2, fixed world axes).
    Raises InvalidPoseError unless both have three finite, non-negative values.
    """
    diagonal = np.concatenate(
        [
            _as_vector(position_var_m2, 3, "position variance"),
            _as_vector(rotation_var_rad2, 3, "rotation variance"),
        ]
    )
    if not np.all(np.isfinite(diagonal)) or np.any(diagonal < 0.0):
        raise InvalidPoseError(
            f"covariance diagonal {diagonal.tolist()} must be finite and non-negative "
            "(variances: m^2 for x y z, rad^2 for rotations)"
        )
    return np.diag(diagonal).reshape(-1).tolist()


def transform_pose_covariance(
    cov6x6: Sequence[float] | np.ndarray,
    T_camera_base: Sequence[Sequence[float]] | np.ndarray,
    T_world_camera: Sequence[Sequence[float]] | np.ndarray,
) -> np.ndarray:
    """Covariance of ``T_world_base = T_world_camera @ T_camera_base`` (first order).

    ``cov6x6`` (6x6 or 36 row-major values) is the covariance of ``T_world_camera`` in the
    module's convention (world-frame position, world-fixed small-angle rotation applied on the
    left); the result, a 6x6 array, is the base pose's covariance in the same convention, ready
    for ``PoseWithCovariance.covariance = result.ravel().tolist()``.

    With ``r = R_world_camera @ t_camera_base`` (the lever arm in the world frame), a camera
    rotation error ``dtheta`` moves the base by ``dtheta x r`` and rotates it by the same
    ``dtheta``: ``J = [[I, -skew(r)], [0, I]]`` and the result is ``J @ cov @ J.T``. The world
    orientation of the camera is needed because the lever arm rotates with it.
    """
    cov_array = np.asarray(cov6x6, dtype=np.float64)
    if cov_array.size == 36:
        cov_array = cov_array.reshape(6, 6)
    cov = _as_matrix(cov_array, 6, "pose covariance")
    T_cb = _as_matrix(T_camera_base, 4, "pose matrix T_camera_base")
    T_wc = _as_matrix(T_world_camera, 4, "pose matrix T_world_camera")
    lever_arm_world = T_wc[:3, :3] @ T_cb[:3, 3]
    J = np.eye(6)
    J[:3, 3:] = -skew(lever_arm_world)
    return J @ cov @ J.T


# Variances are exp(log-variance): beyond this the float64 result overflows (exp(709.8) = inf),
# and a variance that large means "no information" anyway.
_MAX_LOG_VARIANCE = 700.0
EXTRINSIC_QUAT_NORM_TOLERANCE = 0.01


def covariance_6x6_from_log_variance(
    log_variance: Sequence[float] | np.ndarray, scale: float = 1.0
) -> np.ndarray:
    """Diagonal 6x6 pose covariance from a model's log-variances, times ``scale``.

    ``log_variance`` holds 6 values (x, y, z position in m^2, scene frame; rotation about the
    scene frame's fixed x, y, z axes in rad^2: the model file contract's ``[N,6]`` row) or 2
    (isotropic: position, rotation; each repeated over its three axes). Natural logarithms.
    Raises InvalidPoseError when a value is not finite or above 700 (the variance would
    overflow), when there are not 6 or 2 values, or when ``scale`` is not finite and > 0.
    """
    try:
        values = np.asarray(log_variance, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidPoseError(f"log-variances {log_variance!r} are not numeric") from exc
    if values.size == 2:
        values = np.repeat(values, 3)
    elif values.size != 6:
        raise InvalidPoseError(
            f"log-variances have {values.size} values; expected 6 (x, y, z, rot x, rot y, "
            "rot z) or 2 (position, rotation)"
        )
    if not np.all(np.isfinite(values)) or np.any(values > _MAX_LOG_VARIANCE):
        raise InvalidPoseError(
            f"log-variances {values.tolist()} must be finite and <= {_MAX_LOG_VARIANCE:g}"
        )
    scale = float(scale)
    if not np.isfinite(scale) or scale <= 0.0:
        raise InvalidPoseError(f"covariance scale {scale!r} must be finite and > 0")
    return np.diag(np.exp(values) * scale)


def stddev_from_covariance(cov6x6: Sequence[float] | np.ndarray) -> np.ndarray:
    """Standard deviations (6,) of a pose covariance's diagonal: x, y, z (m), rotations (rad)."""
    cov_array = np.asarray(cov6x6, dtype=np.float64)
    if cov_array.size == 36:
        cov_array = cov_array.reshape(6, 6)
    cov = _as_matrix(cov_array, 6, "pose covariance")
    diagonal = np.diag(cov)
    if np.any(diagonal < 0.0):
        raise InvalidPoseError(f"pose covariance has negative variances {diagonal.tolist()}")
    return np.sqrt(diagonal)


def extrinsic_from_parameters(
    translation_m: Sequence[float] | np.ndarray, quat_xyzw: Sequence[float] | np.ndarray
) -> np.ndarray:
    """4x4 ``T_camera_base`` from a translation (m) and a quaternion in ROS order (x, y, z, w).

    ``translation_m`` is the base frame's origin in the camera's optical frame and the
    quaternion the base-to-camera rotation ``R_camera_base`` (base axes as seen from the
    camera): the TF transform with parent = camera optical frame and child = base frame, as
    ``ros2 run tf2_ros tf2_echo <camera_optical_frame> <base_frame>`` prints it. The quaternion
    must be within 1 % of unit length (it is then normalised): a far-off norm is a typo, not
    rounding. Raises InvalidPoseError naming the bad value.
    """
    translation = validate_position(translation_m)
    quat_xyzw_array = _as_vector(quat_xyzw, 4, "extrinsic quaternion xyzw")
    if not np.all(np.isfinite(quat_xyzw_array)):
        raise InvalidPoseError(
            f"extrinsic quaternion xyzw {quat_xyzw_array.tolist()} is not finite"
        )
    quat = normalize_quat_wxyz(
        quat_xyzw_to_wxyz(quat_xyzw_array), max_norm_deviation=EXTRINSIC_QUAT_NORM_TOLERANCE
    )
    return pose_to_matrix(translation, quat)


def base_pose_with_covariance(
    position_m: Sequence[float] | np.ndarray,
    quat_wxyz: Sequence[float] | np.ndarray,
    cov6x6: Sequence[float] | np.ndarray,
    T_camera_base: Sequence[Sequence[float]] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The base pose in the world frame, with its covariance, from the camera's.

    ``position_m`` / ``quat_wxyz`` are ``T_world_camera`` (camera centre, camera-to-world
    rotation), ``cov6x6`` its covariance in this module's convention, ``T_camera_base`` the
    extrinsic (see :func:`extrinsic_from_parameters`). Returns ``(position_m (3,), quat_wxyz
    (4,), covariance (6, 6))`` of ``T_world_base = T_world_camera @ T_camera_base``; the
    covariance comes from :func:`transform_pose_covariance`.
    """
    T_world_camera = pose_to_matrix(position_m, quat_wxyz)
    T_world_base = compose_poses(T_world_camera, T_camera_base)
    position_base, quat_base = matrix_to_pose(T_world_base)
    return (
        position_base,
        quat_base,
        transform_pose_covariance(cov6x6, T_camera_base, T_world_camera),
    )
