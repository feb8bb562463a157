"""gating: the uncertainty and speed gates, the speed gate's reference and its lock-out resets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from posenet_ros.gating import (
    REASON_POSITION_STDDEV,
    REASON_ROTATION_STDDEV,
    REASON_SPEED,
    GateConfig,
    GateConfigError,
    PoseGate,
)

S = 1_000_000_000  # ns per second
SMALL = [0.1, 0.1, 0.1, 0.01, 0.01, 0.01]


def at(x: float) -> np.ndarray:
    return np.array([x, 0.0, 0.0])


def gate_with_reference(**config) -> PoseGate:
    """A gate whose speed gate allows 1 m/s and no margin (``config`` adds to or overrides
    that), after it accepted its first estimate, the speed reference: x = 0 at t = 0."""
    gate = PoseGate(GateConfig(**{"max_speed_m_s": 1.0, "speed_gate_margin_m": 0.0, **config}))
    assert gate.check(0, at(0.0), SMALL).accepted
    return gate


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"max_position_stddev_m": -1.0}, ["max_position_stddev_m", ">= 0"]),
        ({"max_rotation_stddev_rad": math.nan}, ["max_rotation_stddev_rad", "finite"]),
        ({"max_speed_m_s": math.inf}, ["max_speed_m_s"]),
        ({"speed_gate_margin_m": "1"}, ["speed_gate_margin_m", "number"]),
        ({"speed_gate_timeout_s": True}, ["speed_gate_timeout_s"]),
        ({"speed_gate_max_rejections": -2}, ["speed_gate_max_rejections", "integer >= 0"]),
        ({"speed_gate_max_rejections": 2.5}, ["speed_gate_max_rejections"]),
    ],
)
def test_bad_config_is_refused_with_the_name_and_value(changes, words):
    config = GateConfig(**changes)
    reason = config.check()
    for word in words:
        assert word in reason
    with pytest.raises(GateConfigError, match=list(changes)[0]):
        PoseGate(config)


def test_default_config_is_valid_and_off():
    assert GateConfig().check() == ""
    assert not GateConfig().any_enabled
    assert GateConfig(max_speed_m_s=1.0).any_enabled
    gate = PoseGate()
    for i in range(5):  # anything goes when every gate is off
        assert gate.check(i * S // 30, at(100.0 * (-1) ** i), [1e3] * 6).accepted


@pytest.mark.parametrize(
    "config, stddev, reason",
    [
        (GateConfig(max_position_stddev_m=0.5), [0.5, 0.1, 0.1, 9, 9, 9], ""),
        (GateConfig(max_position_stddev_m=0.5), [0.1, 0.51, 0.1, 0, 0, 0], REASON_POSITION_STDDEV),
        (
            GateConfig(max_position_stddev_m=0.5),
            [0.1, 0.1, math.nan, 0, 0, 0],
            REASON_POSITION_STDDEV,
        ),
        (GateConfig(max_rotation_stddev_rad=0.1), [9, 9, 9, 0.1, 0.1, 0.1], ""),
        (
            GateConfig(max_rotation_stddev_rad=0.1),
            [0, 0, 0, 0.0, 0.0, 0.2],
            REASON_ROTATION_STDDEV,
        ),
        (
            GateConfig(max_position_stddev_m=0.5, max_rotation_stddev_rad=0.1),
            [1, 1, 1, 1, 1, 1],
            REASON_POSITION_STDDEV,  # the position gate is asked first
        ),
    ],
)
def test_uncertainty_gates(config, stddev, reason):
    gate = PoseGate(config)
    decision = gate.check(0, at(0.0), stddev)
    assert decision.accepted == (reason == "")
    assert decision.reason == reason
    if reason:
        assert gate.rejected[reason] == 1
        assert "stddev" in decision.detail


def test_speed_gate_allows_speed_times_dt_plus_margin():
    gate = gate_with_reference(max_speed_m_s=2.0, speed_gate_margin_m=0.1)
    # 0.5 s later: 2 m/s * 0.5 s + 0.1 m = 1.1 m allowed.
    assert gate.check(S // 2, at(1.09), SMALL).accepted
    decision = gate.check(S, at(1.09 + 1.2), SMALL)  # 1.2 m in 0.5 s
    assert not decision.accepted and decision.reason == REASON_SPEED
    assert "1.2 m in 0.5 s" in decision.detail and "1.1 m" in decision.detail
    assert gate.rejected[REASON_SPEED] == 1


def test_speed_is_measured_from_the_last_accepted_estimate():
    gate = gate_with_reference()
    assert not gate.check(S // 10, at(5.0), SMALL).accepted  # outlier
    # 1 s after the reference (not 0.9 s after the outlier): 1 m is allowed from x = 0.
    assert gate.check(S, at(0.95), SMALL).accepted
    assert not gate.check(S + S // 10, at(0.95 + 0.2), SMALL).accepted


def test_speed_gate_resets_after_max_rejections_in_a_row():
    gate = gate_with_reference(speed_gate_max_rejections=3)  # the reference is the outlier
    stamps = [S * k // 30 for k in range(1, 6)]
    decisions = [gate.check(t, at(10.0), SMALL) for t in stamps]
    assert [d.accepted for d in decisions] == [False, False, False, True, True]
    assert gate.speed_resets == 1 and gate.rejected[REASON_SPEED] == 3


def test_uncertainty_rejections_do_not_count_towards_the_speed_reset():
    gate = gate_with_reference(max_position_stddev_m=0.5, speed_gate_max_rejections=2)
    far = at(10.0)
    results = [
        gate.check(1 * S // 30, far, SMALL).reason,
        gate.check(2 * S // 30, far, [1.0] * 6).reason,  # uncertain: says nothing about speed
        gate.check(3 * S // 30, far, SMALL).reason,
        gate.check(4 * S // 30, far, SMALL).reason,
    ]
    assert results == [REASON_SPEED, REASON_POSITION_STDDEV, REASON_SPEED, ""]


@pytest.mark.parametrize(
    "second_stamp_ns, accepted, resets",
    [
        (S // 10, False, 0),  # 0.1 s later, 5 m away: too fast
        (3 * S, True, 1),  # the reference is older than the 2 s timeout
        (-S, True, 1),  # the stamps went backwards: a replay restarted
    ],
)
def test_speed_gate_reference_timeout_and_time_going_backwards(second_stamp_ns, accepted, resets):
    gate = gate_with_reference(speed_gate_timeout_s=2.0)
    assert gate.check(second_stamp_ns, at(5.0), SMALL).accepted is accepted
    assert gate.speed_resets == resets


def test_without_resets_the_speed_gate_keeps_rejecting():
    gate = gate_with_reference(speed_gate_max_rejections=0, speed_gate_timeout_s=0.0)
    assert not any(gate.check(S * k // 30, at(100.0), SMALL).accepted for k in range(1, 100))
    assert gate.speed_resets == 0


def test_configure_keeps_the_reference_and_refuses_bad_values():
    gate = gate_with_reference()
    with pytest.raises(GateConfigError):
        gate.configure(GateConfig(max_speed_m_s=-1.0))
    assert gate.config.max_speed_m_s == 1.0
    gate.configure(GateConfig(max_speed_m_s=100.0, speed_gate_margin_m=0.0))
    assert gate.check(S // 10, at(5.0), SMALL).accepted
    gate.configure(GateConfig(max_speed_m_s=1.0, speed_gate_margin_m=0.0))
    gate.reset()
    assert gate.check(S // 5, at(-50.0), SMALL).accepted  # no reference after reset()
