"""The pose evaluator: scores a relocalizer's estimates against ground truth while they stream.

Subscribes  ``pose`` (geometry_msgs/PoseStamped, the estimates; ``estimate_topic``) and
            ``ground_truth/pose`` (PoseStamped, e.g. from ``dataset_player``;
            ``ground_truth_topic``), both reliable
Matches the two streams by header stamp (the relocalizer copies the image stamp, the player gives
image and ground truth the same one), logs the running median errors every ``print_every``
matches, and at the end (SIGINT, ``expected_count`` matches, or ``idle_timeout_s`` without a
message) logs a summary line and writes ``summary.json``, ``errors.csv``, ``trajectory.png``,
``errors_over_time.png`` and ``error_cdf.png`` into ``output_dir``.
The matching and error maths are posenet_core's (``posenet_core.matching``, ``.metrics``), the
summary and files ``posenet_ros.evaluation``'s (no ROS).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import rclpy
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node
from rclpy.task import Future

from posenet_core.errors import EvaluationError
from posenet_core.matching import MatchedPose, RunningMedian, StampedPose, StampMatcher
from posenet_ros.errors import PoseNetError
from posenet_ros.evaluation import (
    read_reference_summary,
    summarize,
    summary_line,
    write_outputs,
)
from posenet_ros.ros_common import declare_checked, reliable_qos, run_node, spin_until_stopped
from posenet_ros.ros_common import descriptor as make_descriptor
from posenet_ros.stats import RateLimiter

# Reliable and deep enough for a burst: a pose lost is a pose not scored. Matches the
# relocalizer's reliable outputs and the player's reliable ground truth.
POSE_QOS = reliable_qos(100)
EXIT_WRITE_FAILURE = 1
_NS_PER_S = 1_000_000_000


def _descriptor(description: str, kind: int, constraints: str = "") -> ParameterDescriptor:
    # Read-only: configured once at start-up; a change would not be applied.
    return make_descriptor(description, kind, read_only=True, constraints=constraints)


def pose_from_msg(msg: PoseStamped) -> StampedPose:
    """The message's stamp and pose as a validated :class:`StampedPose` (raises
    EvaluationError for a non-finite position or a non-unit quaternion)."""
    stamp_ns = msg.header.stamp.sec * _NS_PER_S + msg.header.stamp.nanosec
    p, o = msg.pose.position, msg.pose.orientation
    return StampedPose.create(stamp_ns, (p.x, p.y, p.z), (o.w, o.x, o.y, o.z))


class PoseEvaluatorNode(Node):
    """Matches estimates to ground truth by stamp and accumulates their errors."""

    def __init__(self, **kwargs) -> None:
        super().__init__("pose_evaluator", **kwargs)
        p = self._p = declare_checked(self, self._parameter_table(), self._check_parameters)
        self.output_dir = Path(p["output_dir"]).absolute()
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PoseNetError(
                f"parameter output_dir: cannot create {self.output_dir}: {e}"
            ) from None
        if not os.access(self.output_dir, os.W_OK):
            raise PoseNetError(f"parameter output_dir: {self.output_dir} is not writable")
        self.reference = (
            read_reference_summary(p["reference_summary"]) if p["reference_summary"] else None
        )

        self.matcher = StampMatcher(p["max_stamp_difference_s"])
        self.median_translation = RunningMedian()
        self.median_rotation = RunningMedian()
        self.invalid = {"estimate": 0, "ground truth": 0}
        self.received = {"estimate": 0, "ground truth": 0}
        self._frames: dict[str, str] = {}
        self._frames_warned = False
        self._log_limit = RateLimiter(period_s=5.0)
        self._last_message = None
        self.done: Future = Future()

        estimate_topic = self.resolve_topic_name(p["estimate_topic"])
        ground_truth_topic = self.resolve_topic_name(p["ground_truth_topic"])
        if estimate_topic == ground_truth_topic:
            raise PoseNetError(
                f"estimate_topic and ground_truth_topic both resolve to {estimate_topic!r};"
                " the evaluator would compare a stream with itself"
            )
        self.create_subscription(PoseStamped, p["estimate_topic"], self._on_estimate, POSE_QOS)
        self.create_subscription(
            PoseStamped, p["ground_truth_topic"], self._on_ground_truth, POSE_QOS
        )
        if p["idle_timeout_s"] > 0.0:
            self.create_timer(min(0.2, p["idle_timeout_s"] / 2.0), self._check_idle)

        until = []
        if p["expected_count"] > 0:
            until.append(f"{p['expected_count']} matches")
        if p["idle_timeout_s"] > 0.0:
            until.append(f"{p['idle_timeout_s']:g} s without a pose")
        until.append("SIGINT")
        reference = ""
        if self.reference:
            reference = (
                f"; reference median {self.reference['median_translation_m']:.3f} m,"
                f" {self.reference['median_rotation_deg']:.2f} deg ({p['reference_summary']})"
            )
        self.get_logger().info(
            f"pose_evaluator: estimates '{estimate_topic}' vs ground truth"
            f" '{ground_truth_topic}', stamps within {p['max_stamp_difference_s']:g} s; results"
            f" to {self.output_dir} after {' or '.join(until)}{reference}"
        )

    # ----------------------------------------------------------------------------- parameters
    @staticmethod
    def _parameter_table() -> list[tuple[str, object, ParameterDescriptor]]:
        """(name, default, descriptor) of every parameter."""
        S, INT, D = (
            ParameterType.PARAMETER_STRING,
            ParameterType.PARAMETER_INTEGER,
            ParameterType.PARAMETER_DOUBLE,
        )
        params = [
            (
                "estimate_topic",
                "pose",
                _descriptor("Topic of the estimates (geometry_msgs/PoseStamped).", S),
            ),
            (
                "ground_truth_topic",
                "ground_truth/pose",
                _descriptor("Topic of the ground truth (geometry_msgs/PoseStamped).", S),
            ),
            (
                "max_stamp_difference_s",
                0.0005,
                _descriptor(
                    "Largest stamp difference of a matched estimate and ground-truth pose,"
                    " seconds. The relocalizer copies the image stamp, so the default only"
                    " absorbs rounding.",
                    D,
                    ">= 0",
                ),
            ),
            (
                "output_dir",
                "pose_evaluation",
                _descriptor(
                    "Folder for summary.json, errors.csv and the plots (created; files in it"
                    " with those names are replaced). Relative to the working directory.",
                    S,
                ),
            ),
            (
                "expected_count",
                0,
                _descriptor(
                    "Finish (write the results, exit 0) after this many matches; 0: run until"
                    " SIGINT or idle_timeout_s.",
                    INT,
                    ">= 0",
                ),
            ),
            (
                "idle_timeout_s",
                0.0,
                _descriptor(
                    "Finish when no pose has arrived for this long after the first one,"
                    " seconds; 0: never.",
                    D,
                    ">= 0",
                ),
            ),
            (
                "print_every",
                10,
                _descriptor("Log the running median errors every N matches.", INT, ">= 1"),
            ),
            (
                "reference_summary",
                "",
                _descriptor(
                    "Optional JSON with median_translation_m and median_rotation_deg (e.g. the"
                    " offline evaluation's summary.json), printed beside the running medians.",
                    S,
                ),
            ),
        ]
        return params

    @staticmethod
    def _check_parameters(p: dict) -> str:
        for name in ("estimate_topic", "ground_truth_topic", "output_dir"):
            if not p[name]:
                return f"parameter {name} is empty"
        for name in ("max_stamp_difference_s", "idle_timeout_s"):
            if not (math.isfinite(p[name]) and p[name] >= 0.0):
                return f"parameter {name} is {p[name]!r}; must be finite and >= 0 (seconds)"
        if p["expected_count"] < 0:
            return f"parameter expected_count is {p['expected_count']}; must be >= 0"
        if p["print_every"] < 1:
            return f"parameter print_every is {p['print_every']}; must be >= 1"
        return ""

    # ------------------------------------------------------------------------------- streams
    def _convert(self, msg: PoseStamped, stream: str) -> StampedPose | None:
        self._last_message = time.monotonic()
        self.received[stream] += 1
        self._check_frame(stream, msg.header.frame_id)
        try:
            return pose_from_msg(msg)
        except EvaluationError as e:
            self.invalid[stream] += 1
            allow, suppressed = self._log_limit.allow("invalid:" + stream)
            if allow:
                more = f" ({suppressed} more like it suppressed)" if suppressed else ""
                stamp = msg.header.stamp
                self.get_logger().error(
                    f"ignored {stream} stamped {stamp.sec}.{stamp.nanosec:09d}: {e}{more}"
                )
            return None

    def _check_frame(self, stream: str, frame_id: str) -> None:
        self._frames.setdefault(stream, frame_id)
        if self._frames_warned or len(self._frames) < 2:
            return
        if self._frames["estimate"] != self._frames["ground truth"]:
            self._frames_warned = True
            self.get_logger().warning(
                f"estimates are in frame '{self._frames['estimate']}' but the ground truth in"
                f" '{self._frames['ground truth']}'; the errors assume they are the same frame"
            )

    def _on_estimate(self, msg: PoseStamped) -> None:
        pose = self._convert(msg, "estimate")
        if pose is not None:
            self._on_match(self.matcher.add_estimate(pose))

    def _on_ground_truth(self, msg: PoseStamped) -> None:
        pose = self._convert(msg, "ground truth")
        if pose is not None:
            self._on_match(self.matcher.add_ground_truth(pose))

    def _on_match(self, match: MatchedPose | None) -> None:
        if match is None:
            return
        self.median_translation.add(match.translation_error_m)
        self.median_rotation.add(match.rotation_error_deg)
        count = len(self.matcher.matches)
        if count % self._p["print_every"] == 0:
            self.get_logger().info(self._running_line(match))
        if 0 < self._p["expected_count"] <= count and not self.done.done():
            self.done.set_result(0)

    def _running_line(self, last: MatchedPose) -> str:
        text = (
            f"{len(self.matcher.matches)} matched: running median"
            f" {self.median_translation.median:.3f} m, {self.median_rotation.median:.2f} deg"
        )
        if self.reference:
            text += (
                f" (reference {self.reference['median_translation_m']:.3f} m,"
                f" {self.reference['median_rotation_deg']:.2f} deg)"
            )
        return (
            f"{text}; last {last.translation_error_m:.3f} m, {last.rotation_error_deg:.2f} deg;"
            f" waiting: {self.matcher.unmatched_estimates} estimate(s),"
            f" {self.matcher.unmatched_ground_truth} ground-truth pose(s)"
        )

    def _check_idle(self) -> None:
        if self._last_message is None or self.done.done():
            return
        if time.monotonic() - self._last_message >= self._p["idle_timeout_s"]:
            self.get_logger().info(
                f"no pose for {self._p['idle_timeout_s']:g} s: finishing the evaluation"
            )
            self.done.set_result(0)

    # -------------------------------------------------------------------------------- finish
    def summary(self) -> dict:
        """The summary as written to summary.json."""
        summary = summarize(
            self.matcher.matches,
            self.matcher.unmatched_estimates,
            self.matcher.unmatched_ground_truth,
        )
        summary.update(
            received_estimates=self.received["estimate"],
            received_ground_truth=self.received["ground truth"],
            invalid_estimates=self.invalid["estimate"],
            invalid_ground_truth=self.invalid["ground truth"],
            max_stamp_difference_s=self._p["max_stamp_difference_s"],
            estimate_topic=self.resolve_topic_name(self._p["estimate_topic"]),
            ground_truth_topic=self.resolve_topic_name(self._p["ground_truth_topic"]),
        )
        if self.reference:
            summary["reference"] = {"path": self._p["reference_summary"], **self.reference}
        return summary

    def finish(self) -> int:
        """Log the final summary line and write the results; 0, or 1 if writing failed."""
        summary = self.summary()
        log = rclpy.logging.get_logger("pose_evaluator")
        log.info("final: " + summary_line(summary, self.reference))
        try:
            written, note = write_outputs(self.output_dir, self.matcher.matches, summary)
        except EvaluationError as e:
            log.error(str(e))
            return EXIT_WRITE_FAILURE
        if note:
            log.warning(note)
        log.info(f"wrote {', '.join(p.name for p in written)} to {self.output_dir}")
        return 0


def _evaluate(node: PoseEvaluatorNode) -> int:
    spin_until_stopped(node, node.done)
    # Results are written however the run ended: a SIGINT is the normal end of a live run.
    return node.finish()


def main(args: list[str] | None = None) -> int:
    """Evaluate until done; 0 on success, 2 when start-up fails, 1 if results cannot be written."""
    return run_node(
        "pose_evaluator", PoseEvaluatorNode, _evaluate, double_example="0.5", args=args
    )


if __name__ == "__main__":
    sys.exit(main())
