"""Matching pose estimates to ground truth by stamp, online (without ROS).

Estimates and ground-truth poses arrive as two streams, in any order; :class:`StampMatcher`
pairs them by header stamp (the relocalizer copies the image stamp to its outputs and the
dataset player gives the image and its ground truth the same stamp, so by default stamps must be
equal to within half a millisecond). Each pose is matched at most once, to the nearest unmatched
stamp of the other stream within the tolerance. Poses follow the project's convention
(``T_world_camera``: camera centre in the scene frame, camera-to-world ``quat_wxyz``); the
errors are :mod:`posenet_core.metrics`'.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from posenet_core.errors import EvaluationError, InvalidPoseError
from posenet_core.geometry import normalize_quat_wxyz, validate_position
from posenet_core.metrics import rotation_error_deg, translation_error_m

__all__ = [
    "NS_PER_S",
    "MatchedPose",
    "RunningMedian",
    "StampMatcher",
    "StampedPose",
    "format_stamp",
    "match_by_stamp",
]

NS_PER_S = 1_000_000_000


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
        estimate = self._pair(pose, waiting=self._estimates, pending=self._ground_truth)
        return None if estimate is None else self._record(pose, estimate)

    def add_estimate(self, pose: StampedPose) -> MatchedPose | None:
        """Add an estimate; returns its match if a ground-truth pose with its stamp is waiting."""
        ground_truth = self._pair(pose, waiting=self._ground_truth, pending=self._estimates)
        return None if ground_truth is None else self._record(ground_truth, pose)

    def _pair(
        self, pose: StampedPose, *, waiting: _PendingPoses, pending: _PendingPoses
    ) -> StampedPose | None:
        """The pose of the other stream ``pose`` matches (taken out of ``waiting``), or None
        after adding ``pose`` to its own stream's ``pending`` poses."""
        partner = waiting.take_nearest(pose.stamp_ns, self.max_difference_ns)
        if partner is None:
            pending.add(pose)
        return partner

    def _record(self, ground_truth: StampedPose, estimate: StampedPose) -> MatchedPose:
        match = _match(ground_truth, estimate)
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
