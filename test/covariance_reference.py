"""A numerical reference for the base pose's covariance (test helper, no covariance algebra).

The camera pose is perturbed along each of its six error coordinates (world-frame position,
rotation about the world's fixed axes applied on the left: ``R' = Exp(d) R``), the base pose
``T_world_camera @ T_camera_base`` recomputed, and its error read back in the same coordinates;
central differences give the Jacobian ``J`` and the reference covariance ``J @ cov @ J.T``.
"""

from __future__ import annotations

import numpy as np

from posenet_core.geometry import matrix_to_rotvec, rotvec_to_matrix


def base_error(T_world_camera: np.ndarray, T_camera_base: np.ndarray, delta: np.ndarray):
    """The base pose's error (6,) when the camera pose is perturbed by ``delta`` (6,)."""
    T_perturbed = np.array(T_world_camera, dtype=np.float64)
    T_perturbed[:3, 3] += delta[:3]
    T_perturbed[:3, :3] = rotvec_to_matrix(delta[3:]) @ T_perturbed[:3, :3]
    T_base = T_world_camera @ T_camera_base
    T_base_perturbed = T_perturbed @ T_camera_base
    return np.concatenate(
        [
            T_base_perturbed[:3, 3] - T_base[:3, 3],
            matrix_to_rotvec(T_base_perturbed[:3, :3] @ T_base[:3, :3].T),
        ]
    )


def numerical_base_covariance(
    T_world_camera: np.ndarray, T_camera_base: np.ndarray, covariance: np.ndarray, h: float = 1e-6
) -> np.ndarray:
    """``J @ covariance @ J.T`` with ``J`` from central differences of :func:`base_error`."""
    J = np.empty((6, 6))
    for k in range(6):
        step = np.zeros(6)
        step[k] = h
        J[:, k] = (
            base_error(T_world_camera, T_camera_base, step)
            - base_error(T_world_camera, T_camera_base, -step)
        ) / (2 * h)
    return J @ np.asarray(covariance, dtype=np.float64).reshape(6, 6) @ J.T
