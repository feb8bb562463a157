"""The evaluator node's results, without ROS: summary, CSV, JSON and plots.

Matching estimates to ground truth by stamp and the error metrics are posenet_core's
(:mod:`posenet_core.matching`, :mod:`posenet_core.metrics`, the same definitions as the
trainer's offline evaluation, so online and offline summaries compare key by key); this module
turns the matches into what people look at.

Outputs (:func:`write_outputs`): ``errors.csv`` (one row per match), ``summary.json`` (counts,
medians, means, shares within thresholds) and, when matplotlib is installed, ``trajectory.png``
(top view), ``errors_over_time.png`` and ``error_cdf.png``. matplotlib is imported only to plot:
it is not a runtime dependency of the robot.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from posenet_core.errors import EvaluationError
from posenet_core.files import read_json_object
from posenet_core.matching import NS_PER_S, MatchedPose, format_stamp
from posenet_core.metrics import error_statistics
from posenet_core.plots import figure, plot_error_cdfs, save_figure

__all__ = [
    "CSV_COLUMNS",
    "PLOT_FILES",
    "plot_error_cdf",
    "plot_errors_over_time",
    "plot_trajectory",
    "read_reference_summary",
    "summarize",
    "summary_line",
    "write_errors_csv",
    "write_outputs",
    "write_summary_json",
]

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
    statistics = error_statistics(
        [m.translation_error_m for m in matches],
        [m.rotation_error_deg for m in matches],
        with_max=True,
    )
    return {
        "count": statistics.pop("count"),
        "unmatched_estimates": int(unmatched_estimates),
        "unmatched_ground_truth": int(unmatched_ground_truth),
        **statistics,
    }


def read_reference_summary(path: str | Path) -> dict:
    """``{"median_translation_m", "median_rotation_deg"}`` from a summary JSON (e.g. the offline
    evaluation's ``summary.json``); raises EvaluationError naming the file and the bad key."""
    path = Path(path)
    data = read_json_object(path, "reference summary", EvaluationError)
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
    fig = figure((7, 6))
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
    return save_figure(fig, path)


def plot_errors_over_time(
    path: str | Path, matches: Sequence[MatchedPose], title: str = ""
) -> Path:
    """PNG: translation and rotation error against time since the first matched stamp."""
    _, _, stamps_ns, t_err, r_err = _arrays(matches)
    seconds = (stamps_ns - (stamps_ns[0] if len(stamps_ns) else 0)) / NS_PER_S
    fig = figure((9, 6))
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
    return save_figure(fig, path, title or "error over time (dashed: median)")


def plot_error_cdf(path: str | Path, matches: Sequence[MatchedPose], title: str = "") -> Path:
    """PNG: cumulative distributions of translation and rotation errors."""
    _, _, _, t_err, r_err = _arrays(matches)
    return plot_error_cdfs(
        t_err,
        r_err,
        path,
        title or "error CDF (dashed: median)",
        ylabel="fraction of matched poses",
    )


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
