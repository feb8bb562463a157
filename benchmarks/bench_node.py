"""Stream camera frames into the installed relocalizer and report rates, latency, drops and RSS.

    source scripts/env.sh
    python benchmarks/bench_node.py                       # GoogLeNet-sized model, 60 s at 30 Hz
    python benchmarks/bench_node.py --model my.onnx --duration 120 --rate 15

A test peer publishes 640x480 rgb8 sensor_msgs/Image at the given rate, stamped with the ROS
clock, to a relocalizer started as `ros2 launch` would start it (params file + overrides), and
listens to its `estimate` and `/diagnostics`. Printed (medians unless said otherwise):
input and output rate, inference ms, node overhead ms (decode + preprocess + publish, measured by
the node), image-stamp -> estimate-received latency p50/p99, frames sent / received by the node /
published / dropped while busy / rejected / lost in transport, node RSS at start and end.
Not a test: the numbers depend on the machine; BENCHMARKS.md records them with machine and date.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from posenet_ros.msg import PoseEstimate  # noqa: E402

from ros_harness import NodeProcess, TestPeer, next_domain_id  # noqa: E402


def dino_dir() -> Path:
    """middlebury_dino (../shared beside the repository, or $POSENET_DINO_DIR)."""
    return Path(
        os.environ.get("POSENET_DINO_DIR", ROOT.parent / "shared" / "datasets" / "middlebury_dino")
    )


def make_model_file(
    path: Path,
    threads: int,
    architecture: str = "posenet-googlenet",
    resize_shorter: int = 256,
    crop_hw: tuple[int, int] = (224, 224),
    **model_args,
) -> Path:
    """A model file of ``architecture`` (random weights: speed does not depend on them).

    Goes through the trainer's own checkpoint and export, so the graph is the one users ship.
    ``resize_shorter`` / ``crop_hw`` are the preprocessing it records (the network's input).
    """
    import torch

    from posenet_train import export
    from posenet_train.checkpoint import save_model_checkpoint
    from posenet_train.models import build_model

    torch.set_num_threads(threads)
    model = build_model(architecture, pretrained=None, **model_args)
    checkpoint = save_model_checkpoint(
        path.with_suffix(".pt"),
        model,
        extra={
            "resize_shorter": resize_shorter,
            "crop_hw": tuple(crop_hw),
            "dataset": str(dino_dir()),
        },
    )
    export.main(checkpoint, path, calibration_images=0)
    return path


def rss_mb(pid: int) -> float:
    """Resident set size of a process, MB (from /proc, Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def image_message(width: int, height: int, rng: np.random.Generator) -> Image:
    msg = Image()
    msg.height, msg.width = height, width
    msg.encoding = "rgb8"
    msg.step = width * 3
    msg.data = rng.integers(0, 256, size=height * width * 3, dtype=np.uint8).tobytes()
    return msg


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model = (
            Path(args.model)
            if args.model
            else make_model_file(Path(tmp) / "googlenet.onnx", args.threads)
        )
        domain = next_domain_id()
        peer = TestPeer(domain, name="bench_camera")
        node = peer.node
        pub = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        latencies_ms: list[float] = []
        inference_ms: list[float] = []
        diag: list[dict[str, str]] = []

        def on_estimate(msg: PoseEstimate) -> None:
            now_ns = node.get_clock().now().nanoseconds
            stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            latencies_ms.append((now_ns - stamp_ns) * 1e-6)
            inference_ms.append(msg.inference_time * 1e3)

        def on_diag(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if "relocalization" in status.name:
                    diag.append({kv.key: kv.value for kv in status.values})

        node.create_subscription(PoseEstimate, "/estimate", on_estimate, 100)
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 100)
        proc = NodeProcess(
            domain,
            {"model_path": str(model), "num_threads": args.threads, "publish_tf": False},
            remaps={"image": "/camera/image_raw"},
        )
        try:
            if not peer.spin_until(lambda: pub.get_subscription_count() >= 1, 60.0, proc):
                raise SystemExit(f"relocalizer did not start:\n{proc.stop() and proc.output}")
            rng = np.random.default_rng(0)
            frames = [image_message(args.width, args.height, rng) for _ in range(8)]
            # Warm-up: the first inferences allocate; RSS is taken after them.
            for msg in frames[:3]:
                msg.header.stamp = node.get_clock().now().to_msg()
                pub.publish(msg)
                peer.spin_until(lambda: False, 0.3)
            warm = len(latencies_ms)
            rss_start = rss_mb(proc.proc.pid)
            diag_start = len(diag)
            latencies_ms.clear()
            inference_ms.clear()

            period = 1.0 / args.rate
            sent = 0
            t0 = time.monotonic()
            next_t = t0
            while time.monotonic() - t0 < args.duration:
                msg = frames[sent % len(frames)]
                msg.header.stamp = node.get_clock().now().to_msg()
                pub.publish(msg)
                sent += 1
                next_t += period
                while True:
                    remaining = next_t - time.monotonic()
                    if remaining <= 0:
                        break
                    peer.executor.spin_once(timeout_sec=min(remaining, 0.005))
            # Let the last frame and one more diagnostics period arrive.
            n_diag = len(diag)
            peer.spin_until(lambda: len(diag) >= n_diag + 2, 5.0)
            rss_end = rss_mb(proc.proc.pid)
        finally:
            proc.stop()
            peer.close()

    window = diag[diag_start:]
    last = window[-1] if window else {}

    def median_of(key: str) -> float:
        vals = [float(d[key]) for d in window if d.get(key) not in (None, "nan")]
        return float(np.median(vals)) if vals else float("nan")

    received_total = int(last.get("frames_received", 0))
    return {
        "duration_s": args.duration,
        "rate_hz": args.rate,
        "resolution": f"{args.width}x{args.height}",
        "threads": args.threads,
        "model": str(args.model or "posenet-googlenet 224x224 (random weights)"),
        "sent": sent,
        "warmup_frames": warm,
        "input_rate_hz": median_of("input_rate_hz"),
        "output_rate_hz": median_of("output_rate_hz"),
        "inference_ms_p50": float(np.median(inference_ms)) if inference_ms else float("nan"),
        "overhead_ms_p50": median_of("overhead_ms_median"),
        "latency_ms_p50": float(np.percentile(latencies_ms, 50)) if latencies_ms else float("nan"),
        "latency_ms_p99": float(np.percentile(latencies_ms, 99)) if latencies_ms else float("nan"),
        "node_received": received_total,
        "node_published": int(last.get("frames_published", 0)),
        "node_dropped_busy": int(last.get("frames_dropped_busy", 0)),
        "node_rejected": int(last.get("frames_rejected", 0)),
        # Warm-up frames are in the node's lifetime counters too.
        "lost_in_transport": sent + 3 - received_total,
        "estimates_received": len(latencies_ms),
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model file; default: a posenet-googlenet export")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to stream")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second")
    parser.add_argument("--width", type=int, default=640, help="image width, px")
    parser.add_argument("--height", type=int, default=480, help="image height, px")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0 or args.width <= 0 or args.height <= 0:
        parser.error("--duration, --rate, --width and --height must be > 0")
    r = run(args)
    print(
        f"# relocalizer benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    )
    width = max(len(k) for k in r)
    for key, value in r.items():
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"| {key:<{width}} | {text} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
