"""Benchmark of the SfM labelling pipeline (posenet_train.sfm) on the embedded scene.

Usage (from anywhere, with the project's venv active)::

    python training/benchmarks/bench_sfm.py [--frames 100 300] [--width 640 --height 480]
        [--input rosbag|video] [--arc-deg 360] [--threads 2] [--max-features 4096]
        [--workdir DIR] [--keep]
    python training/benchmarks/bench_sfm.py --input drive [--frames 51] [--spacing-m 1.2]
        [--width 960 --height 320] [--seeds 0 1 2]

For each frame count, a recording of the synthetic room is written (a robot driving an arc round
the room's centre with a camera looking forward-left, :mod:`posenet_train.sfm.demo_inputs`) as a
rosbag2 (raw images, noisy odometry in an offset frame, /tf_static, CameraInfo; the labels are
aligned to the odometry) or as an MJPG video (intrinsics estimated, scale from the known distance
between the first frame and the one furthest from it). Then the whole pipeline runs once and one
row is printed:

- wall time of each step (frames, SIFT features + sequential matching, incremental mapping,
  scale/alignment + export) and in total; writing the input is not counted;
- registered share, mean reprojection error, mean track length;
- accuracy against the renderer's ground truth: median camera-position error (absolute and as a
  share of the path length) and median rotation error — in the odometry frame as the tool wrote
  it (rosbag), or after a rigid Umeyama alignment (video; the SfM frame is arbitrary there).

The machine's load average is printed too: SfM is CPU-bound, so other jobs slow it down.

``--input drive`` benchmarks the forward drive instead (issue 15): the street of
:func:`posenet_train.synthetic.build_street` rendered along a straight 60 m drive (``--frames``
51, ``--spacing-m`` 1.2, a wide ``--width`` x ``--height`` camera, ``--seeds``), labelled from
its image folder with the rendered intrinsics and the first-to-last distance, once with the
defaults and once (reusing the features and matches) with COLMAP's own initialisation (16°,
forward motion refused): one row per seed and initialisation, the error after the rigid
alignment as for a video.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from posenet_core.geometry import matrix_to_quat, quat_to_matrix
from posenet_core.metrics import rotation_error_deg
from posenet_train.datasets import load_split
from posenet_train.sfm import FrameSelection, ReferenceOptions, SfmOptions, umeyama
from posenet_train.sfm import main as sfm_main
from posenet_train.sfm.demo_inputs import (
    DEFAULT_T_ODOM_WORLD,
    make_recording,
    write_bag,
    write_video,
)

# Every frame of the (short) recordings: the benchmark times SfM on all of them.
ALL_FRAMES = FrameSelection(max_frames=None)


def _accuracy(out: Path, truth: np.ndarray, rigid: bool) -> tuple[float, float, float]:
    records = load_split(out, "train") + load_split(out, "test")
    index = [int(r.image_path.stem.split("_")[1]) for r in records]
    positions = np.array([r.position_m for r in records])
    quats = np.array([r.quat_wxyz for r in records])
    gt = truth[index]
    if rigid:
        positions, quats = umeyama(positions, gt[:, :3, 3], with_scale=False).apply_poses(
            positions, quats
        )
    position_error = np.linalg.norm(positions - gt[:, :3, 3], axis=1)
    rotation_error = rotation_error_deg(quats, matrix_to_quat(gt[:, :3, :3]))
    path = float(np.linalg.norm(np.diff(truth[:, :3, 3], axis=0), axis=1).sum())
    return float(np.median(position_error)), path, float(np.median(rotation_error))


def run_one(
    frames: int,
    width: int,
    height: int,
    input_kind: str,
    arc_deg: float,
    threads: int,
    max_features: int,
    workdir: Path,
) -> dict:
    """Write one input, run the pipeline on it, return the measurements."""
    recording = make_recording(frames, width, height, arc_rad=math.radians(arc_deg))
    case = workdir / f"{input_kind}_{frames}_{width}x{height}"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir(parents=True)
    sfm = SfmOptions(num_threads=threads, max_features=max_features)
    if input_kind == "rosbag":
        source = write_bag(case / "bag", recording)
        truth = DEFAULT_T_ODOM_WORLD @ recording.T_world_camera
        reference = ReferenceOptions(odometry_topic="/odom")
        camera_info_topic = "/camera/camera_info"
    else:
        source = write_video(case / "video.avi", recording)
        truth = recording.T_world_camera
        # The frame furthest from the first: a long baseline keeps the scale error small.
        far = int(np.argmax(np.linalg.norm(truth[:, :3, 3] - truth[0, :3, 3], axis=1)))
        distance = float(np.linalg.norm(truth[0, :3, 3] - truth[far, :3, 3]))
        reference = ReferenceOptions(known_distance=("0", str(far), distance))
        camera_info_topic = None
    start = time.perf_counter()
    out = sfm_main(
        source,
        case / "out",
        selection=ALL_FRAMES,
        sfm=sfm,
        reference=reference,
        camera_info_topic=camera_info_topic,
        progress=False,
    )
    total = time.perf_counter() - start
    report = json.loads((out / "sfm_report.json").read_text())
    median_m, path_m, rot_deg = _accuracy(out, truth, rigid=input_kind == "video")
    timings = report["timings_s"]
    return {
        "frames": frames,
        "input": input_kind,
        "size": f"{width}x{height}",
        "frames_s": timings.get("frames_s", 0.0),
        "features_s": timings.get("features_s", 0.0),
        "mapping_s": timings.get("mapping_s", 0.0),
        "export_s": timings.get("export_s", 0.0),
        "total_s": total,
        "registered": f"{report['sfm']['registered_frames']}/{frames}",
        "reproj_px": report["sfm"]["mean_reprojection_error_px"],
        "track_len": report["sfm"]["track_length_mean"],
        "keypoints": report["features"]["keypoints_per_image"],
        "path_m": path_m,
        "pos_err_mm": 1000 * median_m,
        "pos_err_pct": 100 * median_m / path_m,
        "rot_err_deg": rot_deg,
        "models": 1 + len(report["sfm"]["other_models"]),
    }


def run_drive(
    frames: int,
    spacing_m: float,
    width: int,
    height: int,
    seed: int,
    threads: int,
    max_features: int,
    workdir: Path,
) -> list[dict]:
    """Render one forward drive, label it with the defaults, then again from its matches with
    COLMAP's initialisation; return one row per initialisation."""
    from posenet_train import synthetic
    from posenet_train.sfm import SfmError
    from posenet_train.sfm.reconstruct import INIT_FALLBACK

    case = workdir / f"drive_{frames}_{width}x{height}_seed{seed}"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir(parents=True)
    dataset = synthetic.main(
        case / "street",
        scene="drive",
        seed=seed,
        frames=frames,
        spacing_m=spacing_m,
        width=width,
        height=height,
        progress=False,
    )
    records = sorted(
        load_split(dataset, "train") + load_split(dataset, "test"), key=lambda r: r.image_path.name
    )
    truth = np.tile(np.eye(4), (len(records), 1, 1))
    for i, r in enumerate(records):
        truth[i, :3, :3] = quat_to_matrix(r.quat_wxyz)
        truth[i, :3, 3] = r.position_m
    distance = float(np.linalg.norm(truth[-1, :3, 3] - truth[0, :3, 3]))
    reference = ReferenceOptions(known_distance=("0", str(frames - 1), distance))
    rows = []
    colmap_init = dict(
        zip(("init_min_tri_angle_deg", "init_max_forward_motion"), INIT_FALLBACK, strict=True)
    )
    for label, init in (("defaults", {}), ("colmap init", colmap_init)):
        sfm = SfmOptions(num_threads=threads, max_features=max_features, **init)
        out = case / "out"
        start = time.perf_counter()
        row = {"frames": frames, "input": "drive", "size": f"{width}x{height}", "seed": seed}
        row["init"] = label
        try:
            with warnings.catch_warnings(record=True) as warnings_caught:
                warnings.simplefilter("always")
                redo = "mapping" if init else None
                sfm_main(
                    dataset / "images",
                    out,
                    selection=ALL_FRAMES,
                    sfm=sfm,
                    reference=reference,
                    intrinsics=dataset / "intrinsics.json",
                    redo_from=redo,
                    progress=False,
                )
        except SfmError as exc:
            row.update(total_s=time.perf_counter() - start, failed=str(exc).split(";")[0])
            rows.append(row)
            continue
        report = json.loads((out / "sfm_report.json").read_text())
        median_m, path_m, rot_deg = _accuracy(out, truth, rigid=True)
        row.update(
            {
                "features_s": report["timings_s"].get("features_s", 0.0),
                "mapping_s": report["timings_s"].get("mapping_s", 0.0),
                "total_s": time.perf_counter() - start,
                "registered": f"{report['sfm']['registered_frames']}/{frames}",
                "models": 1 + len(report["sfm"]["other_models"]),
                "tries": len(report["sfm"]["mapping_attempts"]),
                "path_m": path_m,
                "pos_err_mm": 1000 * median_m,
                "pos_err_pct": 100 * median_m / path_m,
                "rot_err_deg": rot_deg,
                "warnings": len(warnings_caught),
            }
        )
        rows.append(row)
    return rows


