"""posenet_ros.pose_matching: stamp matching, error maths, running median, CSV/JSON/plots."""

from __future__ import annotations

import csv
import json
import math
import sys

import numpy as np
import pytest
import transforms3d.quaternions as t3q

from posenet_ros.pose_matching import (
    CSV_COLUMNS,
    EvaluationError,
    RunningMedian,
    StampedPose,
    StampMatcher,
    format_stamp,
    match_by_stamp,
    read_reference_summary,
    rotation_error_deg,
    summarize,
    summary_line,
    translation_error_m,
    write_outputs,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def about(axis, degrees) -> np.ndarray:
    return t3q.axangle2quat(axis, math.radians(degrees))


def pose(stamp_ns, position=(0.0, 0.0, 0.0), quat=(1.0, 0.0, 0.0, 0.0)) -> StampedPose:
    return StampedPose.create(stamp_ns, position, quat)


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "q_est, q_gt, expected_deg",
    [
        ((1, 0, 0, 0), (1, 0, 0, 0), 0.0),
        ((1, 0, 0, 0), (-1, 0, 0, 0), 0.0),
        (about([0, 0, 1], 30), -about([0, 0, 1], 30), 0.0),
        (about([0, 0, 1], 90), (1, 0, 0, 0), 90.0),
        (about([1, 1, 0], 179), (1, 0, 0, 0), 179.0),
        (about([0, 1, 0], 180), (1, 0, 0, 0), 180.0),
        (about([1, 0, 0], 200), (1, 0, 0, 0), 160.0),
        (about([0, 0, 1], 10), about([0, 0, 1], -15), 25.0),
        (-about([0, 0, 1], 10), about([0, 0, 1], -15), 25.0),
        (about([1, 2, 3], 1e-6), (1, 0, 0, 0), 1e-6),
        ((2, 0, 0, 0), about([0, 1, 0], 45), 45.0),
    ],
)
def test_rotation_error_is_sign_invariant_and_accurate(q_est, q_gt, expected_deg):
    got = float(rotation_error_deg(q_est, q_gt))
    assert math.isclose(got, expected_deg, rel_tol=1e-9, abs_tol=1e-12)


def test_rotation_error_relative_not_per_axis():
    # Same relative rotation, applied after very different orientations: the same error.
    base = [about([0, 0, 1], 0), about([1, 0, 0], 120), about([0.3, -1, 2], 77)]
    delta = about([0, 1, 0], 5)
    errors = [float(rotation_error_deg(t3q.qmult(q, delta), q)) for q in base]
    np.testing.assert_allclose(errors, 5.0, rtol=1e-9)


def test_errors_broadcast_over_rows():
    q_est = np.stack([about([0, 0, 1], a) for a in (0, 10, 20)])
    np.testing.assert_allclose(rotation_error_deg(q_est, [1, 0, 0, 0]), [0, 10, 20], atol=1e-9)
    est = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(translation_error_m(est, [1.0, 2.0, 7.0]), [4.0, math.sqrt(54)])


@pytest.mark.parametrize(
    "stamp, position, quat, message",
    [
        (-1, (0, 0, 0), (1, 0, 0, 0), "negative"),
        (0, (0, float("nan"), 0), (1, 0, 0, 0), "position"),
        (0, (0, 0), (1, 0, 0, 0), "3"),
        (0, (0, 0, 0), (0, 0, 0, 0), "zero quaternion"),
        (0, (0, 0, 0), (1, 0, 0, float("inf")), "not finite"),
        (0, (0, 0, 0), (1.1, 0, 0, 0), "norm"),
    ],
)
def test_stamped_pose_rejects_bad_values(stamp, position, quat, message):
    with pytest.raises(EvaluationError, match=message):
        StampedPose.create(stamp, position, quat)


def test_stamped_pose_is_canonical_and_read_only():
    p = StampedPose.create(5, [1, 2, 3], [-0.9999999, 0, 0, 0])
    assert p.quat_wxyz.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert not p.position_m.flags.writeable and not p.quat_wxyz.flags.writeable


# -------------------------------------------------------------------------------- matching


@pytest.mark.parametrize("ground_truth_first", [True, False])
def test_exact_stamps_match_in_either_order(ground_truth_first):
    matcher = StampMatcher(0.0005)
    gt = pose(1_000, (1.0, 2.0, 3.0))
    est = pose(1_000, (1.0, 2.0, 3.5), about([0, 0, 1], 3))
    if ground_truth_first:
        assert matcher.add_ground_truth(gt) is None
        match = matcher.add_estimate(est)
    else:
        assert matcher.add_estimate(est) is None
        match = matcher.add_ground_truth(gt)
    assert match is not None and match.ground_truth is gt and match.estimate is est
    assert math.isclose(match.translation_error_m, 0.5)
    assert math.isclose(match.rotation_error_deg, 3.0)
    assert match.stamp_ns == 1_000
    assert (matcher.unmatched_estimates, matcher.unmatched_ground_truth) == (0, 0)
    assert matcher.matches == [match]


