"""Online evaluation of pose estimates against ground truth, without ROS.

Estimates and ground-truth poses arrive as two streams, in any order; :class:`StampMatcher`
pairs them by header stamp (the relocalizer copies the image stamp to its outputs and the
dataset player gives the image and its ground truth the same stamp, so by default stamps must be
equal to within half a millisecond). Each pose is matched at most once, to the nearest unmatched
stamp of the other stream within the tolerance.

Errors: translation is the distance between the camera centres (m); rotation is the angle of
the relative rotation (degrees), the same for ``q`` and ``-q``. Poses follow the package's
convention (``T_world_camera``: camera centre in the scene frame, camera-to-world ``quat_wxyz``).

Outputs (:func:`write_outputs`): ``errors.csv`` (one row per match), ``summary.json`` (counts,
medians, means, shares within thresholds) and, when matplotlib is installed, ``trajectory.png``
(top view), ``errors_over_time.png`` and ``error_cdf.png``. matplotlib is imported only to plot:
it is not a runtime dependency of the robot.
"""

from __future__ import annotations

import bisect
import csv
import heapq
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posenet_core.geometry import normalize_quat_wxyz, validate_position
from posenet_ros.errors import InvalidPoseError, PoseNetError

__all__ = [
    "CSV_COLUMNS",
    "THRESHOLDS",
    "EvaluationError",
    "MatchedPose",
    "RunningMedian",
    "StampMatcher",
    "StampedPose",
    "format_stamp",
    "match_by_stamp",
    "plot_error_cdf",
    "plot_errors_over_time",
    "plot_trajectory",
    "read_reference_summary",
    "rotation_error_deg",
    "summarize",
    "summary_line",
    "translation_error_m",
    "write_errors_csv",
    "write_outputs",
    "write_summary_json",
]

NS_PER_S = 1_000_000_000
# Same thresholds as posenet_train.evaluate, so online and offline summaries compare key by key.
THRESHOLDS: tuple[tuple[str, float, float], ...] = (
    ("5cm_5deg", 0.05, 5.0),
    ("25cm_2deg", 0.25, 2.0),
    ("50cm_5deg", 0.50, 5.0),
    ("5m_10deg", 5.0, 10.0),
)
CSV_COLUMNS = (
    "stamp_s",
    "gt_x_m",
    "gt_y_m",
    "gt_z_m",
    "gt_qw",
    "gt_qx",
    "gt_qy",
    "gt_qz",
    "est_x_m",
    "est_y_m",
    "est_z_m",
    "est_qw",
    "est_qx",
    "est_qy",
    "est_qz",
    "t_err_m",
    "r_err_deg",
)
PLOT_FILES = ("trajectory.png", "errors_over_time.png", "error_cdf.png")


class EvaluationError(PoseNetError):
    """Bad evaluation input (a pose, a tolerance, a reference summary) or an unwritable output."""


@dataclass(frozen=True, eq=False)
class StampedPose:
    """A pose with its header stamp: ``T_world_camera`` as centre (m) and unit ``quat_wxyz``."""

    stamp_ns: int
    position_m: np.ndarray
    quat_wxyz: np.ndarray

    @classmethod
    def create(
        cls, stamp_ns: int, position_m: Sequence[float], quat_wxyz: Sequence[float]
    ) -> StampedPose:
        """Validated pose: finite position, quaternion normalised to ``w >= 0``.

        Raises EvaluationError for a negative stamp, a non-finite position or a quaternion that
        is not finite or has a norm far from 1 (more than 1e-3 off; a message that carries such
        a quaternion is broken, not rounded).
        """
        if int(stamp_ns) < 0:
            raise EvaluationError(f"stamp {stamp_ns} ns is negative")
        try:
            position = validate_position(position_m)
            quat = normalize_quat_wxyz(quat_wxyz, max_norm_deviation=1e-3)
        except InvalidPoseError as exc:
            raise EvaluationError(str(exc)) from None
        position.flags.writeable = False
        quat.flags.writeable = False
        return cls(int(stamp_ns), position, quat)


