"""Error metrics of pose estimates against ground truth: one definition for the node's online
evaluation and the trainer's offline one, so their numbers compare key by key.

Translation error: the distance between the camera centres (m). Rotation error: the angle of the
relative rotation (degrees, in [0, 180]), the same for ``q`` and ``-q``. Accuracy shares: the
fraction of frames whose errors are both within a threshold pair of :data:`THRESHOLDS`.
"""

from __future__ import annotations

import numpy as np

from posenet_core.errors import EvaluationError
from posenet_core.geometry import quat_conjugate, quat_multiply, quat_normalize

__all__ = [
    "THRESHOLDS",
    "error_statistics",
    "pose_errors",
    "rotation_error_deg",
    "translation_error_m",
]


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


# (name, translation threshold m, rotation threshold deg): a frame counts when both errors are
# within (<=) the thresholds. The node's online and the trainer's offline summaries both use them.
THRESHOLDS: tuple[tuple[str, float, float], ...] = (
    ("5cm_5deg", 0.05, 5.0),
    ("25cm_2deg", 0.25, 2.0),
    ("50cm_5deg", 0.50, 5.0),
    ("5m_10deg", 5.0, 10.0),
)


def pose_errors(
    pred_position_m: np.ndarray,
    pred_quat_wxyz: np.ndarray,
    gt_position_m: np.ndarray,
    gt_quat_wxyz: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame ``(translation_error_m (N,), rotation_error_deg (N,))``.

    Translation: Euclidean distance of the camera centres. Rotation: angle of the relative
    rotation, sign-invariant (q and -q give 0 degrees). Raises EvaluationError when the counts
    differ.
    """
    pred_p = np.asarray(pred_position_m, dtype=np.float64).reshape(-1, 3)
    gt_p = np.asarray(gt_position_m, dtype=np.float64).reshape(-1, 3)
    pred_q = np.asarray(pred_quat_wxyz, dtype=np.float64).reshape(-1, 4)
    gt_q = np.asarray(gt_quat_wxyz, dtype=np.float64).reshape(-1, 4)
    if not len(pred_p) == len(gt_p) == len(pred_q) == len(gt_q):
        raise EvaluationError(
            f"prediction/ground-truth counts differ: positions {len(pred_p)} vs {len(gt_p)},"
            f" quaternions {len(pred_q)} vs {len(gt_q)}"
        )
    return translation_error_m(pred_p, gt_p), rotation_error_deg(pred_q, gt_q)


def error_statistics(
    translation_error_m: np.ndarray, rotation_error_deg: np.ndarray, *, with_max: bool = False
) -> dict:
    """Summary statistics of per-frame errors (the keys both summaries share).

    Keys: ``count``, ``median_translation_m``, ``mean_translation_m``, ``median_rotation_deg``,
    ``mean_rotation_deg`` (with ``with_max`` also ``max_translation_m``, ``max_rotation_deg``)
    and, for each of :data:`THRESHOLDS`, ``share_<name>`` (e.g. ``share_5cm_5deg``): the
    fraction (0..1) of frames with both errors within the thresholds. With no frames every
    statistic is None (JSON has no NaN). Raises EvaluationError when the counts differ.
    """
    t = np.asarray(translation_error_m, dtype=np.float64).reshape(-1)
    r = np.asarray(rotation_error_deg, dtype=np.float64).reshape(-1)
    if len(t) != len(r):
        raise EvaluationError(
            f"need the same number of translation and rotation errors, got {len(t)} and {len(r)}"
        )
    statistics = {"median": np.median, "mean": np.mean, **({"max": np.max} if with_max else {})}
    summary: dict = {"count": len(t)}
    for values, unit in ((t, "translation_m"), (r, "rotation_deg")):
        for name, fn in statistics.items():
            summary[f"{name}_{unit}"] = float(fn(values)) if len(t) else None
    for name, max_m, max_deg in THRESHOLDS:
        share = float(np.mean((t <= max_m) & (r <= max_deg))) if len(t) else None
        summary[f"share_{name}"] = share
    return summary
