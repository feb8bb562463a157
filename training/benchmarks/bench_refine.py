"""Benchmark of pose refinement: refined vs prior on a dataset's test split, and its speed.

Usage (with the project's venv active)::

    python training/benchmarks/bench_refine.py --dataset /work/shared/datasets/middlebury_dino \\
        --map dino.map.npz [--prior-onnx model.onnx | --prior-noise 0.026 2.2] [--threads 2]

The prior is either a model file run the node's way (ONNX Runtime, the model's own
preprocessing; ``--prior-onnx``) or the ground truth perturbed by random noise whose median is
``--prior-noise METRES DEGREES`` (default 0.026 m / 2.2 deg: the trained dino model's median
error), with ``--seed``. For each test image the refiner gets the image, the map's intrinsics
and the prior. The refiner's configuration is the node's (``config/relocalize.yaml``;
``--config`` overrides), the prior limits included: their default -1 (auto) resolves, as in the
node, from the model's median error: the model file's ``posenet.median_error`` with
``--prior-onnx``, the noise's median otherwise, or ``--median-error``. Prints per-run rows:
share refined, median/p90 errors of the refined frames and of the prior on the same frames,
the pose that is published (refined where accepted, else the prior) over all frames, failure
reasons, and timings: median and p90 per stage, ms of wall
time, and ``cpu``, the CPU time of the process (all threads), which other jobs on the machine
disturb less; OpenCV is limited to ``--threads`` threads. Plus the calibration of the PnP
covariance: share of refined frames whose position / rotation error lies inside the 1/2/3-sigma
3-D ellipsoid (ideal 19.9 / 73.9 / 97.1 %) and the variance factor that would fit the median.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from posenet_core.geometry import pose_to_matrix
from posenet_core.mapfile import read_map
from posenet_core.refine import Refiner, RefinerConfig
from posenet_train.datasets import load_split


def _rotvec_to_matrix(v: np.ndarray) -> np.ndarray:
    R, _ = cv2.Rodrigues(np.asarray(v, np.float64).reshape(3, 1))
    return R


def _log_rotation(R: np.ndarray) -> np.ndarray:
    v, _ = cv2.Rodrigues(np.ascontiguousarray(R))
    return v.reshape(3)


def _errors(T_est: np.ndarray, T_true: np.ndarray) -> tuple[float, float]:
    dp = float(np.linalg.norm(T_est[:3, 3] - T_true[:3, 3]))
    angle = float(np.degrees(np.linalg.norm(_log_rotation(T_est[:3, :3] @ T_true[:3, :3].T))))
    return dp, angle


def noisy_priors(truth: list[np.ndarray], median_m: float, median_deg: float, seed: int):
    """Ground truth perturbed by isotropic Gaussian noise with the given median norms."""
    # The norm of a 3-D standard Gaussian has median 1.5382.
    rng = np.random.default_rng(seed)
    sigma_p, sigma_r = median_m / 1.5382, math.radians(median_deg) / 1.5382
    priors = []
    for T in truth:
        P = T.copy()
        P[:3, 3] += rng.normal(0, sigma_p, 3)
        P[:3, :3] = _rotvec_to_matrix(rng.normal(0, sigma_r, 3)) @ T[:3, :3]
        priors.append(P)
    return priors


def onnx_priors(model: Path, images: list[np.ndarray], threads: int) -> list[np.ndarray]:
    """Priors from a model file, read and preprocessed the node's way (posenet_ros)."""
    import onnxruntime as ort

    from posenet_core.contract import ORT_DISABLED_OPTIMIZERS
    from posenet_core.preprocess import preprocess
    from posenet_ros.model_file import load_model_info

    info = load_model_info(str(model))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        str(model),
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS),
    )
    priors = []
    for rgb in images:
        x = preprocess(rgb, info.resize_shorter, info.input_hw)
        position, quat = session.run(
            [info.position_output, info.orientation_output], {info.input_name: x}
        )
        quat = quat[0] / np.linalg.norm(quat[0])
        priors.append(pose_to_matrix(position[0], quat))
    return priors


def node_refiner_config(overrides: dict, median_error: str) -> RefinerConfig:
    """The refiner configuration the node would use: its defaults, ``overrides`` (RefinerConfig
    field -> value, as the node's ``refine.*`` parameters) and the prior limits' auto value
    (-1, the default) resolved from the model's ``posenet.median_error`` text, as the node does
    (``posenet_ros.refine_stage``)."""
    from posenet_ros.refine_stage import refiner_config_from_parameters

    values = {f"refine.{key}": value for key, value in overrides.items()}
    return refiner_config_from_parameters(values, median_error)


