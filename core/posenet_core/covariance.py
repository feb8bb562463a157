"""Pose covariance (geometry_msgs/PoseWithCovariance's convention), extrinsics and base poses.

Pose covariance follows geometry_msgs/PoseWithCovariance as robot_localization reads it:
6x6 row-major over (x, y, z, rotation about X, rotation about Y, rotation about Z), everything
in the message's ``frame_id`` (the world/scene frame). The rotation part is a small-angle
rotation vector about the world's fixed axes applied on the left: ``R_true = Exp(dtheta) @
R_estimate``; positions are perturbed additively in the world frame. The model file's
uncertainty output (log-variances) uses the same convention.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from posenet_core.errors import InvalidPoseError
from posenet_core.geometry import (
    _as_matrix,
    _as_vector,
    compose_poses,
    matrix_to_pose,
    normalize_quat_wxyz,
    pose_to_matrix,
    quat_xyzw_to_wxyz,
    skew,
    validate_position,
)

__all__ = [
    "EXTRINSIC_QUAT_NORM_TOLERANCE",
    "base_pose_with_covariance",
    "covariance_6x6_from_diagonal",
    "covariance_6x6_from_log_variance",
    "extrinsic_from_parameters",
    "stddev_from_covariance",
    "transform_pose_covariance",
]


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
