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
import inspect
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from posenet_core.cli import int_at_least, number, run_main
from posenet_train.sfm.frames import INPUT_KINDS, FrameSelection
from posenet_train.sfm.pipeline import STEPS, SfmWarning, main
from posenet_train.sfm.reconstruct import CAMERA_MODELS, MATCHERS, SfmOptions
from posenet_train.sfm.reference import ReferenceOptions

__all__ = ["build_parser", "cli"]

T = TypeVar("T")


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
        type=number(positive=True),
        help="image folder: frame rate that gives the images timestamps",
    )
    g.add_argument(
        "--every-nth",
        type=int_at_least(1),
        default=1,
        help="keep one frame per block of N frames (default 1)",
    )
    g.add_argument(
        "--min-interval-s",
        type=number(positive=True),
        help="blocks last at least this many seconds (time-based selection)",
    )
    g.add_argument(
        "--no-blur-rejection",
        action="store_true",
        help="keep each block's first frame and never reject blurred frames",
    )
    g.add_argument(
        "--blur-ratio",
        type=number(low=0.0, high=0.99),
        default=0.5,
        help="reject a frame sharper than less than this fraction of its neighbours' median"
        " (default 0.5; 0 disables the relative test)",
    )
    g.add_argument(
        "--max-frames",
        type=int_at_least(0),
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
        type=int_at_least(1),
        default=10,
        help="sequential matching: successors per frame (default 10)",
    )
    g.add_argument(
        "--max-features",
        type=int_at_least(64),
        default=4096,
        help="SIFT features per image (default 4096)",
    )
    g.add_argument(
        "--init-min-tri-angle",
        type=number(low=0.1, high=60.0),
        dest="init_min_tri_angle_deg",
        default=4.0,
        metavar="DEG",
        help="smallest median triangulation angle of the frame pair a model starts from"
        " (default 4; COLMAP's is 16, which a camera driving forward rarely reaches)",
    )
    g.add_argument(
        "--init-max-forward-motion",
        type=number(low=0.5, high=1.0),
        default=1.0,
        metavar="SHARE",
        help="largest share |t_z|/|t| of that pair's baseline along the optical axis (default 1:"
        " forward motion allowed; COLMAP's is 0.95, which refuses a robot driving straight)",
    )
    g.add_argument("--threads", type=int_at_least(1), default=2, help="CPU threads (default 2)")
    g.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default 0)")
    g.add_argument(
        "--min-registered",
        type=int_at_least(3),
        default=10,
        help="fewest registered frames accepted (default 10)",
    )
    g.add_argument(
        "--min-registered-share",
        type=number(low=0.0, high=1.0),
        default=0.5,
        help="smallest share of the selected frames that must register (default 0.5); below"
        " this (or --min-registered) mapping is tried once more with COLMAP's initialisation",
    )
    g = p.add_argument_group("scale and frame (at most one; none keeps SfM units)")
    scale = g.add_mutually_exclusive_group()
    scale.add_argument(
        "--scale", type=number(positive=True), help="multiply SfM units by this factor"
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
        type=number(),
        metavar=("X", "Y", "Z", "QW", "QX", "QY", "QZ"),
        help="with --odometry-topic: T_base_camera, the optical camera's pose in the base frame"
        " (metres; camera-to-base quaternion, wxyz); default: looked up in the bag's TF",
    )
    g.add_argument(
        "--max-gap-s",
        type=number(positive=True),
        default=0.5,
        help="longest reference gap to interpolate across (default 0.5 s)",
    )
    g.add_argument(
        "--inlier-threshold-m",
        type=number(positive=True),
        help="alignment outlier threshold (default: 3 x robust noise estimate, >= 1 cm)",
    )
    g.add_argument(
        "--min-reference-pairs",
        type=int_at_least(4),
        default=10,
        help="fewest frames with a reference pose needed (default 10)",
    )
    g = p.add_argument_group("split and output")
    g.add_argument(
        "--test-fraction",
        type=number(low=0.01, high=0.99),
        default=0.2,
        help="share of the time blocks that are test blocks (default 0.2)",
    )
    g.add_argument(
        "--split-blocks",
        type=int_at_least(2),
        default=10,
        help="number of time blocks the frames are cut into (default 10)",
    )
    g.add_argument(
        "--split-guard-frames",
        type=int_at_least(0),
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


def _from_args(build: Callable[..., T], args: argparse.Namespace, **overrides: Any) -> T:
    """``build(...)`` with every parsed value whose destination is one of its parameters (a
    flag named like the option it sets), then ``overrides`` (flags named otherwise)."""
    parameters = inspect.signature(build).parameters
    return build(**{k: v for k, v in vars(args).items() if k in parameters} | overrides)


def _label(parsed: argparse.Namespace, known_distance: tuple[str, str, float] | None) -> Path:
    """:func:`main` with the options the parsed flags describe."""
    return _from_args(
        main,
        parsed,
        input_path=parsed.input,
        selection=_from_args(
            FrameSelection,
            parsed,
            reject_blur=not parsed.no_blur_rejection,
            max_frames=parsed.max_frames or None,
        ),
        sfm=_from_args(SfmOptions, parsed, num_threads=parsed.threads),
        reference=_from_args(
            ReferenceOptions,
            parsed,
            scale_factor=parsed.scale,
            known_distance=known_distance,
            reference_frame=parsed.tf_reference_frame,
            min_pairs=parsed.min_reference_pairs,
        ),
        progress=not parsed.no_progress,
    )


def cli(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 error, 2 bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    known = _known_distance(args.known_distance, parser)
    folders: list = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SfmWarning)
        # The options are built inside run_main: a value they refuse is an error message.
        status = run_main(
            "posenet_train.sfm",
            _label,
            argparse.Namespace(),
            then=folders.append,
            error_status=1,
            parsed=args,
            known_distance=known,
        )
    if status:
        return status
    for warning in caught:
        print(f"posenet_train.sfm: warning: {warning.message}", file=sys.stderr)
    print(folders[0])
    return 0
