"""posenet_core.matching: stamped poses, matching by stamp, the running median (tests moved
from test/test_pose_matching.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import transforms3d.quaternions as t3q

from posenet_core.errors import EvaluationError
from posenet_core.matching import (
    RunningMedian,
    StampedPose,
    StampMatcher,
    format_stamp,
    match_by_stamp,
)


def about(axis, degrees) -> np.ndarray:
    return t3q.axangle2quat(axis, math.radians(degrees))


def pose(stamp_ns, position=(0.0, 0.0, 0.0), quat=(1.0, 0.0, 0.0, 0.0)) -> StampedPose:
    return StampedPose.create(stamp_ns, position, quat)


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


def test_format_stamp_is_exact():
    assert format_stamp(1_700_000_000_000_000_001) == "1700000000.000000001"
    assert format_stamp(5) == "0.000000005"
