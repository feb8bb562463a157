"""Which side needs the Fast DDS large-image profile: frames a camera subscriber loses.

    source scripts/env.sh
    python benchmarks/bench_large_images.py                 # 40 frames at 5 Hz per row
    python benchmarks/bench_large_images.py --frames 50 --rate 10

A sender process publishes 640x480 rgb8 sensor_msgs/Image best effort (sensor-data QoS, what
camera drivers do) to a receiver process subscribed best effort with depth 1 (the relocalizer's
camera QoS). Each row runs a fresh pair with FASTRTPS_DEFAULT_PROFILES_FILE set or not, per
process, and prints how many frames arrived. Not a test: the loss depends on load and timing;
BENCHMARKS.md records the table with machine and date.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "config" / "fastdds_large_images.xml"
TOPIC = "/bench_large_images/image"
UDP_ONLY = """<?xml version="1.0" encoding="UTF-8"?>
<profiles xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles">
  <transport_descriptors>
    <transport_descriptor>
      <transport_id>udp</transport_id>
      <type>UDPv4</type>
      <receiveBufferSize>4194304</receiveBufferSize>
    </transport_descriptor>
  </transport_descriptors>
  <participant profile_name="udp_only" is_default_profile="true">
    <rtps>
      <userTransports><transport_id>udp</transport_id></userTransports>
      <useBuiltinTransports>false</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
"""


def send(frames: int, rate_hz: float) -> None:
    import numpy as np
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = Node("bench_sender")
    pub = node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
    deadline = time.monotonic() + 30.0
    while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(1.0)  # discovery of the reader's locators completes after the match
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.step = 480, 640, "rgb8", 640 * 3
    msg.data = np.random.default_rng(0).integers(0, 256, 480 * 640 * 3, np.uint8).tobytes()
    for _ in range(frames):
        pub.publish(msg)
        time.sleep(1.0 / rate_hz)
    time.sleep(1.0)
    node.destroy_node()
    rclpy.shutdown()


def receive(listen_s: float) -> None:
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = Node("bench_receiver")
    count = [0]
    qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST
    )
    node.create_subscription(Image, TOPIC, lambda _: count.__setitem__(0, count[0] + 1), qos)
    end = time.monotonic() + listen_s
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(count[0], flush=True)
    node.destroy_node()
    rclpy.shutdown()


def run_pair(domain: int, sender_profile, receiver_profile, frames: int, rate_hz: float) -> int:
    """Frames the receiver got; each profile is a path or None (variable unset)."""

    def env(profile) -> dict[str, str]:
        e = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
        for name in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"):
            e.pop(name, None)
        if profile is not None:
            e["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(profile)
        return e

    me = [sys.executable, __file__, "--frames", str(frames), "--rate", str(rate_hz)]
    listen_s = frames / rate_hz + 20.0
    receiver = subprocess.Popen(
        [*me, "--role", "receive", "--listen", str(listen_s)],
        env=env(receiver_profile),
        stdout=subprocess.PIPE,
        text=True,
    )
    subprocess.run([*me, "--role", "send"], env=env(sender_profile), check=True)
    out, _ = receiver.communicate(timeout=listen_s + 30.0)
    return int(out.split()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=40, help="frames sent per row")
    p.add_argument("--rate", type=float, default=5.0, help="send rate, Hz")
    p.add_argument("--role", choices=("send", "receive"), help=argparse.SUPPRESS)
    p.add_argument("--listen", type=float, default=0.0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.frames <= 0 or a.rate <= 0:
        p.error("--frames and --rate must be > 0")
    if a.role == "send":
        send(a.frames, a.rate)
        return 0
    if a.role == "receive":
        receive(a.listen)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        udp = Path(tmp) / "udp_only.xml"
        udp.write_text(UDP_ONLY)
        rows = [
            ("none", "none", None, None),
            ("none", "fastdds_large_images.xml", None, PROFILE),
            ("none", "UDP only, 4 MiB receive buffer", None, udp),
            ("fastdds_large_images.xml", "none", PROFILE, None),
            ("fastdds_large_images.xml", "fastdds_large_images.xml", PROFILE, PROFILE),
        ]
        print(f"{platform.node()}, load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d')}")
        print(f"\n| sender profile | receiver profile | frames received of {a.frames} |")
        print("|---|---|---|")
        for i, (sender_name, receiver_name, sender, receiver) in enumerate(rows):
            got = run_pair(150 + os.getpid() % 40 + i, sender, receiver, a.frames, a.rate)
            print(f"| {sender_name} | {receiver_name} | {got} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