@pytest.mark.parametrize(
    "tolerance_s, estimate_stamp_ns, matched",
    [
        (0.0, 10_000_000, True),
        (0.0, 10_000_001, False),
        (0.0005, 10_500_000, True),
        (0.0005, 9_500_000, True),
        (0.0005, 10_500_001, False),
        (0.0005, 9_499_999, False),
    ],
)
def test_tolerance_is_inclusive(tolerance_s, estimate_stamp_ns, matched):
    matcher = match_by_stamp([pose(10_000_000)], [pose(estimate_stamp_ns)], tolerance_s)
    assert len(matcher.matches) == int(matched)
    assert matcher.unmatched_estimates == matcher.unmatched_ground_truth == int(not matched)


def test_nearest_unmatched_stamp_wins_and_each_pose_matches_once():
    ms = 1_000_000
    gt = [pose(t * ms, (t, 0.0, 0.0)) for t in (10, 20, 30, 40)]
    estimates = [
        pose(21 * ms),  # nearest 20
        pose(19 * ms),  # 20 is taken; 10 and 30 are too far
        pose(29 * ms),  # 30
        pose(30 * ms),  # 30 is taken; 40 is too far
        pose(99 * ms),  # nothing near
    ]
    matcher = match_by_stamp(gt, estimates, 0.002)
    pairs = [(m.ground_truth.stamp_ns // ms, m.estimate.stamp_ns // ms) for m in matcher.matches]
    assert pairs == [(20, 21), (30, 29)]
    assert matcher.unmatched_estimates == 3
    assert matcher.unmatched_ground_truth == 2


def test_duplicate_stamps_match_first_come_first_served():
    matcher = StampMatcher(0.0)
    first, second = pose(7, (1.0, 0.0, 0.0)), pose(7, (2.0, 0.0, 0.0))
    matcher.add_ground_truth(first)
    matcher.add_ground_truth(second)
    assert matcher.add_estimate(pose(7)).ground_truth is first
    assert matcher.add_estimate(pose(7)).ground_truth is second
    assert matcher.add_estimate(pose(7)) is None
    assert matcher.unmatched_estimates == 1


@pytest.mark.parametrize("tolerance", [-0.001, float("nan"), float("inf")])
def test_matcher_rejects_bad_tolerance(tolerance):
    with pytest.raises(EvaluationError, match="max_stamp_difference_s"):
        StampMatcher(tolerance)


# -------------------------------------------------------------------------- running median


@pytest.mark.parametrize("count", [1, 2, 3, 10, 101, 1000])
def test_running_median_equals_numpy_at_every_step(count):
    rng = np.random.default_rng(count)
    values = rng.exponential(size=count).round(2)  # repeated values too
    median = RunningMedian()
    for i, v in enumerate(values, start=1):
        median.add(v)
        assert median.median == pytest.approx(np.median(values[:i]), abs=0)
    assert len(median) == count


def test_running_median_empty_and_bad_values():
    median = RunningMedian()
    assert math.isnan(median.median)
    with pytest.raises(EvaluationError, match="non-finite"):
        median.add(float("nan"))


# --------------------------------------------------------------------------------- summary


def _matches(count=5, offset=(0.1, 0.0, 0.0), degrees=2.0, start_ns=1_700_000_000_123_456_789):
    gt, est = [], []
    for i in range(count):
        stamp = start_ns + i * 100_000_000
        position = np.array([math.cos(i), math.sin(i), 0.05 * i])
        quat = about([0, 0, 1], 20 * i)
        gt.append(pose(stamp, position, quat))
        est.append(pose(stamp, position + offset, t3q.qmult(quat, about([1, 0, 0], degrees))))
    return match_by_stamp(gt, est, 0.0005)


def test_summary_values_and_thresholds():
    matcher = _matches(offset=(0.3, 0.0, 0.4), degrees=2.0)
    matcher.add_estimate(pose(1))
    summary = summarize(matcher.matches, matcher.unmatched_estimates, 0)
    assert summary["count"] == 5 and summary["unmatched_estimates"] == 1
    for key in ("median_translation_m", "mean_translation_m", "max_translation_m"):
        assert summary[key] == pytest.approx(0.5)
    for key in ("median_rotation_deg", "mean_rotation_deg", "max_rotation_deg"):
        assert summary[key] == pytest.approx(2.0)
    assert summary["share_5cm_5deg"] == 0.0
    assert summary["share_25cm_2deg"] == 0.0
    assert summary["share_50cm_5deg"] == 1.0
    assert summary["share_5m_10deg"] == 1.0
    line = summary_line(summary, {"median_translation_m": 0.4, "median_rotation_deg": 1.5})
    assert "5 matched: median 0.500 m, 2.00 deg" in line
    assert "reference median 0.400 m, 1.50 deg" in line
    assert "unmatched: 1 estimate(s), 0 ground-truth pose(s)" in line


def test_summary_of_nothing_is_json_without_nan():
    summary = summarize([], 2, 3)
    assert summary["count"] == 0 and summary["median_translation_m"] is None
    json.dumps(summary, allow_nan=False)
    assert summary_line(summary).startswith("0 matched poses; unmatched: 2 estimate(s)")


def test_format_stamp_is_exact():
    assert format_stamp(1_700_000_000_000_000_001) == "1700000000.000000001"
    assert format_stamp(5) == "0.000000005"


def test_reference_summary_reads_the_offline_keys(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(
        json.dumps({"count": 9, "median_translation_m": 0.25, "median_rotation_deg": 3})
    )
    assert read_reference_summary(path) == {
        "median_translation_m": 0.25,
        "median_rotation_deg": 3.0,
    }


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        ("{", ":1: not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"median_rotation_deg": 1}', "median_translation_m must be a number, got None"),
        ('{"median_translation_m": "0.2", "median_rotation_deg": 1}', "got '0.2'"),
        ('{"median_translation_m": 0.2, "median_rotation_deg": -1}', "finite and >= 0"),
        ('{"median_translation_m": NaN, "median_rotation_deg": 1}', "finite and >= 0"),
    ],
)
def test_reference_summary_malformed(tmp_path, content, message):
    path = tmp_path / "ref.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(EvaluationError, match=message):
        read_reference_summary(path)


# --------------------------------------------------------------------------------- outputs


def test_outputs_csv_json_and_plots(tmp_path):
    matcher = _matches(count=6, offset=(0.0, 0.2, 0.0), degrees=4.0)
    summary = summarize(matcher.matches, 0, 0)
    out = tmp_path / "new" / "eval"
    written, note = write_outputs(out, matcher.matches, summary)
    assert note == ""
    assert sorted(p.name for p in written) == sorted(
        ["errors.csv", "summary.json", "trajectory.png", "errors_over_time.png", "error_cdf.png"]
    )
    assert json.loads((out / "summary.json").read_text()) == summary
    for name in ("trajectory.png", "errors_over_time.png", "error_cdf.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, name

    with open(out / "errors.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 6
    assert rows[0]["stamp_s"] == "1700000000.123456789"
    for row, m in zip(rows, matcher.matches, strict=True):
        gt = [float(row[k]) for k in ("gt_x_m", "gt_y_m", "gt_z_m")]
        est = [float(row[k]) for k in ("est_qw", "est_qx", "est_qy", "est_qz")]
        assert gt == m.ground_truth.position_m.tolist()
        assert est == m.estimate.quat_wxyz.tolist()
        assert float(row["t_err_m"]) == pytest.approx(0.2)
        assert float(row["r_err_deg"]) == pytest.approx(4.0)
    assert not list(out.glob("*.tmp"))


def test_outputs_without_matches_write_csv_and_summary_only(tmp_path):
    written, note = write_outputs(tmp_path, [], summarize([], 1, 0))
    assert [p.name for p in written] == ["errors.csv", "summary.json"]
    assert "no matched poses" in note
    assert (tmp_path / "errors.csv").read_text().strip() == ",".join(CSV_COLUMNS)


def test_outputs_without_matplotlib_say_so_and_still_write_the_csv(tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    matcher = _matches(count=3)
    written, note = write_outputs(tmp_path, matcher.matches, summarize(matcher.matches, 0, 0))
    assert "matplotlib is not installed" in note
    assert [p.name for p in written] == ["errors.csv", "summary.json"]
    assert len((tmp_path / "errors.csv").read_text().splitlines()) == 4
    assert not list(tmp_path.glob("*.png"))


def test_outputs_to_an_unwritable_place_raise(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(EvaluationError, match="cannot write the evaluation to"):
        write_outputs(blocker / "eval", [], summarize([], 0, 0))
