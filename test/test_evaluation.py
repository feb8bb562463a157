"""posenet_ros.evaluation: the evaluator's summary, reference summary, CSV/JSON and plots."""

from __future__ import annotations

import csv
import json
import math
import sys

import numpy as np
import pytest
import transforms3d.quaternions as t3q

from posenet_core.errors import EvaluationError
from posenet_core.matching import StampedPose, match_by_stamp
from posenet_ros.evaluation import (
    CSV_COLUMNS,
    read_reference_summary,
    summarize,
    summary_line,
    write_outputs,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def about(axis, degrees) -> np.ndarray:
    return t3q.axangle2quat(axis, math.radians(degrees))


def pose(stamp_ns, position=(0.0, 0.0, 0.0), quat=(1.0, 0.0, 0.0, 0.0)) -> StampedPose:
    return StampedPose.create(stamp_ns, position, quat)


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
