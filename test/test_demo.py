"""The README's demo, shortened by flags, so it cannot rot: every step runs, live = offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_end_to_end_and_live_matches_offline(tmp_path):
    result_json = tmp_path / "result.json"
    cmd = [
        sys.executable, str(ROOT / "scripts" / "demo.py"),
        "--output", str(tmp_path / "demo"),
        "--train-frames", "40", "--test-frames", "12", "--width", "320", "--height", "240",
        "--model", "posenet-tiny", "--epochs", "2", "--resize", "64", "--crop", "64,84",
        "--frozen-blocks", "1", "--threads", "2", "--json", str(result_json),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(result_json.read_text())
    live, onnx = result["live"], result["offline_onnx"]
    assert live["count"] == onnx["count"] == 12, "every test frame must be relocalized live"
    assert result["live_matches_offline"]
    for key in ("median_translation_m", "median_rotation_deg"):
        assert abs(live[key] - onnx[key]) <= 1e-3 * max(1.0, onnx[key])
    assert (tmp_path / "demo" / "model.onnx").exists()
    assert (tmp_path / "demo" / "live" / "trajectory.png").exists()
    assert "live vs offline ONNX within 5%: yes" in done.stdout

    # A second run reuses every output and is quick.
    again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert "exists: kept" in again.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "--epochs must be > 0"),
        (["--batch-size", "0"], "--batch-size must be > 0"),
        (["--train-frames", "-5"], "--train-frames must be > 0"),
        (["--lr", "0"], "--lr must be > 0"),
        (["--beta", "-1"], "--beta must be > 0"),
        (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
        (["--frozen-blocks", "-1"], "--frozen-blocks must be >= 0"),
        (["--epochs", "many"], "invalid int value"),
    ],
)
def test_bad_demo_arguments_exit_2_with_the_reason(tmp_path, args, message):
    cmd = [sys.executable, str(ROOT / "scripts" / "demo.py"), "--output", str(tmp_path), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr
    assert not any(tmp_path.iterdir()), "nothing may be written for bad arguments"
