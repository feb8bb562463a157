"""Counters, rates and latency windows the node reports on /diagnostics; and log rate limits.

ROS-free so the arithmetic has plain unit tests; the node turns ``NodeStats.snapshot()`` into a
``diagnostic_msgs/DiagnosticStatus``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Reasons a frame produced no pose. Each has its own counter and its own log rate limit.
REJECT_DECODE = "decode"
REJECT_INFERENCE = "inference"
REJECT_POSE = "invalid_pose"
# A valid estimate that an outlier gate refused (posenet_ros.gating): published on `estimate`
# with accepted = false, but not as a pose.
REJECT_GATED = "gated"
REJECT_REASONS = (REJECT_DECODE, REJECT_INFERENCE, REJECT_POSE, REJECT_GATED)


class RateLimiter:
    """Lets a message through per key at most once every ``period_s`` seconds.

    A broken camera sends the same bad frame 30 times a second; one line every few seconds says
    as much, and the suppressed count says how often it happened.
    """

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> tuple[bool, int]:
        """(whether to log now, how many were suppressed since the last one logged)."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False, 0
            self._last[key] = now
            return True, self._suppressed.pop(key, 0)


@dataclass(frozen=True)
class StatsSnapshot:
    """What the node reports for one diagnostics period (rates over that period)."""

    window_s: float
    input_rate_hz: float
    output_rate_hz: float
    inference_ms_median: float
    overhead_ms_median: float
    latency_ms_median: float
    latency_ms_p99: float
    received: int
    published: int
    dropped_busy: int
    rejected: dict[str, int]
    rejected_in_window: int
    last_error: str


def window_median(values: deque) -> float:
    """Median of a window's values; NaN for an empty window."""
    return float(np.median(values)) if values else float("nan")


def window_percentile(values: deque, q: float) -> float:
    """``q``-th percentile of a window's values; NaN for an empty window."""
    return float(np.percentile(values, q)) if values else float("nan")


class Window:
    """One diagnostics period: when it started, its event counts, and the last ``window_len``
    samples of each timing; :meth:`restart` begins the next period. Not locked: the stats class
    that owns it holds its own lock."""

    def __init__(
        self, start: float, window_len: int, counts: tuple[str, ...], samples: tuple[str, ...]
    ) -> None:
        self.start = start
        self.counts = dict.fromkeys(counts, 0)
        self.samples: dict[str, deque[float]] = {n: deque(maxlen=window_len) for n in samples}

    def seconds(self, now: float) -> float:
        """Length of the period up to ``now`` (never 0, so rates stay finite)."""
        return max(now - self.start, 1e-9)

    def restart(self, now: float) -> None:
        self.start = now
        self.counts = dict.fromkeys(self.counts, 0)
        for values in self.samples.values():
            values.clear()


class NodeStats:
    """Thread-safe counters (lifetime) and sliding windows (since the last snapshot)."""

    def __init__(self, window_len: int = 512, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.received = 0
        self.published = 0
        self.dropped_busy = 0
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)
        self.last_error = ""
        self._window = Window(
            clock(),
            window_len,
            counts=("received", "published", "rejected"),
            samples=("inference_ms", "overhead_ms", "latency_ms"),
        )

    def on_received(self) -> None:
        with self._lock:
            self.received += 1
            self._window.counts["received"] += 1

    def on_dropped_busy(self) -> None:
        with self._lock:
            self.dropped_busy += 1

    def on_rejected(self, reason: str, message: str) -> None:
        if reason not in self.rejected:
            raise ValueError(f"unknown reject reason {reason!r}; expected one of {REJECT_REASONS}")
        with self._lock:
            self.rejected[reason] += 1
            self._window.counts["rejected"] += 1
            self.last_error = message

    def on_published(self, inference_ms: float, overhead_ms: float, latency_ms: float) -> None:
        with self._lock:
            self.published += 1
            self._window.counts["published"] += 1
            self._window.samples["inference_ms"].append(inference_ms)
            self._window.samples["overhead_ms"].append(overhead_ms)
            self._window.samples["latency_ms"].append(latency_ms)

    def on_published_late(self) -> None:
        """A frame published after refinement: counted in the output rate, but kept out of the
        inference / latency windows, which describe the prior path."""
        with self._lock:
            self.published += 1
            self._window.counts["published"] += 1

    def snapshot(self, reset_window: bool = True) -> StatsSnapshot:
        """Lifetime counters plus rates and latency statistics since the previous snapshot."""
        now = self._clock()
        with self._lock:
            window = self._window
            window_s, counts, samples = window.seconds(now), window.counts, window.samples
            snap = StatsSnapshot(
                window_s=window_s,
                input_rate_hz=counts["received"] / window_s,
                output_rate_hz=counts["published"] / window_s,
                inference_ms_median=window_median(samples["inference_ms"]),
                overhead_ms_median=window_median(samples["overhead_ms"]),
                latency_ms_median=window_median(samples["latency_ms"]),
                latency_ms_p99=window_percentile(samples["latency_ms"], 99),
                received=self.received,
                published=self.published,
                dropped_busy=self.dropped_busy,
                rejected=dict(self.rejected),
                rejected_in_window=counts["rejected"],
                last_error=self.last_error,
            )
            if reset_window:
                window.restart(now)
        return snap
