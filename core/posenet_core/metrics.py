"""Error metrics of pose estimates against ground truth: one definition for the node's online
evaluation and the trainer's offline one, so their numbers compare key by key.

Translation error: the distance between the camera centres (m). Rotation error: the angle of the
relative rotation (degrees, in [0, 180]), the same for ``q`` and ``-q``. Accuracy shares: the
fraction of frames whose errors are both within a threshold pair of :data:`THRESHOLDS`.
"""

from __future__ import annotations

import numpy as np

from posenet_core.geometry import quat_conjugate, quat_multiply, quat_normalize

__all__ = ["rotation_error_deg", "translation_error_m"]


def translation_error_m(estimate_position_m, ground_truth_position_m) -> np.ndarray:
    """Distance between camera centres, metres; broadcasts over leading axes of ``(..., 3)``."""
    est = np.asarray(estimate_position_m, dtype=np.float64)
    gt = np.asarray(ground_truth_position_m, dtype=np.float64)
    return np.linalg.norm(est - gt, axis=-1)


def rotation_error_deg(q1_wxyz: np.ndarray, q2_wxyz: np.ndarray) -> np.ndarray:
    """Angle in degrees of the rotation between q1 and q2 (sign-invariant: q and -q give 0).

    Computed as ``2 atan2(|v|, |w|)`` of the relative quaternion, which stays accurate for tiny
    angles where ``2 acos(|<q1, q2>|)`` loses precision. Inputs are normalised first (a zero
    quaternion raises InvalidPoseError). Broadcasts over leading axes of ``(..., 4)``.
    """
    relative = quat_multiply(quat_conjugate(quat_normalize(q1_wxyz)), quat_normalize(q2_wxyz))
    vector_norm = np.linalg.norm(relative[..., 1:], axis=-1)
    return np.degrees(2.0 * np.arctan2(vector_norm, np.abs(relative[..., 0])))
