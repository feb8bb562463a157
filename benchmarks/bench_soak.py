"""Soak test: stream camera frames into the installed relocalizer for a long time and watch it.

    source scripts/env.sh
    python benchmarks/bench_soak.py                       # 10 minutes at 30 Hz, 640x480
    python benchmarks/bench_soak.py --duration 120 --interval 30 --json soak.json

As benchmarks/bench_node.py, a test peer publishes 640x480 rgb8 sensor_msgs/Image at the given
rate, stamped with the ROS clock, to a relocalizer started as `ros2 launch` would start it. The
model is by default a posenet-googlenet 224x224 with an uncertainty head (random weights: speed
does not depend on them), exported by the trainer as a format 2 file, and the node runs with
every new path on: the model's covariance, the base pose (base_frame) and all three outlier gates
(bounds loose enough that nothing is rejected, so every frame takes the full path).

Every --interval seconds (default 60) one row: node RSS (last sample and the window's maximum;
sampled every --rss-every seconds), frames sent, estimates received and the output rate,
image-stamp -> estimate-received latency p50/p99, frames the node dropped while busy, frames
lost in transport (sent - received by the node), and estimates the gates rejected.
Memory is "flat" when the largest RSS after the first interval is less than 5 % above the RSS
at the end of the first interval (allocator warm-up, caches and DDS buffers settle in the first
minute); the script prints PASS or FAIL and exits 1 on FAIL.
Not a test: the numbers depend on the machine; BENCHMARKS.md records them with machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from posenet_ros.msg import PoseEstimate  # noqa: E402

from bench_node import image_message, make_model_file, rss_mb  # noqa: E402
from ros_harness import NodeProcess, TestPeer, next_domain_id  # noqa: E402

MAX_RSS_GROWTH = 0.05  # after the first interval
WARMUP_FRAMES = 3

# Every new code path on, nothing rejected: loose gates, the model's covariance, a base pose.
NODE_PARAMS = {
    "publish_tf": False,
    "use_model_covariance": True,
    "base_frame": "base_link",
    "camera_to_base_translation_m": [0.0, 0.3, -0.2],
    "max_position_stddev_m": 1e5,
    "max_rotation_stddev_rad": 1e5,
    "max_speed_m_s": 1e5,
}


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model = (
            Path(args.model)
            if args.model
            else make_model_file(
                Path(tmp) / "soak.onnx", args.threads, args.architecture, uncertainty=True
            )
        )
        domain = next_domain_id()
        peer = TestPeer(domain, name="soak_camera")
        node = peer.node
        pub = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        # (receive time s, latency ms, accepted) of every estimate; the latest diagnostics.
        estimates: list[tuple[float, float, bool]] = []
        diag: dict[str, str] = {}

        def on_estimate(msg: PoseEstimate) -> None:
            now_ns = node.get_clock().now().nanoseconds
            stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            estimates.append((time.monotonic(), (now_ns - stamp_ns) * 1e-6, msg.accepted))

        def on_diag(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if "relocalization" in status.name:
                    diag.clear()
                    diag.update({kv.key: kv.value for kv in status.values})

        node.create_subscription(PoseEstimate, "/estimate", on_estimate, 100)
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 100)
        params = {"model_path": str(model), "num_threads": args.threads, **NODE_PARAMS}
        proc = NodeProcess(domain, params, remaps={"image": "/camera/image_raw"})
        rows: list[dict] = []
        try:
            if not peer.spin_until(lambda: pub.get_subscription_count() >= 1, 120.0, proc):
                proc.stop()
                raise SystemExit(f"relocalizer did not start:\n{proc.output}")
            rng = np.random.default_rng(0)
            frames = [image_message(args.width, args.height, rng) for _ in range(8)]
            for msg in frames[:WARMUP_FRAMES]:
                msg.header.stamp = node.get_clock().now().to_msg()
                pub.publish(msg)
                peer.spin_until(lambda: False, 0.5)
            if proc.proc.poll() is not None:
                proc.stop()
                raise SystemExit(f"relocalizer exited during warm-up:\n{proc.output}")
            estimates.clear()
            period = 1.0 / args.rate
            sent_total = 0
            t0 = time.monotonic()
            next_frame = t0
            next_rss = t0
            window_start, window_sent, window_rss = t0, 0, []
            # The node's lifetime counters include the warm-up frames.
            last_counts = {"received": 0, "dropped": 0, "sent": -WARMUP_FRAMES}
            while True:
                now = time.monotonic()
                if now >= next_rss:
                    window_rss.append(rss_mb(proc.proc.pid))
                    next_rss += args.rss_every
                if now - window_start >= args.interval or now - t0 >= args.duration:
                    in_window = [e for e in estimates if window_start <= e[0] < now]
                    received = int(diag.get("frames_received", 0))
                    dropped = int(diag.get("frames_dropped_busy", 0))
                    gated = sum(1 for e in in_window if not e[2])
                    latencies = [e[1] for e in in_window]
                    rows.append(
                        {
                            "t_end_s": round(now - t0, 1),
                            "rss_mb": window_rss[-1] if window_rss else float("nan"),
                            "rss_max_mb": max(window_rss) if window_rss else float("nan"),
                            "sent": window_sent,
                            "estimates": len(in_window),
                            "output_hz": len(in_window) / max(now - window_start, 1e-9),
                            "latency_ms_p50": _percentile(latencies, 50),
                            "latency_ms_p99": _percentile(latencies, 99),
                            "dropped_busy": dropped - last_counts["dropped"],
                            # Node counters come from the last diagnostics message (<= 1 s old).
                            "lost_in_transport": (sent_total - received)
                            - (last_counts["sent"] - last_counts["received"]),
                            "gated": gated,
                        }
                    )
                    last_counts = {"received": received, "dropped": dropped, "sent": sent_total}
                    print(_row_text(rows[-1]), flush=True)
                    window_start, window_sent, window_rss = now, 0, []
                    if now - t0 >= args.duration:
                        break
                    if proc.proc.poll() is not None:
                        proc.stop()
                        raise SystemExit(f"relocalizer died:\n{proc.output}")
                if now >= next_frame:
                    msg = frames[sent_total % len(frames)]
                    msg.header.stamp = node.get_clock().now().to_msg()
                    pub.publish(msg)
                    sent_total += 1
                    window_sent += 1
                    next_frame += period
                timeout = max(0.0, min(next_frame, next_rss) - time.monotonic())
                peer.executor.spin_once(timeout_sec=min(timeout, 0.005))
        finally:
            proc.stop()
            peer.close()

    baseline = rows[0]["rss_mb"] if rows else float("nan")
    later = [r["rss_max_mb"] for r in rows[1:]]
    growth = (max(later) - baseline) / baseline if later else float("nan")
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}",
        "load_average_1min_at_end": os.getloadavg()[0],
        "model": str(args.model or f"{args.architecture} 224x224 with uncertainty head (random)"),
        "rate_hz": args.rate,
        "resolution": f"{args.width}x{args.height}",
        "threads": args.threads,
        "duration_s": args.duration,
        "interval_s": args.interval,
        "rows": rows,
        "rss_growth_after_first_interval": growth,
        "memory_flat": bool(later) and growth < MAX_RSS_GROWTH,
        "sent": sent_total,
    }


HEADER = (
    "| t (s) | RSS MB (max) | sent | estimates | output Hz | latency p50 / p99 ms "
    "| dropped busy | lost in transport | gated |"
)


def _row_text(r: dict) -> str:
    return (
        f"| {r['t_end_s']:.0f} | {r['rss_mb']:.1f} ({r['rss_max_mb']:.1f}) | {r['sent']} "
        f"| {r['estimates']} | {r['output_hz']:.2f} | {r['latency_ms_p50']:.1f} / "
        f"{r['latency_ms_p99']:.1f} | {r['dropped_busy']} | {r['lost_in_transport']} "
        f"| {r['gated']} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model file; default: a googlenet export with uncertainty")
    parser.add_argument(
        "--architecture",
        default="posenet-googlenet",
        help="model built when --model is not given (posenet-googlenet)",
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds to stream (600)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per row (60)")
    parser.add_argument("--rss-every", type=float, default=5.0, help="RSS sampling period, s (5)")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second (30)")
    parser.add_argument("--width", type=int, default=640, help="image width, px (640)")
    parser.add_argument("--height", type=int, default=480, help="image height, px (480)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (2)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    for name in ("duration", "interval", "rss_every", "rate"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    if args.width <= 0 or args.height <= 0 or args.threads <= 0:
        parser.error("--width, --height and --threads must be > 0")
    if args.interval > args.duration:
        parser.error("--interval must not exceed --duration")
    print(f"soak: {args.duration:.0f} s at {args.rate:g} Hz, {args.width}x{args.height}")
    print(HEADER)
    print("|---|---|---|---|---|---|---|---|---|")
    result = run(args)
    growth = result["rss_growth_after_first_interval"]
    verdict = "PASS" if result["memory_flat"] else "FAIL"
    print(
        f"# {result['date']}, {result['machine']}, load {result['load_average_1min_at_end']:.1f};"
        f" model {result['model']}, {result['threads']} thread(s)"
    )
    print(
        f"memory: RSS after the first interval {result['rows'][0]['rss_mb']:.1f} MB, largest "
        f"later {max((r['rss_max_mb'] for r in result['rows'][1:]), default=float('nan')):.1f} "
        f"MB: growth {100 * growth:.2f} % (limit {100 * MAX_RSS_GROWTH:.0f} %) -> {verdict}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["memory_flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