@dataclass(frozen=True, eq=False)
class MatchedPose:
    """A ground-truth pose, the estimate matched to it, and the estimate's errors."""

    ground_truth: StampedPose
    estimate: StampedPose
    translation_error_m: float
    rotation_error_deg: float

    @property
    def stamp_ns(self) -> int:
        """The ground truth's stamp."""
        return self.ground_truth.stamp_ns


def format_stamp(stamp_ns: int) -> str:
    """Exact decimal seconds of a stamp (``sec.nanosec``, 9 decimals)."""
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return f"{sec}.{nanosec:09d}"


# ---------------------------------------------------------------------------------- errors


def translation_error_m(estimate_position_m, ground_truth_position_m) -> np.ndarray:
    """Distance between camera centres, metres; broadcasts over leading axes of ``(..., 3)``."""
    est = np.asarray(estimate_position_m, dtype=np.float64)
    gt = np.asarray(ground_truth_position_m, dtype=np.float64)
    return np.linalg.norm(est - gt, axis=-1)


def rotation_error_deg(estimate_quat_wxyz, ground_truth_quat_wxyz) -> np.ndarray:
    """Angle of the rotation between two orientations, degrees in [0, 180]; q and -q are equal.

    ``2 atan2(|v|, |w|)`` of the relative quaternion ``conj(q_gt) * q_est``: accurate for tiny
    angles, where ``2 acos(|<q1, q2>|)`` loses precision. Broadcasts over leading axes of
    ``(..., 4)``; inputs are normalised first.
    """
    q1 = np.asarray(estimate_quat_wxyz, dtype=np.float64)
    q2 = np.asarray(ground_truth_quat_wxyz, dtype=np.float64)
    q1 = q1 / np.linalg.norm(q1, axis=-1, keepdims=True)
    q2 = q2 / np.linalg.norm(q2, axis=-1, keepdims=True)
    w1, v1 = q1[..., :1], q1[..., 1:]
    w2, v2 = q2[..., :1], -q2[..., 1:]  # conjugate of the ground truth
    # Hamilton product q2* (x) q1.
    w = w2 * w1 - np.sum(v2 * v1, axis=-1, keepdims=True)
    v = w2 * v1 + w1 * v2 + np.cross(v2, v1)
    angle = 2.0 * np.arctan2(np.linalg.norm(v, axis=-1), np.abs(w[..., 0]))
    return np.degrees(angle)


def _match(ground_truth: StampedPose, estimate: StampedPose) -> MatchedPose:
    return MatchedPose(
        ground_truth,
        estimate,
        float(translation_error_m(estimate.position_m, ground_truth.position_m)),
        float(rotation_error_deg(estimate.quat_wxyz, ground_truth.quat_wxyz)),
    )


# -------------------------------------------------------------------------------- matching


class _PendingPoses:
    """Unmatched poses of one stream, sorted by stamp, with nearest-stamp look-up."""

    def __init__(self) -> None:
        self._stamps: list[int] = []
        self._poses: list[StampedPose] = []

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, pose: StampedPose) -> None:
        # After equal stamps, so duplicates are taken first come, first served.
        index = bisect.bisect_right(self._stamps, pose.stamp_ns)
        self._stamps.insert(index, pose.stamp_ns)
        self._poses.insert(index, pose)

    def take_nearest(self, stamp_ns: int, max_difference_ns: int) -> StampedPose | None:
        """Remove and return the pose nearest ``stamp_ns`` within the tolerance, if any."""
        index = bisect.bisect_left(self._stamps, stamp_ns)
        best, best_difference = None, max_difference_ns + 1
        for candidate in (index - 1, index):
            if 0 <= candidate < len(self._stamps):
                difference = abs(self._stamps[candidate] - stamp_ns)
                if difference < best_difference:
                    best, best_difference = candidate, difference
        if best is None:
            return None
        del self._stamps[best]
        return self._poses.pop(best)


