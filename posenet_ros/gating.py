"""Outlier gates for pose estimates: predicted uncertainty bounds and a maximum speed.

ROS-free, so the rules have plain unit tests; the node asks :class:`PoseGate` about every
estimate and publishes the pose only when it is accepted (a rejected one still goes out on
``estimate`` with ``accepted = false`` and the reason).

Gates, in this order (each off when its bound is 0):

1. ``max_position_stddev_m``: reject when the largest position standard deviation (x, y or z,
   from the published covariance) exceeds the bound;
2. ``max_rotation_stddev_rad``: the same for the rotation standard deviations;
3. ``max_speed_m_s``: reject when the camera centre moved further from the last *accepted*
   estimate than ``max_speed_m_s * dt + speed_gate_margin_m`` allows, ``dt`` being the
   difference of the images' stamps. The margin absorbs the estimates' own frame-to-frame
   jitter (at 30 Hz a 0.1 m jitter alone is 3 m/s).

The speed gate can lock itself out: if the reference estimate was itself an outlier, or the
robot was carried away, every later estimate is "too far". So the reference is dropped, and the
next estimate accepted as the new one, when

* ``speed_gate_max_rejections`` estimates in a row were rejected by the speed gate (0: never by
  count), or
* the reference is older than ``speed_gate_timeout_s`` by image stamp (0: never by age), or
* the stamps went backwards (a bag or a player restarted).

Estimates rejected by the uncertainty gates neither move the reference nor count towards that
reset: they say nothing about where the camera is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from posenet_ros.errors import PoseNetError

REASON_POSITION_STDDEV = "position_stddev"
REASON_ROTATION_STDDEV = "rotation_stddev"
REASON_SPEED = "speed"
REASONS: tuple[str, ...] = (REASON_POSITION_STDDEV, REASON_ROTATION_STDDEV, REASON_SPEED)


class GateConfigError(PoseNetError):
    """A gating parameter is out of range."""


@dataclass(frozen=True)
class GateConfig:
    """Gate bounds; 0 switches a gate (or a reset rule) off. See the module docstring."""

    max_position_stddev_m: float = 0.0
    max_rotation_stddev_rad: float = 0.0
    max_speed_m_s: float = 0.0
    speed_gate_margin_m: float = 0.5
    speed_gate_max_rejections: int = 15
    speed_gate_timeout_s: float = 2.0

    def check(self) -> str:
        """Empty string when every value is allowed, else what is wrong with the first bad one."""
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "speed_gate_max_rejections":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    return (
                        f"{item.name} must be an integer >= 0 (0: no reset by count), "
                        f"got {value!r}"
                    )
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"{item.name} must be a number, got {value!r}"
            if not math.isfinite(value) or value < 0.0:
                return f"{item.name} must be finite and >= 0 (0: off), got {value!r}"
        return ""

    @property
    def any_enabled(self) -> bool:
        """Whether any gate is on."""
        return (
            self.max_position_stddev_m > 0.0
            or self.max_rotation_stddev_rad > 0.0
            or self.max_speed_m_s > 0.0
        )


@dataclass(frozen=True)
class GateDecision:
    """The verdict on one estimate: ``reason`` is "" when accepted, else one of ``REASONS``;
    ``detail`` is one human-readable line with the numbers (for logs and diagnostics)."""

    accepted: bool
    reason: str = ""
    detail: str = ""


def uncertainty_decision(config: GateConfig, stddev: np.ndarray | list[float]) -> GateDecision:
    """The uncertainty gates alone (1 and 2 above): stateless, so any thread may ask.

    ``stddev`` holds the six standard deviations of the published covariance (x, y, z in m,
    rotations in rad). Counts nothing; :meth:`PoseGate.check` counts its own rejections.
    """
    sigma = np.asarray(stddev, dtype=np.float64).reshape(6)
    for reason, what, axes, unit, bound_name in (
        (REASON_POSITION_STDDEV, "position", sigma[:3], "m", "max_position_stddev_m"),
        (REASON_ROTATION_STDDEV, "rotation", sigma[3:], "rad", "max_rotation_stddev_rad"),
    ):
        largest, bound = float(np.max(axes)), getattr(config, bound_name)
        if bound > 0.0 and not largest <= bound:  # NaN is rejected too
            return GateDecision(
                False, reason, f"{what} stddev {largest:.3g} {unit} > {bound_name} {bound:g}"
            )
    return GateDecision(True)


class PoseGate:
    """Applies a :class:`GateConfig` to a stream of estimates; keeps the speed reference.

    Not thread-safe: one caller (the node's inference worker). The counters are plain ints
    that a diagnostics timer may read at any time.
    """

    def __init__(self, config: GateConfig | None = None) -> None:
        self.config = GateConfig()
        self.rejected = dict.fromkeys(REASONS, 0)
        self.speed_resets = 0
        self._reference_stamp_ns: int | None = None
        self._reference_position_m: np.ndarray | None = None
        self._speed_rejections_in_a_row = 0
        self.configure(config or GateConfig())

    def configure(self, config: GateConfig) -> None:
        """Use new bounds from the next estimate on; raises GateConfigError on a bad value."""
        reason = config.check()
        if reason:
            raise GateConfigError(reason)
        self.config = config

    def reset(self) -> None:
        """Forget the speed reference: the next estimate passes the speed gate."""
        self._reference_stamp_ns = None
        self._reference_position_m = None
        self._speed_rejections_in_a_row = 0

    def check(
        self, stamp_ns: int, position_m: np.ndarray, stddev: np.ndarray | list[float]
    ) -> GateDecision:
        """Accept or reject the estimate taken at ``stamp_ns`` (image stamp, ns).

        ``position_m`` is the camera centre (3,) in the scene frame, ``stddev`` the six standard
        deviations of the published covariance (x, y, z in m, rotations in rad). An accepted
        estimate becomes the speed gate's reference.
        """
        cfg = self.config
        position = np.asarray(position_m, dtype=np.float64).reshape(3)
        verdict = uncertainty_decision(cfg, stddev)
        if not verdict.accepted:
            return self._reject(verdict.reason, verdict.detail)
        if cfg.max_speed_m_s > 0.0 and self._reference_position_m is not None:
            dt_s = (int(stamp_ns) - int(self._reference_stamp_ns)) * 1e-9
            if dt_s < 0.0:
                self._reset_reference()  # time went backwards: a replay restarted
            elif cfg.speed_gate_timeout_s > 0.0 and dt_s > cfg.speed_gate_timeout_s:
                self._reset_reference()
            else:
                jump_m = float(np.linalg.norm(position - self._reference_position_m))
                allowed_m = cfg.max_speed_m_s * dt_s + cfg.speed_gate_margin_m
                if jump_m > allowed_m:
                    self._speed_rejections_in_a_row += 1
                    if (
                        cfg.speed_gate_max_rejections > 0
                        and self._speed_rejections_in_a_row > cfg.speed_gate_max_rejections
                    ):
                        self._reset_reference()
                    else:
                        return self._reject(
                            REASON_SPEED,
                            f"jumped {jump_m:.3g} m in {dt_s:.3g} s since the last accepted "
                            f"estimate; max_speed_m_s {cfg.max_speed_m_s:g} and "
                            f"speed_gate_margin_m {cfg.speed_gate_margin_m:g} allow "
                            f"{allowed_m:.3g} m",
                        )
        self._reference_stamp_ns = int(stamp_ns)
        self._reference_position_m = position.copy()
        self._speed_rejections_in_a_row = 0
        return GateDecision(True)

    def _reset_reference(self) -> None:
        self.speed_resets += 1
        self.reset()

    def _reject(self, reason: str, detail: str) -> GateDecision:
        self.rejected[reason] += 1
        return GateDecision(False, reason, detail)
