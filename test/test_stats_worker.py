"""ROS-free tests of the node's frame hand-off, counters and log rate limits."""

from __future__ import annotations

import threading

import pytest

from posenet_ros.frame_worker import LatestFrameWorker
from posenet_ros.stats import REJECT_DECODE, REJECT_POSE, NodeStats, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_worker_refuses_frames_while_busy_and_processes_the_next_one():
    release = threading.Event()
    started = threading.Event()
    done = []

    def process(item):
        started.set()
        release.wait(5)
        done.append(item)

    worker = LatestFrameWorker(process)
    try:
        assert worker.submit(1)
        assert started.wait(5)
        assert worker.busy
        assert not worker.submit(2), "a frame was queued behind the one in flight"
        assert not worker.submit(3)
        release.set()
        for _ in range(500):
            if not worker.busy:
                break
            threading.Event().wait(0.01)
        assert done == [1]
        started.clear()
        release.clear()
        assert worker.submit(4)
        assert started.wait(5)
        release.set()
    finally:
        worker.stop()
    assert done == [1, 4]


def test_worker_survives_an_exception_in_process():
    calls = []

    def process(item):
        calls.append(item)
        raise RuntimeError("boom")

    worker = LatestFrameWorker(process)
    try:
        assert worker.submit("a")
        for _ in range(500):
            if not worker.busy:
                break
            threading.Event().wait(0.01)
        assert worker.submit("b")
    finally:
        worker.stop()
    assert calls == ["a", "b"]


def test_rate_limiter_lets_one_message_per_period_per_key_and_counts_the_rest():
    clock = FakeClock()
    limit = RateLimiter(period_s=5.0, clock=clock)
    assert limit.allow("decode") == (True, 0)
    assert limit.allow("decode") == (False, 0)
    assert limit.allow("decode") == (False, 0)
    assert limit.allow("pose") == (True, 0), "keys are independent"
    clock.t = 5.0
    assert limit.allow("decode") == (True, 2)
    assert limit.allow("decode") == (False, 0)


def test_stats_rates_latencies_and_window_reset():
    clock = FakeClock()
    stats = NodeStats(clock=clock)
    for _ in range(30):
        stats.on_received()
    for ms in (10.0, 20.0, 30.0):
        stats.on_published(inference_ms=ms, overhead_ms=1.0, latency_ms=ms + 5)
    stats.on_dropped_busy()
    stats.on_rejected(REJECT_DECODE, "bad encoding")
    clock.t = 2.0
    s = stats.snapshot()
    assert s.input_rate_hz == pytest.approx(15.0)
    assert s.output_rate_hz == pytest.approx(1.5)
    assert s.inference_ms_median == pytest.approx(20.0)
    assert s.latency_ms_median == pytest.approx(25.0)
    assert s.dropped_busy == 1
    assert s.rejected[REJECT_DECODE] == 1 and s.rejected[REJECT_POSE] == 0
    assert s.rejected_in_window == 1
    assert s.last_error == "bad encoding"
    clock.t = 3.0
    s2 = stats.snapshot()
    assert s2.input_rate_hz == 0.0 and s2.rejected_in_window == 0
    assert s2.received == 30, "lifetime counters are not reset"


def test_stats_rejects_unknown_reason():
    with pytest.raises(ValueError, match="unknown reject reason"):
        NodeStats().on_rejected("cosmic_rays", "x")