@contextlib.contextmanager
def _benchmark_folder(workdir: Path | None, keep: bool, prefix: str) -> Iterator[Path]:
    """The folder the runs work in: ``workdir``, or a new temporary one (removed afterwards
    unless ``keep``); prints the load average before, and after a run that completed."""
    temporary = workdir is None
    root = Path(tempfile.mkdtemp(prefix=prefix)) if temporary else Path(workdir)
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    try:
        yield root
    finally:
        if temporary and not keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main_drive(
    frames: int = 51,
    spacing_m: float = 1.2,
    width: int = 960,
    height: int = 320,
    seeds: tuple[int, ...] = (0, 1, 2),
    threads: int = 2,
    max_features: int = 4096,
    workdir: Path | None = None,
    keep: bool = False,
) -> list[dict]:
    """The forward-drive benchmark; print and return the rows."""
    rows = []
    with _benchmark_folder(workdir, keep, "bench_sfm_drive_") as root:
        print(
            "seed size      init         features_s mapping_s total_s registered models tries"
            " pos_err_mm pos_err_% rot_err_deg"
        )
        for seed in seeds:
            for row in run_drive(
                frames, spacing_m, width, height, seed, threads, max_features, root
            ):
                rows.append(row)
                if "failed" in row:
                    print(
                        f"{row['seed']:4d} {row['size']:9s} {row['init']:12s} failed after"
                        f" {row['total_s']:.1f} s: {row['failed']}",
                        flush=True,
                    )
                    continue
                print(
                    f"{row['seed']:4d} {row['size']:9s} {row['init']:12s}"
                    f" {row['features_s']:10.1f} {row['mapping_s']:9.1f} {row['total_s']:7.1f}"
                    f" {row['registered']:>10s} {row['models']:6d} {row['tries']:5d}"
                    f" {row['pos_err_mm']:10.1f} {row['pos_err_pct']:9.3f}"
                    f" {row['rot_err_deg']:11.3f}",
                    flush=True,
                )
    return rows