class StampMatcher:
    """Pairs estimates with ground-truth poses by stamp, whichever stream arrives first.

    ``add_ground_truth`` and ``add_estimate`` return the new :class:`MatchedPose` when the pose
    found its partner, else None (it waits for one). ``matches`` holds every match in the order
    they were made.
    """

    def __init__(self, max_stamp_difference_s: float) -> None:
        if not (math.isfinite(max_stamp_difference_s) and max_stamp_difference_s >= 0.0):
            raise EvaluationError(
                f"max_stamp_difference_s is {max_stamp_difference_s!r}; must be finite and >= 0"
            )
        self.max_difference_ns = int(round(max_stamp_difference_s * NS_PER_S))
        self.matches: list[MatchedPose] = []
        self._ground_truth = _PendingPoses()
        self._estimates = _PendingPoses()

    @property
    def unmatched_ground_truth(self) -> int:
        """Ground-truth poses still without an estimate."""
        return len(self._ground_truth)

    @property
    def unmatched_estimates(self) -> int:
        """Estimates still without a ground-truth pose."""
        return len(self._estimates)

    def add_ground_truth(self, pose: StampedPose) -> MatchedPose | None:
        """Add a ground-truth pose; returns its match if an estimate with its stamp is waiting."""
        estimate = self._estimates.take_nearest(pose.stamp_ns, self.max_difference_ns)
        if estimate is None:
            self._ground_truth.add(pose)
            return None
        match = _match(pose, estimate)
        self.matches.append(match)
        return match

    def add_estimate(self, pose: StampedPose) -> MatchedPose | None:
        """Add an estimate; returns its match if a ground-truth pose with its stamp is waiting."""
        ground_truth = self._ground_truth.take_nearest(pose.stamp_ns, self.max_difference_ns)
        if ground_truth is None:
            self._estimates.add(pose)
            return None
        match = _match(ground_truth, pose)
        self.matches.append(match)
        return match


def match_by_stamp(
    ground_truth: Iterable[StampedPose],
    estimates: Iterable[StampedPose],
    max_stamp_difference_s: float,
) -> StampMatcher:
    """Match two complete lists (ground truth first); the matcher holds matches and counts."""
    matcher = StampMatcher(max_stamp_difference_s)
    for pose in ground_truth:
        matcher.add_ground_truth(pose)
    for pose in estimates:
        matcher.add_estimate(pose)
    return matcher


class RunningMedian:
    """Median of every value added so far: two heaps, O(log n) per value, O(1) per query."""

    def __init__(self) -> None:
        self._low: list[float] = []  # max-heap (negated) of the lower half
        self._high: list[float] = []  # min-heap of the upper half

    def __len__(self) -> int:
        return len(self._low) + len(self._high)

    def add(self, value: float) -> None:
        """Add one finite value."""
        value = float(value)
        if not math.isfinite(value):
            raise EvaluationError(f"cannot take the median of a non-finite value {value!r}")
        if self._low and value > -self._low[0]:
            heapq.heappush(self._high, value)
        else:
            heapq.heappush(self._low, -value)
        if len(self._low) > len(self._high) + 1:
            heapq.heappush(self._high, -heapq.heappop(self._low))
        elif len(self._high) > len(self._low):
            heapq.heappush(self._low, -heapq.heappop(self._high))

    @property
    def median(self) -> float:
        """The median (mean of the two middle values for an even count); NaN when empty."""
        if not self._low:
            return float("nan")
        if len(self._low) > len(self._high):
            return -self._low[0]
        return (-self._low[0] + self._high[0]) / 2.0


# --------------------------------------------------------------------------------- summary


def summarize(
    matches: Sequence[MatchedPose], unmatched_estimates: int, unmatched_ground_truth: int
) -> dict:
    """Counts, median/mean errors and shares of matches within :data:`THRESHOLDS`.

    Keys: ``count``, ``unmatched_estimates``, ``unmatched_ground_truth``,
    ``median_translation_m``, ``median_rotation_deg``, ``mean_translation_m``,
    ``mean_rotation_deg``, ``max_translation_m``, ``max_rotation_deg`` and ``share_<name>``
    (fraction 0..1). Statistics are None when nothing matched (JSON has no NaN).
    """
    t = np.array([m.translation_error_m for m in matches], dtype=np.float64)
    r = np.array([m.rotation_error_deg for m in matches], dtype=np.float64)
    summary: dict = {
        "count": len(matches),
        "unmatched_estimates": int(unmatched_estimates),
        "unmatched_ground_truth": int(unmatched_ground_truth),
    }
    stats = {
        "median_translation_m": np.median,
        "median_rotation_deg": np.median,
        "mean_translation_m": np.mean,
        "mean_rotation_deg": np.mean,
        "max_translation_m": np.max,
        "max_rotation_deg": np.max,
    }
    for key, fn in stats.items():
        values = t if key.endswith("_m") else r
        summary[key] = float(fn(values)) if len(matches) else None
    for name, max_m, max_deg in THRESHOLDS:
        share = float(np.mean((t <= max_m) & (r <= max_deg))) if len(matches) else None
        summary[f"share_{name}"] = share
    return summary