def _mahalanobis_shares(errors: np.ndarray, covs: np.ndarray) -> list[float]:
    d2 = np.array([e @ np.linalg.solve(c, e) for e, c in zip(errors, covs, strict=True)])
    # chi-square(3) quantiles of 1, 2, 3 sigma radii
    return [float(np.mean(d2 <= k * k)) * 100 for k in (1, 2, 3)]


def run(args: argparse.Namespace) -> dict:
    cv2.setNumThreads(args.threads)
    site_map = read_map(args.map)
    if args.median_error:
        median_error = args.median_error
    elif args.prior_onnx:
        from posenet_ros.model_file import load_model_info

        median_error = load_model_info(str(args.prior_onnx)).median_error
    else:
        median_error = f"{args.prior_noise[0]} m, {args.prior_noise[1]} deg"
    config = node_refiner_config(json.loads(args.config) if args.config else {}, median_error)
    refiner = Refiner(site_map, config)
    records = load_split(args.dataset, "test")
    if args.limit:
        records = records[: args.limit]
    images = [cv2.cvtColor(cv2.imread(str(r.image_path)), cv2.COLOR_BGR2RGB) for r in records]
    truth = [pose_to_matrix(r.position_m, r.quat_wxyz) for r in records]
    if args.prior_onnx:
        priors = onnx_priors(args.prior_onnx, images, args.threads)
        prior_name = f"model {Path(args.prior_onnx).name}"
    else:
        priors = noisy_priors(truth, args.prior_noise[0], args.prior_noise[1], args.seed)
        prior_name = f"GT + noise (median {args.prior_noise[0]} m, {args.prior_noise[1]} deg)"
    K = site_map.camera.K
    if args.image_scale != 1.0:
        s = args.image_scale
        h, w = images[0].shape[:2]
        images = [
            cv2.resize(im, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
            for im in images
        ]
        # pixel centres at integers: x' = (x + 0.5) s - 0.5
        K = np.array(
            [
                [K[0, 0] * s, 0.0, (K[0, 2] + 0.5) * s - 0.5],
                [0.0, K[1, 1] * s, (K[1, 2] + 0.5) * s - 0.5],
                [0.0, 0.0, 1.0],
            ]
        )
    refiner.refine(images[0], K, priors[0])  # warm-up (detector creation, caches)
    rows, failures, timings = [], collections.Counter(), collections.defaultdict(list)
    refined_err, prior_err_on_refined, published, prior_all = [], [], [], []
    cov_err, covs = [], []
    for image, prior, T_true in zip(images, priors, truth, strict=True):
        cpu = time.process_time()
        result = refiner.refine(image, K, prior)
        # CPU seconds of this process (all threads): less sensitive to other jobs than wall time
        timings["cpu"].append(time.process_time() - cpu)
        timings["total"].append(result.time_s)
        for k, v in result.timings.items():
            timings[k].append(v)
        pe = _errors(prior, T_true)
        prior_all.append(pe)
        if result.success:
            e = _errors(result.T_world_camera, T_true)
            refined_err.append(e)
            prior_err_on_refined.append(pe)
            published.append(e)
            dp = result.T_world_camera[:3, 3] - T_true[:3, 3]
            dth = _log_rotation(T_true[:3, :3] @ result.T_world_camera[:3, :3].T)
            cov_err.append(np.concatenate([dp, dth]))
            covs.append(result.covariance)
        else:
            failures[result.failure] += 1
            published.append(pe)
        rows.append(result)
    n = len(records)
    refined = np.array(refined_err) if refined_err else np.zeros((0, 2))
    summary = {
        "dataset": str(args.dataset),
        "map": str(args.map),
        "prior": prior_name,
        "frames": n,
        "refined_share": len(refined_err) / n,
        "refined_median_m": float(np.median(refined[:, 0])) if len(refined) else None,
        "refined_median_deg": float(np.median(refined[:, 1])) if len(refined) else None,
        "refined_p90_m": float(np.percentile(refined[:, 0], 90)) if len(refined) else None,
        "refined_p90_deg": float(np.percentile(refined[:, 1], 90)) if len(refined) else None,
        "prior_median_m": float(np.median(np.array(prior_all)[:, 0])),
        "prior_median_deg": float(np.median(np.array(prior_all)[:, 1])),
        "published_median_m": float(np.median(np.array(published)[:, 0])),
        "published_median_deg": float(np.median(np.array(published)[:, 1])),
        "failures": dict(failures),
        "median_inliers": (
            float(np.median([r.num_inliers for r in rows if r.success])) if refined_err else 0.0
        ),
        "timings_ms": {
            k: {"median": 1000 * float(np.median(v)), "p90": 1000 * float(np.percentile(v, 90))}
            for k, v in timings.items()
        },
        "median_error": median_error,
        "max_prior_distance_m": config.max_prior_distance_m,
        "max_prior_angle_deg": config.max_prior_angle_deg,
        "threads": args.threads,
        "load": os.getloadavg(),
    }
    if covs:
        e = np.array(cov_err)
        c = np.array(covs)
        for name, block in (("position", slice(0, 3)), ("rotation", slice(3, 6))):
            eb, cb = e[:, block], c[:, block, block]
            summary[f"inside_1_2_3_sigma_{name}_pct"] = _mahalanobis_shares(eb, cb)
            d2 = np.array([x @ np.linalg.solve(m, x) for x, m in zip(eb, cb, strict=True)])
            # chi-square(3) median 2.366: the factor that would make the median fit
            summary[f"variance_scale_median_{name}"] = float(np.median(d2) / 2.366)
            sigma = np.sqrt(np.trace(cb, axis1=1, axis2=2) / 3)
            summary[f"median_sigma_{name}"] = float(np.median(sigma))
    return summary


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="dataset folder (its test split is used)")
    p.add_argument("--map", required=True, type=Path, help="map file (posenet_train.map)")
    p.add_argument("--prior-onnx", type=Path, help="model file giving the priors")
    p.add_argument(
        "--prior-noise",
        nargs=2,
        type=float,
        default=(0.026, 2.2),
        metavar=("M", "DEG"),
        help="median prior error when no --prior-onnx (default 0.026 2.2)",
    )
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--threads", type=int, default=2, help="OpenCV threads (default 2)")
    p.add_argument("--limit", type=int, default=0, help="first N test images only (0: all)")
    p.add_argument(
        "--image-scale", type=float, default=1.0, help="resize the frames (and K) by this"
    )
    p.add_argument("--config", help="RefinerConfig overrides as JSON, e.g. '{\"ratio\": 0.9}'")
    p.add_argument(
        "--median-error",
        help="model median error the prior limits' auto value is resolved from, as the model "
        "file writes it ('1.78 m, 2.5 deg'; default: --prior-onnx's posenet.median_error, else "
        "--prior-noise)",
    )
    p.add_argument("--json", type=Path, help="also write the summary here")
    args = p.parse_args(argv)
    start = time.perf_counter()
    s = run(args)
    s["wall_s"] = time.perf_counter() - start
    print(f"dataset {s['dataset']}  map {s['map']}  prior: {s['prior']}")
    print(
        f"prior limits {s['max_prior_distance_m']:g} m / {s['max_prior_angle_deg']:g} deg"
        f" (model median error {s['median_error']!r})"
    )
    print(
        "| frames | refined | refined median | refined p90 | prior median | published median"
        " | median inliers | failures |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {s['frames']} | {s['refined_share']:.1%} "
        f"| {_fmt(s['refined_median_m'], '.4f')} m / {_fmt(s['refined_median_deg'], '.3f')} deg "
        f"| {_fmt(s['refined_p90_m'], '.4f')} m / {_fmt(s['refined_p90_deg'], '.3f')} deg "
        f"| {s['prior_median_m']:.4f} m / {s['prior_median_deg']:.3f} deg "
        f"| {s['published_median_m']:.4f} m / {s['published_median_deg']:.3f} deg "
        f"| {s['median_inliers']:.0f} | {s['failures'] or '-'} |"
    )
    t = s["timings_ms"]
    stages = "  ".join(f"{k} {v['median']:.1f}/{v['p90']:.1f}" for k, v in t.items())
    print(f"time ms (median/p90): {stages}  (OpenCV threads {s['threads']}, load {s['load']})")
    if "inside_1_2_3_sigma_position_pct" in s:
        for name in ("position", "rotation"):
            a, b, c = s[f"inside_1_2_3_sigma_{name}_pct"]
            print(
                f"covariance {name}: inside 1/2/3 sigma {a:.0f}/{b:.0f}/{c:.0f} % (ideal "
                f"20/74/97), variance scale (median) {s[f'variance_scale_median_{name}']:.2f}, "
                f"median sigma {s[f'median_sigma_{name}']:.2g}"
            )
    if args.json:
        args.json.write_text(json.dumps(s, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