def main(
    frames: tuple[int, ...] = (100, 300),
    width: int = 640,
    height: int = 480,
    input_kind: str = "rosbag",
    arc_deg: float = 360.0,
    threads: int = 2,
    max_features: int = 4096,
    workdir: Path | None = None,
    keep: bool = False,
) -> list[dict]:
    """Run the benchmark; print and return the rows."""
    rows = []
    with _benchmark_folder(workdir, keep, "bench_sfm_") as root:
        print(
            "frames input   size     frames_s features_s mapping_s export_s total_s registered"
            " reproj_px track_len path_m pos_err_mm pos_err_% rot_err_deg models"
        )
        for count in frames:
            row = run_one(count, width, height, input_kind, arc_deg, threads, max_features, root)
            rows.append(row)
            print(
                f"{row['frames']:6d} {row['input']:8s} {row['size']:8s} {row['frames_s']:8.1f}"
                f" {row['features_s']:10.1f} {row['mapping_s']:9.1f} {row['export_s']:8.1f}"
                f" {row['total_s']:7.1f} {row['registered']:>10s} {row['reproj_px']:9.3f}"
                f" {row['track_len']:9.1f} {row['path_m']:6.2f} {row['pos_err_mm']:10.1f}"
                f" {row['pos_err_pct']:9.3f} {row['rot_err_deg']:11.3f} {row['models']:6d}",
                flush=True,
            )
    return rows


def cli() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--frames",
        type=int,
        nargs="+",
        help="frame counts (default 100 300; drive: one count, 51)",
    )
    parser.add_argument("--width", type=int, help="image width (default 640; drive 960)")
    parser.add_argument("--height", type=int, help="image height (default 480; drive 320)")
    parser.add_argument(
        "--input",
        choices=("rosbag", "video", "drive"),
        default="rosbag",
        help="input kind (rosbag); drive: the rendered forward drive, defaults against COLMAP's"
        " initialisation",
    )
    parser.add_argument(
        "--spacing-m", type=float, default=1.2, help="drive: metres between frames (1.2)"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="drive: scene seeds (0 1 2)"
    )
    parser.add_argument(
        "--arc-deg", type=float, default=360.0, help="arc the robot drives round the room (360)"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument(
        "--max-features", type=int, default=4096, help="SIFT features per image (4096)"
    )
    parser.add_argument("--workdir", type=Path, help="keep inputs and outputs here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.input == "drive":
        main_drive(
            args.frames[0] if args.frames else 51,
            args.spacing_m,
            args.width or 960,
            args.height or 320,
            tuple(args.seeds),
            args.threads,
            args.max_features,
            args.workdir,
            args.keep,
        )
        return
    main(
        tuple(args.frames or (100, 300)),
        args.width or 640,
        args.height or 480,
        args.input,
        args.arc_deg,
        args.threads,
        args.max_features,
        args.workdir,
        args.keep,
    )


if __name__ == "__main__":
    cli()
