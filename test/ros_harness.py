"""Helpers for tests that start the installed relocalizer and talk to it over real DDS.

Each test gets its own ROS_DOMAIN_ID (so concurrent runs never cross) and localhost-only
discovery, and waits on counts (matched endpoints, received messages), never on fixed sleeps.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

REPO_ROOT = Path(os.environ.get("POSENET_REPO_ROOT", Path(__file__).resolve().parents[1]))
PARAMS_FILE = REPO_ROOT / "config" / "relocalize.yaml"
FASTDDS_PROFILE = REPO_ROOT / "config" / "fastdds_large_images.xml"
# What relocalize.launch.py does, for the test peers in this process and the nodes they start:
# Fast DDS's default shared-memory segment loses most full-size frames (see the XML file).
os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(FASTDDS_PROFILE))

# Domains 1..100; start from the process id so two suites on one machine rarely collide.
_domains = itertools.count(os.getpid() % 50)


def next_domain_id() -> int:
    """A ROS_DOMAIN_ID for one test (FastDDS ports stay valid below 232)."""
    return 1 + next(_domains) % 100


def relocalizer_executable() -> str:
    """The installed executable (install/posenet_ros/lib/posenet_ros/relocalizer)."""
    installed = REPO_ROOT / "install" / "posenet_ros" / "lib" / "posenet_ros" / "relocalizer"
    if installed.exists():
        return str(installed)
    found = shutil.which("relocalizer")
    if not found:
        raise RuntimeError("relocalizer is not installed: run scripts/setup.sh")
    return found


def ros_env(domain_id: int) -> dict[str, str]:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    return env


class NodeProcess:
    """The relocalizer as a child process, started as `ros2 launch` would start it."""

    def __init__(
        self,
        domain_id: int,
        params: dict[str, object],
        remaps: dict[str, str] | None = None,
        params_file: Path | None = PARAMS_FILE,
        cwd: Path | None = None,
    ) -> None:
        """``params_file`` None: only ``params`` and the node's declared defaults."""
        cmd = [relocalizer_executable(), "--ros-args"]
        if params_file is not None:
            cmd += ["--params-file", str(params_file)]
        for key, value in params.items():
            cmd += ["-p", f"{key}:={_param_text(value)}"]
        for src, dst in (remaps or {}).items():
            cmd += ["-r", f"{src}:={dst}"]
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd,
            env=ros_env(domain_id),
            cwd=str(cwd) if cwd else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = ""

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        """Wait for the process to end by itself; returns its exit code.

        A process still running after ``timeout_s`` is killed (never left behind) and the
        timeout is raised.
        """
        self._collect(timeout_s, raise_timeout=True)
        return self.proc.returncode

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGINT (what Ctrl-C and ros2 launch send), then collect the output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self._collect(timeout_s, raise_timeout=False)
        return self.proc.returncode

    def _collect(self, timeout_s: float, *, raise_timeout: bool) -> None:
        """Wait up to ``timeout_s`` for the end and append the output; a process still running
        then is killed (its output kept too) and, with ``raise_timeout``, the timeout raised."""
        timed_out: subprocess.TimeoutExpired | None = None
        try:
            out, _ = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            out, _ = self.proc.communicate()
            timed_out = exc
        self.output += out or ""
        if timed_out is not None and raise_timeout:
            raise timed_out


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return "''"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_param_text(v) for v in value) + "]"
    return str(value)


class TestPeer:
    """An rclpy node in the test process, in its own context and domain."""

    def __init__(self, domain_id: int, name: str = "test_peer") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(
        self, done: Callable[[], bool], timeout_s: float, proc: NodeProcess | None = None
    ) -> bool:
        """Spin until ``done()`` is true; False on timeout or if ``proc`` died meanwhile."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done():
                return True
            if proc is not None and proc.proc.poll() is not None:
                return done()
            self.executor.spin_once(timeout_sec=0.02)
        return done()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
