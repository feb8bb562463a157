"""The relocalizer with refinement on: refined rate, and the prior's rate and latency beside it.

    source scripts/env.sh
    python benchmarks/bench_refine_node.py                 # GoogLeNet-sized prior, 30 s each
    python benchmarks/bench_refine_node.py --model my.onnx --duration 60 --modes map
    python benchmarks/bench_refine_node.py --architecture posenet-efficientnet-lite0 \
        --input 144,192 --threads 1                       # the README recipe's network

A test peer streams 640x480 rgb8 frames (and their camera_info, same stamps) at 30 Hz into
the installed relocalizer (started as `ros2 launch` starts it). The frames are renderings of
core/tests' planar scene (a textured plane, ~1000-2000 SIFT keypoints per frame) along a small
circle, and the map is that scene's (9 keyframes, default SIFT settings). The prior network is a
real-size one (default: posenet-googlenet 224x224, random weights, through the trainer's export;
or --architecture/--input, or --model) whose position and orientation outputs are replaced by a
constant pose near the circle's centre, so every frame costs a real inference and refinement has
a prior to work from.

Each mode runs the node once: ``prior`` without a map (the baseline), ``map`` with map_path.
Printed per mode: output rate by source (prior / refined), refinement success share, refinement
time, image stamp -> estimate received latency p50/p99 of prior-published and of refined frames,
the node's CPU time (user + system, from /proc) per second of wall time, and the load average.
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
sys.path.insert(0, str(ROOT / "core" / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import planar_scene  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from posenet_core.geometry import matrix_to_pose  # noqa: E402
from posenet_core.mapfile import write_map  # noqa: E402
from posenet_ros.msg import PoseEstimate  # noqa: E402

from ros_harness import NodeProcess, TestPeer, next_domain_id  # noqa: E402

CENTRE = planar_scene.look_at(np.array([0.1, 0.05, -1.9]), np.array([0.05, 0.0, 0.0]))


def constant_pose_model(src: Path, dst: Path, T_world_camera: np.ndarray) -> Path:
    """``src`` with its position / orientation outputs replaced by ``T_world_camera``'s.

    The network still runs (its outputs are multiplied by 0 before the constant is added, which
    ONNX Runtime does not fold away), so the prior costs what the real model costs.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    meta = {p.key: p.value for p in model.metadata_props}
    position_m, quat_wxyz = matrix_to_pose(T_world_camera)
    names = meta["posenet.outputs"].split(",")
    for name, value in zip(names, (position_m, quat_wxyz), strict=True):
        raw = name + "_network"
        for node in model.graph.node:
            node.output[:] = [raw if o == name else o for o in node.output]
            node.input[:] = [raw if i == name else i for i in node.input]
        zero = numpy_helper.from_array(np.zeros((), np.float32), name + "_zero")
        const = numpy_helper.from_array(np.asarray(value, np.float32)[None], name + "_const")
        model.graph.initializer.extend([zero, const])
        model.graph.node.extend(
            [
                helper.make_node("Mul", [raw, zero.name], [name + "_zeroed"]),
                helper.make_node("Add", [name + "_zeroed", const.name], [name]),
            ]
        )
    del model.graph.value_info[:]
    meta["posenet.dataset"] = "planar"
    meta.pop("posenet.dataset_fingerprint", None)
    del model.metadata_props[:]
    helper.set_model_props(model, meta)
    onnx.save(model, str(dst))
    return dst


def frames(count: int, scene) -> list[np.ndarray]:
    """Renderings along a 10 cm circle around CENTRE, looking at the plane."""
    out = []
    for i in range(count):
        a = 2 * np.pi * i / count
        centre = CENTRE[:3, 3] + 0.1 * np.array([np.cos(a), np.sin(a), 0.0])
        T = planar_scene.look_at(centre, np.array([0.05, 0.0, 0.0]))
        out.append(scene.render(T, planar_scene.K_640))
    return out


def image_msg(rgb: np.ndarray) -> Image:
    msg = Image()
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding = "rgb8"
    msg.step = rgb.shape[1] * 3
    msg.data = rgb.tobytes()
    return msg


