"""An outside client (outside_client.py: its own onnx model file, no import from this repository)
sends 640x480 rgb8, bgr8, rgba8 and mono8 frames to a relocalizer started with the README's
command and gets each one back on pose and /tf."""

from __future__ import annotations

import subprocess
import sys

from ros_harness import REPO_ROOT, next_domain_id, ros_env


def test_outside_client_gets_pose_and_tf_for_every_encoding():
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "test" / "outside_client.py")],
        env=ros_env(next_domain_id()),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for encoding in ("rgb8", "bgr8", "rgba8", "mono8"):
        assert f"{encoding}: pose and /tf received" in done.stdout, done.stdout
