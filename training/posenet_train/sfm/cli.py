"""Command line of the labelling pipeline: ``python -m posenet_train.sfm INPUT --output DIR``.

Examples::

    # a video, scale from a known distance between two frames' camera centres
    python -m posenet_train.sfm walk.mp4 -o data/walk \\
        --known-distance frame_000000 frame_000240 3.5

    # a rosbag2 with odometry and /tf_static: metric poses in the odometry frame
    python -m posenet_train.sfm rosbag2_2024_05_01 -o data/lab --image-topic /camera/image_raw \\
        --odometry-topic /odom --camera-info-topic /camera/camera_info
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from posenet_train.errors import PoseNetTrainError
from posenet_train.sfm.frames import INPUT_KINDS
from posenet_train.sfm.pipeline import STEPS, SfmWarning, main
from posenet_train.sfm.reconstruct import CAMERA_MODELS, MATCHERS

__all__ = ["build_parser", "cli"]


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _number(*, positive: bool = False, low: float | None = None, high: float | None = None):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m posenet_train.sfm``."""
    p = argparse.ArgumentParser(
        prog="python -m posenet_train.sfm",
        description="Label a video, image folder or rosbag2 with camera poses by structure from"
        " motion (pycolmap), optionally metric and in the robot's odometry/map frame, and write"
        " a Cambridge-format dataset for posenet_train.train (plus the COLMAP model, a JSON"
        " report and a trajectory plot). Finished steps are reused on a second run.",
    )
    p.add_argument("input", type=Path, help="video file, image folder, or rosbag2 (folder/.mcap)")
    p.add_argument("-o", "--output", required=True, type=Path, help="output dataset folder")
    p.add_argument("--input-kind", choices=INPUT_KINDS, help="input type (default: detected)")
    g = p.add_argument_group("input and frame selection")
    g.add_argument("--image-topic", help="rosbag2 image topic (default: the bag's only one)")
    g.add_argument(
        "--image-rate-hz",
        type=_number(positive=True),
        help="image folder: frame rate that gives the images timestamps",
    )
    g.add_argument(
        "--every-nth",
        type=_int_at_least(1),
        default=1,
        help="keep one frame per block of N frames (default 1)",
    )
    g.add_argument(
        "--min-interval-s",
        type=_number(positive=True),
        help="blocks last at least this many seconds (time-based selection)",
    )
    g.add_argument(
        "--no-blur-rejection",
        action="store_true",
        help="keep each block's first frame and never reject blurred frames",
    )
    g.add_argument(
        "--blur-ratio",
        type=_number(low=0.0, high=0.99),
        default=0.5,
        help="reject a frame sharper than less than this fraction of its neighbours' median"
        " (default 0.5; 0 disables the relative test)",
    )
    g.add_argument(
        "--max-frames",
        type=_int_at_least(0),
        default=300,
        help="cap on the number of frames, evenly spaced (default 300; 0 = no cap)",
    )
    g.add_argument(
        "--image-format", choices=("png", "jpg"), default="png", help="written frames (png)"
    )
    g = p.add_argument_group("camera and structure from motion")
    g.add_argument(
        "--intrinsics",
        type=Path,
        help="JSON with width, height, fx, fy, cx, cy [, distortion_model, distortion] (OpenCV"
        " pixel convention); the camera is then PINHOLE/OPENCV and held fixed",
    )
    g.add_argument(
        "--camera-info-topic", help="rosbag2: read the intrinsics from this CameraInfo topic"
    )
    g.add_argument(
        "--camera-model",
        choices=CAMERA_MODELS,
        default="SIMPLE_RADIAL",
        help="COLMAP model estimated when no intrinsics are given (default SIMPLE_RADIAL)",
    )
    g.add_argument(
        "--refine-intrinsics",
        action="store_true",
        help="refine given intrinsics in bundle adjustment instead of holding them fixed",
    )
    g.add_argument(
        "--matcher",
        choices=MATCHERS,
        default="sequential",
        help="sequential (videos, bags; default) or exhaustive (all pairs)",
    )
    g.add_argument(
        "--overlap",
        type=_int_at_least(1),
        default=10,
        help="sequential matching: successors per frame (default 10)",
    )
    g.add_argument(
        "--max-features",
        type=_int_at_least(64),
        default=4096,
        help="SIFT features per image (default 4096)",
    )
    g.add_argument(
        "--init-min-tri-angle",
        type=_number(low=0.1, high=60.0),
        default=4.0,
        metavar="DEG",
        help="smallest median triangulation angle of the frame pair a model starts from"
        " (default 4; COLMAP's is 16, which a camera driving forward rarely reaches)",
    )
    g.add_argument(
        "--init-max-forward-motion",
        type=_number(low=0.5, high=1.0),
        default=1.0,
        help="largest share |t_z|/|t| of that pair's baseline along the optical axis (default 1:"
        " forward motion allowed; COLMAP's is 0.95, which refuses a robot driving straight)",
    )
    g.add_argument("--threads", type=_int_at_least(1), default=2, help="CPU threads (default 2)")
    g.add_argument("--seed", type=_int_at_least(0), default=0, help="random seed (default 0)")
    g.add_argument(
        "--min-registered",
        type=_int_at_least(3),
        default=10,
        help="fewest registered frames accepted (default 10)",
    )
    g.add_argument(
        "--min-registered-share",
        type=_number(low=0.0, high=1.0),
        default=0.5,
        help="smallest share of the selected frames that must register (default 0.5); below"
        " this (or --min-registered) mapping is tried once more with COLMAP's initialisation",
    )
    g = p.add_argument_group("scale and frame (at most one; none keeps SfM units)")
    scale = g.add_mutually_exclusive_group()
    scale.add_argument(
        "--scale", type=_number(positive=True), help="multiply SfM units by this factor"
    )
    scale.add_argument(
        "--known-distance",
        nargs=3,
        metavar=("FRAME_A", "FRAME_B", "METRES"),
        help="distance between the camera centres of two frames (names as in frames.csv, their"
        " stems, or source indices); poses stay in the SfM frame, in metres",
    )
    scale.add_argument(
        "--odometry-topic",
        help="rosbag2 nav_msgs/Odometry topic: align to it (metres, odometry frame)",
    )
    scale.add_argument(
        "--tf-reference-frame",
        help="rosbag2: align to the TF pose of the camera frame in this frame (e.g. map, odom)",
    )
    g.add_argument(
        "--camera-frame",
        help="the camera's optical TF frame (default: the images' header frame_id)",
    )
    g.add_argument(
        "--camera-extrinsic",
        nargs=7,
        type=_number(),
        metavar=("X", "Y", "Z", "QW", "QX", "QY", "QZ"),
        help="with --odometry-topic: T_base_camera, the optical camera's pose in the base frame"
        " (metres; camera-to-base quaternion, wxyz); default: looked up in the bag's TF",
    )
    g.add_argument(
        "--max-gap-s",
        type=_number(positive=True),
        default=0.5,
        help="longest reference gap to interpolate across (default 0.5 s)",
    )
    g.add_argument(
        "--inlier-threshold-m",
        type=_number(positive=True),
        help="alignment outlier threshold (default: 3 x robust noise estimate, >= 1 cm)",
    )
    g.add_argument(
        "--min-reference-pairs",
        type=_int_at_least(4),
        default=10,
        help="fewest frames with a reference pose needed (default 10)",
    )
    g = p.add_argument_group("split and output")
    g.add_argument(
        "--test-fraction",
        type=_number(low=0.01, high=0.99),
        default=0.2,
        help="share of the time blocks that are test blocks (default 0.2)",
    )
    g.add_argument(
        "--split-blocks",
        type=_int_at_least(2),
        default=10,
        help="number of time blocks the frames are cut into (default 10)",
    )
    g.add_argument(
        "--split-guard-frames",
        type=_int_at_least(0),
        default=1,
        help="training frames dropped on each side of a test block (default 1)",
    )
    g.add_argument("--overwrite", action="store_true", help="recompute every step")
    g.add_argument(
        "--redo-from", choices=STEPS, help="recompute from this step on, reuse earlier ones"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars or messages")
    g.add_argument("--verbose", action="store_true", help="show pycolmap's own log")
    return p


def _known_distance(values: list[str] | None, parser: argparse.ArgumentParser):
    if values is None:
        return None
    try:
        metres = float(values[2])
    except ValueError:
        parser.error(f"--known-distance: METRES must be a number, got {values[2]!r}")
    if not (math.isfinite(metres) and metres > 0):
        parser.error(f"--known-distance: METRES must be a positive number, got {values[2]!r}")
    return (values[0], values[1], metres)


def cli(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 error, 2 bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    known = _known_distance(args.known_distance, parser)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SfmWarning)
        try:
            folder = main(
                args.input,
                args.output,
                input_kind=args.input_kind,
                image_topic=args.image_topic,
                image_rate_hz=args.image_rate_hz,
                every_nth=args.every_nth,
                min_interval_s=args.min_interval_s,
                reject_blur=not args.no_blur_rejection,
                blur_ratio=args.blur_ratio,
                max_frames=args.max_frames or None,
                image_format=args.image_format,
                intrinsics=args.intrinsics,
                camera_info_topic=args.camera_info_topic,
                camera_model=args.camera_model,
                refine_intrinsics=args.refine_intrinsics,
                matcher=args.matcher,
                overlap=args.overlap,
                max_features=args.max_features,
                init_min_tri_angle_deg=args.init_min_tri_angle,
                init_max_forward_motion=args.init_max_forward_motion,
                num_threads=args.threads,
                seed=args.seed,
                min_registered=args.min_registered,
                min_registered_share=args.min_registered_share,
                scale=args.scale,
                known_distance=known,
                odometry_topic=args.odometry_topic,
                tf_reference_frame=args.tf_reference_frame,
                camera_frame=args.camera_frame,
                camera_extrinsic=args.camera_extrinsic,
                max_gap_s=args.max_gap_s,
                inlier_threshold_m=args.inlier_threshold_m,
                min_reference_pairs=args.min_reference_pairs,
                test_fraction=args.test_fraction,
                split_blocks=args.split_blocks,
                split_guard_frames=args.split_guard_frames,
                overwrite=args.overwrite,
                redo_from=args.redo_from,
                progress=not args.no_progress,
                verbose=args.verbose,
            )
        except PoseNetTrainError as exc:
            print(f"posenet_train.sfm: error: {exc}", file=sys.stderr)
            return 1
    for warning in caught:
        print(f"posenet_train.sfm: warning: {warning.message}", file=sys.stderr)
    print(folder)
    return 0
