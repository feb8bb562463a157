"""posenet_ros.playback: the dataset player's prefetch thread and loop timing (ROS-free; moved
from test/test_dataset_reader.py, whose format tests are core/tests/test_dataset_reader.py)."""

from __future__ import annotations

import math
import os
import queue
import subprocess
import sys
import threading

import pytest

from posenet_core.datasets import PoseRecord as DatasetFrame
from posenet_core.errors import DatasetError
from posenet_ros.playback import FramePrefetcher, loop_period_s


def _frames(tmp_path, count, timestamps=None):
    return [
        DatasetFrame(
            tmp_path / f"{i}.png",
            [float(i), 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            None if timestamps is None else timestamps[i],
        )
        for i in range(count)
    ]


def _drain(prefetcher, limit):
    items = []
    while len(items) < limit:
        item = prefetcher.next(timeout_s=10.0)
        if item is None:
            break
        items.append(item)
    return items


def test_prefetcher_plays_once_in_order_and_reports_load_errors(tmp_path):
    frames = _frames(tmp_path, 3)

    def load(frame):
        if frame.position_m[0] == 1.0:
            raise DatasetError("frame one is broken")
        return frame.image_path.name

    prefetcher = FramePrefetcher(frames, load, depth=1)
    try:
        items = _drain(prefetcher, 10)
    finally:
        prefetcher.stop()
    assert [(i.count, i.loop, i.index, i.payload, i.error) for i in items] == [
        (0, 0, 0, "0.png", ""),
        (1, 0, 1, None, "frame one is broken"),
        (2, 0, 2, "2.png", ""),
    ]


def test_prefetcher_loops_until_stopped(tmp_path):
    prefetcher = FramePrefetcher(_frames(tmp_path, 2), lambda f: f.image_path.name, loop=True)
    try:
        items = _drain(prefetcher, 5)
    finally:
        prefetcher.stop()
    assert [(i.count, i.loop, i.index) for i in items] == [
        (0, 0, 0),
        (1, 0, 1),
        (2, 1, 0),
        (3, 1, 1),
        (4, 2, 0),
    ]


def test_prefetcher_next_raises_empty_when_the_frame_is_not_ready(tmp_path):
    release = threading.Event()
    prefetcher = FramePrefetcher(_frames(tmp_path, 1), lambda f: release.wait(10.0))
    try:
        with pytest.raises(queue.Empty):
            prefetcher.next()
        release.set()
        assert prefetcher.next(timeout_s=10.0).payload is True
    finally:
        release.set()
        prefetcher.stop()


@pytest.mark.parametrize("frames, depth, message", [(0, 4, "no frames"), (2, 0, "depth 0")])
def test_prefetcher_bad_arguments(tmp_path, frames, depth, message):
    with pytest.raises(DatasetError, match=message):
        FramePrefetcher(_frames(tmp_path, frames), lambda f: None, depth=depth)


@pytest.mark.parametrize(
    "timestamps, expected",
    [([0.0, 0.1, 0.2, 0.3], 0.4), ([5.0], 1.0), ([1.0, 3.0], 4.0)],
)
def test_loop_period(tmp_path, timestamps, expected):
    frames = _frames(tmp_path, len(timestamps), timestamps)
    assert math.isclose(loop_period_s(frames), expected)


def test_loop_period_needs_timestamps(tmp_path):
    with pytest.raises(DatasetError, match="timestamps"):
        loop_period_s(_frames(tmp_path, 2))


def test_reader_does_not_import_ros_or_the_trainer():
    code = (
        "import sys, posenet_ros.playback, posenet_ros.evaluation;"
        "bad = [m for m in sys.modules if m.split('.')[0] in"
        " ('rclpy', 'posenet_train', 'matplotlib', 'torch')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stdout + result.stderr
