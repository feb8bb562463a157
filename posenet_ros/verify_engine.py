"""Prove on the target that an engine computes what the model file computes.

Runs the cached TensorRT engine (or, with ``--candidate-onnx``, another ONNX file such as an
INT8-quantised one) and ONNX Runtime on the FP32 model file over the calibration images, one
image at a time as the node does, and prints the largest and median differences of the outputs:
position in metres (Euclidean distance) and rotation in degrees (angle between the normalised
quaternions, sign-invariant). Exit status 0 when both maxima are within the limits, 1 when not,
2 on an error. It never builds an engine: build it first with ``build_engine``.

Installed as ``ros2 run posenet_ros verify_engine``::

    ros2 run posenet_ros verify_engine --model dino.onnx               # fp16 engine vs ORT
    ros2 run posenet_ros verify_engine --model dino.onnx --precision int8 --max-position-m 0.1
    python -m posenet_ros.verify_engine --model dino.onnx --candidate-onnx dino.int8.onnx
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posenet_core.calibration import default_calibration_path
from posenet_core.cli import positive_float, positive_int, run_main
from posenet_ros.errors import BackendError
from posenet_ros.model_file import load_model_info
from posenet_ros.tensorrt import DEFAULT_PRECISION, PRECISIONS, load_calibration_images
from posenet_ros.tensorrt.cli import add_engine_options

__all__ = [
    "DEFAULT_MAX_POSITION_M",
    "DEFAULT_MAX_ROTATION_DEG",
    "VerifyReport",
    "build_parser",
    "cli",
    "main",
    "pose_differences",
]

#: Default limits: far below PoseNet's own error (decimetres, degrees), far above FP16 rounding.
DEFAULT_MAX_POSITION_M = 0.05
DEFAULT_MAX_ROTATION_DEG = 1.0


def pose_differences(
    position_a_m: np.ndarray,
    quat_a_wxyz: np.ndarray,
    position_b_m: np.ndarray,
    quat_b_wxyz: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``(position distance m, rotation angle deg)`` between two sets of outputs.

    Quaternions are normalised first (as the node does) and ``q`` equals ``-q``. A row with a
    non-finite value, or a zero quaternion, gives NaN (the caller reports it as a failure).
    """
    pa = np.asarray(position_a_m, dtype=np.float64).reshape(-1, 3)
    pb = np.asarray(position_b_m, dtype=np.float64).reshape(-1, 3)
    qa = np.asarray(quat_a_wxyz, dtype=np.float64).reshape(-1, 4)
    qb = np.asarray(quat_b_wxyz, dtype=np.float64).reshape(-1, 4)
    if not (len(pa) == len(pb) == len(qa) == len(qb)):
        raise BackendError(
            f"output counts differ: positions {len(pa)} vs {len(pb)}, quaternions "
            f"{len(qa)} vs {len(qb)}"
        )
    position_m = np.linalg.norm(pa - pb, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        na = qa / np.linalg.norm(qa, axis=1, keepdims=True)
        nb = qb / np.linalg.norm(qb, axis=1, keepdims=True)
        dot = np.abs(np.sum(na * nb, axis=1))
    rotation_deg = np.degrees(2.0 * np.arccos(np.clip(dot, 0.0, 1.0)))
    rotation_deg[~np.isfinite(dot)] = np.nan
    return position_m, rotation_deg


@dataclass(frozen=True)
class VerifyReport:
    """The comparison's result (what ``main`` returns and prints)."""

    count: int
    position_max_m: float
    position_median_m: float
    rotation_max_deg: float
    rotation_median_deg: float
    non_finite: int
    reference: str
    candidate: str
    reference_median_ms: float
    candidate_median_ms: float
    max_position_m: float
    max_rotation_deg: float
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (e.g. for JSON)."""
        return asdict(self)


def _iterate(count: int, desc: str):
    try:
        from tqdm import tqdm  # noqa: PLC0415  optional on the robot
    except ImportError:
        return range(count)
    return tqdm(range(count), desc=desc, unit="image", leave=False)


def main(
    model: str | Path,
    *,
    calibration: str | Path | None = None,
    engine_cache_dir: str | Path | None = None,
    precision: str = DEFAULT_PRECISION,
    candidate_onnx: str | Path | None = None,
    limit: int | None = None,
    max_position_m: float = DEFAULT_MAX_POSITION_M,
    max_rotation_deg: float = DEFAULT_MAX_ROTATION_DEG,
    num_threads: int = 0,
    log: Callable[[str], None] = print,
    candidate: Any = None,
) -> VerifyReport:
    """Compare the engine (or ``candidate_onnx``) with ONNX Runtime on the calibration images.

    ``calibration`` defaults to ``<model stem>_calibration.npy`` beside the model; ``limit``
    uses only the first images. ``candidate`` (a Backend) replaces the engine, for tests.
    Raises PoseNetError subclasses (a missing engine: build it first).
    """
    from posenet_ros.backends.onnxruntime import OnnxRuntimeBackend  # noqa: PLC0415

    if precision not in PRECISIONS:
        raise BackendError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    limits = (("max_position_m", max_position_m), ("max_rotation_deg", max_rotation_deg))
    for name, value in limits:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise BackendError(f"{name} {value!r} must be a finite number > 0")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise BackendError(f"limit {limit!r} must be an integer >= 1")
    model = Path(model)
    info = load_model_info(str(model))
    calibration = Path(calibration) if calibration else default_calibration_path(model)
    images = load_calibration_images(calibration, info.input_hw)
    if limit is not None:
        images = images[:limit]
    reference = OnnxRuntimeBackend(str(model), info, num_threads=num_threads)
    if candidate is None:
        if candidate_onnx is not None:
            candidate_info = load_model_info(str(candidate_onnx))
            if candidate_info.input_hw != info.input_hw:
                raise BackendError(
                    f"{candidate_onnx} takes {candidate_info.input_hw}, {model} takes "
                    f"{info.input_hw}: not the same network"
                )
            candidate = OnnxRuntimeBackend(
                str(candidate_onnx), candidate_info, num_threads=num_threads
            )
        else:
            from posenet_ros.backends.tensorrt import create_tensorrt_backend  # noqa: PLC0415

            candidate = create_tensorrt_backend(
                str(model),
                info,
                log=log,
                engine_cache_dir=str(engine_cache_dir or ""),
                precision=precision,
                allow_build=False,
            )
    log(f"reference: {reference.describe()}")
    log(f"candidate: {candidate.describe()}")
    count = len(images)
    outputs: dict[str, list] = {"rp": [], "rq": [], "cp": [], "cq": []}
    times: dict[str, list[float]] = {"r": [], "c": []}
    for i in _iterate(count, "verifying"):
        image = images[i : i + 1]
        for tag, backend in (("r", reference), ("c", candidate)):
            start = time.perf_counter()
            named = backend.infer(image)
            times[tag].append(time.perf_counter() - start)
            position = named[backend.info.position_output]
            quat = named[backend.info.orientation_output]
            outputs[tag + "p"].append(position)
            outputs[tag + "q"].append(quat)
    position_m, rotation_deg = pose_differences(
        np.concatenate(outputs["rp"]),
        np.concatenate(outputs["rq"]),
        np.concatenate(outputs["cp"]),
        np.concatenate(outputs["cq"]),
    )
    finite = np.isfinite(position_m) & np.isfinite(rotation_deg)
    non_finite = int(count - finite.sum())

    def stat(values: np.ndarray, fn) -> float:
        values = values[finite]
        return float(fn(values)) if values.size else math.nan

    report = VerifyReport(
        count=count,
        position_max_m=stat(position_m, np.max),
        position_median_m=stat(position_m, np.median),
        rotation_max_deg=stat(rotation_deg, np.max),
        rotation_median_deg=stat(rotation_deg, np.median),
        non_finite=non_finite,
        reference=reference.describe(),
        candidate=candidate.describe(),
        reference_median_ms=1000.0 * float(np.median(times["r"])),
        candidate_median_ms=1000.0 * float(np.median(times["c"])),
        max_position_m=float(max_position_m),
        max_rotation_deg=float(max_rotation_deg),
        passed=False,
    )
    passed = (
        non_finite == 0
        and report.position_max_m <= max_position_m
        and report.rotation_max_deg <= max_rotation_deg
    )
    report = VerifyReport(**{**report.as_dict(), "passed": passed})
    log(
        f"{count} calibration images from {calibration}:\n"
        f"  position difference: max {report.position_max_m:.4g} m, "
        f"median {report.position_median_m:.4g} m (limit {max_position_m:g} m)\n"
        f"  rotation difference: max {report.rotation_max_deg:.4g} deg, "
        f"median {report.rotation_median_deg:.4g} deg (limit {max_rotation_deg:g} deg)\n"
        + (f"  {non_finite} image(s) gave NaN/inf on one side\n" if non_finite else "")
        + f"  median latency per image: reference {report.reference_median_ms:.2f} ms, "
        f"candidate {report.candidate_median_ms:.2f} ms\n"
        + ("PASS: the candidate matches the model file" if passed else "FAIL: outside limits")
    )
    return report


def build_parser() -> argparse.ArgumentParser:
    """The ``verify_engine`` argument parser."""
    p = argparse.ArgumentParser(
        prog="verify_engine",
        description="Compare the cached TensorRT engine (or another ONNX file) with ONNX Runtime "
        "on the model's calibration images; print max/median position and rotation "
        "differences. Exit status 0 = within limits, 1 = outside, 2 = error.",
    )
    p.add_argument("--model", required=True, help="the FP32 model file (.onnx), the reference")
    p.add_argument(
        "--calibration",
        default=None,
        help="images .npy float32 [N,3,H,W] 0..1 (default <model stem>_calibration.npy)",
    )
    add_engine_options(p, precision_help="which cached engine to check")
    p.add_argument(
        "--candidate-onnx",
        default=None,
        help="compare this ONNX file (e.g. an INT8 one) through ONNX Runtime, not the engine",
    )
    p.add_argument("--limit", type=positive_int, default=None, help="use only the first N images")
    p.add_argument(
        "--max-position-m",
        type=positive_float,
        default=DEFAULT_MAX_POSITION_M,
        help=f"largest allowed position difference, m (default {DEFAULT_MAX_POSITION_M})",
    )
    p.add_argument(
        "--max-rotation-deg",
        type=positive_float,
        default=DEFAULT_MAX_ROTATION_DEG,
        help=f"largest allowed rotation difference, deg (default {DEFAULT_MAX_ROTATION_DEG})",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="ONNX Runtime intra-op threads (default 0: ONNX Runtime chooses)",
    )
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``verify_engine`` / ``python -m posenet_ros.verify_engine``."""
    args = build_parser().parse_args(argv)
    return run_main(
        "verify_engine",
        main,
        args,
        then=lambda report: 0 if report.passed else 1,
        handled=("threads",),
        num_threads=args.threads,
    )


if __name__ == "__main__":
    sys.exit(cli())