def read_reference_summary(path: str | Path) -> dict:
    """``{"median_translation_m", "median_rotation_deg"}`` from a summary JSON (e.g. the offline
    evaluation's ``summary.json``); raises EvaluationError naming the file and the bad key."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationError(f"reference summary {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"cannot read reference summary {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise EvaluationError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise EvaluationError(f"{path}: expected a JSON object, got {type(data).__name__}")
    reference = {}
    for key in ("median_translation_m", "median_rotation_deg"):
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EvaluationError(f"{path}: {key} must be a number, got {value!r}")
        if not math.isfinite(value) or value < 0.0:
            raise EvaluationError(f"{path}: {key} must be finite and >= 0, got {value!r}")
        reference[key] = float(value)
    return reference


def summary_line(summary: dict, reference: dict | None = None) -> str:
    """One line: count, medians (and the reference's medians side by side), unmatched counts."""
    if not summary["count"]:
        text = "0 matched poses"
    else:
        text = (
            f"{summary['count']} matched: median {summary['median_translation_m']:.3f} m,"
            f" {summary['median_rotation_deg']:.2f} deg (mean {summary['mean_translation_m']:.3f}"
            f" m, {summary['mean_rotation_deg']:.2f} deg)"
        )
    if reference:
        text += (
            f" | reference median {reference['median_translation_m']:.3f} m,"
            f" {reference['median_rotation_deg']:.2f} deg"
        )
    return (
        f"{text}; unmatched: {summary['unmatched_estimates']} estimate(s),"
        f" {summary['unmatched_ground_truth']} ground-truth pose(s)"
    )


# --------------------------------------------------------------------------------- outputs


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_errors_csv(path: str | Path, matches: Sequence[MatchedPose]) -> Path:
    """``errors.csv``: one row per match in stamp order (:data:`CSV_COLUMNS`); floats exact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for m in sorted(matches, key=lambda m: m.stamp_ns):
            values = (
                *m.ground_truth.position_m,
                *m.ground_truth.quat_wxyz,
                *m.estimate.position_m,
                *m.estimate.quat_wxyz,
                m.translation_error_m,
                m.rotation_error_deg,
            )
            writer.writerow([format_stamp(m.stamp_ns), *(repr(float(v)) for v in values)])
    os.replace(tmp, path)
    return path


def write_summary_json(path: str | Path, summary: dict) -> Path:
    """``summary.json``, written atomically."""
    path = Path(path)
    _write_atomically(path, json.dumps(summary, indent=2) + "\n")
    return path


def _arrays(matches: Sequence[MatchedPose]):
    ordered = sorted(matches, key=lambda m: m.stamp_ns)
    gt = np.array([m.ground_truth.position_m for m in ordered]).reshape(-1, 3)
    est = np.array([m.estimate.position_m for m in ordered]).reshape(-1, 3)
    stamps_ns = np.array([m.stamp_ns for m in ordered], dtype=np.int64)
    t_err = np.array([m.translation_error_m for m in ordered])
    r_err = np.array([m.rotation_error_deg for m in ordered])
    return gt, est, stamps_ns, t_err, r_err


def _figure(size):
    # Figure renders with Agg on savefig: no pyplot, no display, no global state.
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=110)


def plot_trajectory(path: str | Path, matches: Sequence[MatchedPose], title: str = "") -> Path:
    """Top view PNG: ground-truth and estimated camera centres in stamp order, a grey line from
    each ground-truth centre to its estimate.

    The view drops the scene axis along which the ground truth spreads least (z for a robot on
    the floor of a z-up map), so the axes are the scene frame's own, in metres.
    """
    from matplotlib.collections import LineCollection

    gt, est, _, _, _ = _arrays(matches)
    spread = np.ptp(gt, axis=0) if len(gt) else np.zeros(3)
    dropped = int(np.argmin(spread))
    shown = [a for a in range(3) if a != dropped]
    fig = _figure((7, 6))
    ax = fig.subplots()
    pairs = np.stack([gt[:, shown], est[:, shown]], axis=1)
    ax.add_collection(LineCollection(pairs, colors="0.7", linewidths=0.6))
    ax.plot(gt[:, shown[0]], gt[:, shown[1]], ".-", color="tab:green", label="ground truth")
    ax.plot(est[:, shown[0]], est[:, shown[1]], ".-", color="tab:red", label="estimate", lw=0.8)
    ax.set_xlabel(f"scene {'xyz'[shown[0]]} (m)")
    ax.set_ylabel(f"scene {'xyz'[shown[1]]} (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title or f"camera centres, view along scene {'xyz'[dropped]}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_errors_over_time(
    path: str | Path, matches: Sequence[MatchedPose], title: str = ""
) -> Path:
    """PNG: translation and rotation error against time since the first matched stamp."""
    _, _, stamps_ns, t_err, r_err = _arrays(matches)
    seconds = (stamps_ns - (stamps_ns[0] if len(stamps_ns) else 0)) / NS_PER_S
    fig = _figure((9, 6))
    ax_t, ax_r = fig.subplots(2, 1, sharex=True)
    for ax, errors, label in (
        (ax_t, t_err, "translation error (m)"),
        (ax_r, r_err, "rotation error (deg)"),
    ):
        ax.plot(seconds, errors, ".-", lw=0.8, ms=3)
        if len(errors):
            ax.axhline(float(np.median(errors)), color="0.5", linestyle="--", linewidth=0.8)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0.0)
        ax.grid(True, alpha=0.3)
    ax_r.set_xlabel("time since the first matched stamp (s)")
    fig.suptitle(title or "error over time (dashed: median)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_error_cdf(path: str | Path, matches: Sequence[MatchedPose], title: str = "") -> Path:
    """PNG: cumulative distributions of translation and rotation errors."""
    _, _, _, t_err, r_err = _arrays(matches)
    fig = _figure((10, 4))
    ax_t, ax_r = fig.subplots(1, 2)
    for ax, errors, label in (
        (ax_t, t_err, "translation error (m)"),
        (ax_r, r_err, "rotation error (deg)"),
    ):
        values = np.sort(errors)
        fractions = np.arange(1, len(values) + 1) / max(len(values), 1)
        ax.step(values, fractions, where="post")
        if len(values):
            ax.axvline(float(np.median(values)), color="0.5", linestyle="--", linewidth=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of matched poses")
        ax.set_ylim(0.0, 1.0)
        ax.set_xlim(left=0.0)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title or "error CDF (dashed: median)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def write_outputs(
    output_dir: str | Path,
    matches: Sequence[MatchedPose],
    summary: dict,
) -> tuple[list[Path], str]:
    """Write errors.csv, summary.json and the three plots into ``output_dir`` (created).

    Returns ``(written paths, note)``; ``note`` says why plots were skipped (matplotlib missing,
    nothing matched), else it is empty. The CSV and the summary are written in every case.
    Raises EvaluationError when the folder or a file cannot be written.
    """
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        written = [
            write_errors_csv(output_dir / "errors.csv", matches),
            write_summary_json(output_dir / "summary.json", summary),
        ]
    except OSError as exc:
        raise EvaluationError(f"cannot write the evaluation to {output_dir}: {exc}") from exc
    if not matches:
        return written, "no matched poses: plots skipped"
    try:
        import matplotlib  # noqa: F401 - only to report its absence clearly
    except ImportError:
        return written, (
            "matplotlib is not installed (pip install matplotlib, or apt install"
            " python3-matplotlib): plots skipped, errors.csv and summary.json written"
        )
    try:
        for name, plot in zip(
            PLOT_FILES, (plot_trajectory, plot_errors_over_time, plot_error_cdf), strict=True
        ):
            written.append(plot(output_dir / name, matches))
    except OSError as exc:
        raise EvaluationError(f"cannot write plots to {output_dir}: {exc}") from exc
    return written, ""