def info_msg() -> CameraInfo:
    msg = CameraInfo()
    msg.width, msg.height = 640, 480
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [float(v) for v in planar_scene.K_640.ravel()]
    return msg


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_mode(mode: str, model: Path, map_path: Path, images, args) -> dict:
    domain = next_domain_id()
    peer = TestPeer(domain, name="bench_camera")
    node = peer.node
    pub = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    info_pub = node.create_publisher(CameraInfo, "/camera/camera_info", qos_profile_sensor_data)
    records: list[tuple[str, bool, float, float, str]] = []
    timing = {"on": False}

    def on_estimate(msg: PoseEstimate) -> None:
        if not timing["on"]:
            return
        now_ns = node.get_clock().now().nanoseconds
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        records.append(
            (
                msg.source,
                msg.refinement_attempted,
                (now_ns - stamp_ns) * 1e-6,
                msg.refinement_time * 1e3,
                msg.refinement_failure,
            )
        )

    cpu_ms: list[float] = []

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if timing["on"] and values.get("refine_cpu_ms_median", "nan") != "nan":
                cpu_ms.append(float(values["refine_cpu_ms_median"]))

    node.create_subscription(PoseEstimate, "/estimate", on_estimate, 100)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 100)
    params = {"model_path": str(model), "num_threads": args.threads, "publish_tf": False}
    if mode == "map":
        params["map_path"] = str(map_path)
        params["refine.rate_hz"] = args.refine_rate
        params["refine.opencv_threads"] = args.opencv_threads
    proc = NodeProcess(
        domain,
        params,
        remaps={"image": "/camera/image_raw", "camera_info": "/camera/camera_info"},
    )
    msgs = [image_msg(rgb) for rgb in images]
    info = info_msg()
    try:
        if not peer.spin_until(lambda: pub.get_subscription_count() >= 1, 60.0, proc):
            proc.stop()
            raise SystemExit(f"relocalizer did not start:\n{proc.output}")

        def publish(i: int) -> None:
            stamp = node.get_clock().now().to_msg()
            info.header.stamp = stamp
            msgs[i % len(msgs)].header.stamp = stamp
            info_pub.publish(info)
            pub.publish(msgs[i % len(msgs)])

        for i in range(15):  # warm-up: first inferences and refinements allocate
            publish(i)
            peer.spin_until(lambda: False, 1.0 / args.rate)
        timing["on"] = True
        cpu0, wall0 = cpu_seconds(proc.proc.pid), time.monotonic()
        load0 = os.getloadavg()[0]
        period = 1.0 / args.rate
        sent = 0
        next_t = wall0
        while time.monotonic() - wall0 < args.duration:
            publish(sent)
            sent += 1
            next_t += period
            while (remaining := next_t - time.monotonic()) > 0:
                peer.executor.spin_once(timeout_sec=min(remaining, 0.005))
        cpu1, wall1 = cpu_seconds(proc.proc.pid), time.monotonic()
        peer.spin_until(lambda: False, 1.0)  # refinements in flight
        timing["on"] = False
        load1 = os.getloadavg()[0]
    finally:
        proc.stop()
        peer.close()
    wall = wall1 - wall0

    def pct(values, q):
        return float(np.percentile(values, q)) if values else float("nan")

    prior_lat = [r[2] for r in records if not r[1]]
    refined_path_lat = [r[2] for r in records if r[1]]
    refine_ms = [r[3] for r in records if r[1]]
    attempted = [r for r in records if r[1]]
    refined = [r for r in attempted if r[0] == "refined"]
    failures: dict[str, int] = {}
    for r in attempted:
        if r[4]:
            failures[r[4]] = failures.get(r[4], 0) + 1
    return {
        "mode": mode,
        "frames sent / estimates": f"{sent} / {len(records)}",
        "output rate, all (Hz)": len(records) / wall,
        "published at once with the prior (Hz)": len(prior_lat) / wall,
        "refined (Hz)": len(refined) / wall,
        "refinement attempts (Hz)": len(attempted) / wall,
        "refinement success share": len(refined) / len(attempted) if attempted else float("nan"),
        "refinement failures": ", ".join(f"{k} {v}" for k, v in failures.items()) or "-",
        "refinement time p50 / p90 (ms)": f"{pct(refine_ms, 50):.0f} / {pct(refine_ms, 90):.0f}",
        "prior latency p50 / p99 (ms)": f"{pct(prior_lat, 50):.1f} / {pct(prior_lat, 99):.1f}",
        "refined-frame latency p50 / p99 (ms)": (
            f"{pct(refined_path_lat, 50):.0f} / {pct(refined_path_lat, 99):.0f}"
        ),
        "refinement CPU time, median of the 1 s medians (ms)": (
            float(np.median(cpu_ms)) if cpu_ms else float("nan")
        ),
        "node CPU (cores busy)": (cpu1 - cpu0) / wall,
        "load average (1 min) start / end": f"{load0:.2f} / {load1:.2f}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", help="model file whose network runs per frame; default: posenet-googlenet"
    )
    parser.add_argument(
        "--architecture",
        default="posenet-googlenet",
        help="network of the generated model file when --model is not given (default "
        "posenet-googlenet; the README's recipe trains posenet-efficientnet-lite0)",
    )
    parser.add_argument(
        "--input",
        default="224,224",
        help="H,W network input of the generated model file (default 224,224; the frames are "
        "resized to H on their shorter side first, so 144,192 takes the whole 640x480 frame)",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per mode")
    parser.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument("--refine-rate", type=float, default=5.0, help="refine.rate_hz")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument(
        "--opencv-threads", type=int, default=1, help="refine.opencv_threads (default 1)"
    )
    parser.add_argument(
        "--modes", default="prior,map", help="comma-separated: prior (no map), map (refinement)"
    )
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("prior", "map") for m in modes):
        parser.error("--modes takes prior and/or map")
    try:
        input_hw = tuple(int(v) for v in args.input.split(","))
    except ValueError:
        input_hw = ()
    if len(input_hw) != 2 or min(input_hw) < 32:
        parser.error(f"--input is {args.input!r}; allowed: H,W with both >= 32, e.g. 144,192")
    scene = planar_scene.PlanarScene()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model:
            src = Path(args.model)
        else:
            from bench_node import make_model_file

            src = make_model_file(
                tmp / "prior_network.onnx",
                args.threads,
                architecture=args.architecture,
                resize_shorter=min(input_hw),
                crop_hw=input_hw,
            )
        model = constant_pose_model(src, tmp / "prior.onnx", CENTRE)
        from posenet_core.features import FeatureConfig

        map_path = write_map(
            tmp / "planar.map.npz", planar_scene.build_site_map(scene, feature=FeatureConfig())
        )
        images = frames(30, scene)
        results = [run_mode(mode, model, map_path, images, args) for mode in modes]
    print(
        f"# relocalizer with refinement, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}"
        f"; {args.duration:g} s per mode at {args.rate:g} Hz, 640x480, model "
        f"{args.model or f'{args.architecture} {input_hw[0]}x{input_hw[1]}'}, "
        f"{args.threads} ORT threads"
    )
    print("| measure | " + " | ".join(r["mode"] for r in results) + " |")
    print("|---" * (len(results) + 1) + "|")
    for key in list(results[0])[1:]:
        cells = [f"{r[key]:.2f}" if isinstance(r[key], float) else str(r[key]) for r in results]
        print(f"| {key} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
