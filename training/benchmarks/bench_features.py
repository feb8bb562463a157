"""Which local feature for refinement: extraction time, matches, map size, refined accuracy.

Usage (with the project's venv active)::

    python training/benchmarks/bench_features.py --dataset /work/shared/datasets/middlebury_dino \\
        --work /tmp/features [--configs sift-0.02 orb-20 ...] [--threads 2]

For each feature configuration (``--configs``; default all of :data:`CONFIGS`) it prints one
table row:

- ``extract ms``: median time to extract the features of one training image (its own size, e.g.
  640x480), OpenCV limited to ``--threads`` threads, and the median keypoint count;
- ``pair matches / inliers``: median over ``--pairs`` pairs of consecutive training images of the
  mutual ratio-test matches and of those consistent with the known poses (Sampson distance
  < 2 px);
- the map built from the training split with ``posenet_train.map`` (build time, file size, 3-D
  points);
- refinement of the test split with priors = ground truth + noise of median
  ``--prior-noise`` (default the dino model's 0.026 m / 2.2 deg): share refined, median errors,
  median time of the whole refine call.

``pycolmap-sift`` (COLMAP's SIFT, trainer side only: the node has no pycolmap) gets the first two
columns only, since the node could not describe its frames the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from posenet_core.features import FeatureConfig, extract_features, match_descriptors
from posenet_train import map as map_step
from posenet_train.datasets import dataset_intrinsics, load_split
from posenet_train.geometry import pose_to_matrix

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_refine  # noqa: E402  (a sibling script, not a package)

CONFIGS = {
    "sift-0.04": FeatureConfig(type="sift", sift_contrast_threshold=0.04),
    "sift-0.02": FeatureConfig(type="sift", sift_contrast_threshold=0.02),
    "sift-0.01": FeatureConfig(type="sift", sift_contrast_threshold=0.01),
    "sift-0.02-plain": FeatureConfig(type="sift", sift_contrast_threshold=0.02, root_sift=False),
    "sift-0.02-clahe": FeatureConfig(
        type="sift", sift_contrast_threshold=0.02, clahe_clip_limit=2.0
    ),
    "sift-0.02-1024": FeatureConfig(type="sift", sift_contrast_threshold=0.02, max_keypoints=1024),
    "orb-20": FeatureConfig(type="orb", orb_fast_threshold=20),
    "orb-7-clahe": FeatureConfig(type="orb", orb_fast_threshold=7, clahe_clip_limit=2.0),
    "pycolmap-sift": None,
}


def _read(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _pycolmap_extract(images: list[np.ndarray]):
    import pycolmap

    options = pycolmap.FeatureExtractionOptions()
    options.num_threads = 2
    options.sift.max_num_features = 2048
    sift = pycolmap.Sift(options, device=pycolmap.Device.cpu)
    out, times = [], []
    for rgb in images:
        gray = np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        t = time.perf_counter()
        keypoints, descriptors = sift.extract(gray)
        times.append(time.perf_counter() - t)
        # COLMAP pixel centres are at half-integers; descriptors are already L1-root normalised.
        out.append((keypoints[:, :2] - 0.5, np.asarray(descriptors, np.float32)))
    return out, times


def _pair_stats(features, poses, K, config: FeatureConfig, pairs: int):
    matches, inliers = [], []
    for i in range(min(pairs, len(features) - 1)):
        (xa, da), (xb, db) = features[i], features[i + 1]
        qi, ri, _ = match_descriptors(da, db, config)
        matches.append(len(qi))
        if len(qi):
            F = map_step._fundamental(poses[i], poses[i + 1], K)
            good = map_step.sampson_distance(F, xa[qi].astype(float), xb[ri].astype(float)) < 2.0
            inliers.append(int(good.sum()))
        else:
            inliers.append(0)
    return float(np.median(matches)), float(np.median(inliers))


def run_config(name: str, args: argparse.Namespace, images, poses, K) -> dict:
    row: dict = {"config": name}
    config = CONFIGS[name]
    if config is None:
        features, times = _pycolmap_extract(images)
        match_config = FeatureConfig(type="sift", root_sift=False)
    else:
        features, times = [], []
        for rgb in images:
            t = time.perf_counter()
            f = extract_features(rgb, config)
            times.append(time.perf_counter() - t)
            features.append((f.xy, f.descriptors))
        match_config = config
    row["extract_ms"] = 1000 * float(np.median(times[1:] or times))
    row["keypoints"] = float(np.median([len(x) for x, _ in features]))
    row["pair_matches"], row["pair_inliers"] = _pair_stats(
        features, poses, K, match_config, args.pairs
    )
    if config is None:
        return row
    out = args.work / f"{Path(args.dataset).name}-{name}.npz"
    t = time.perf_counter()
    map_step.main(
        args.dataset,
        out,
        feature=config,
        descriptors=args.descriptors,
        max_keyframes=args.max_keyframes,
        overwrite=True,
        progress=False,
    )
    row["map_build_s"] = time.perf_counter() - t
    row["map_mb"] = out.stat().st_size / 1e6
    summary = bench_refine.run(
        argparse.Namespace(
            dataset=args.dataset,
            map=out,
            prior_onnx=None,
            prior_noise=args.prior_noise,
            seed=0,
            threads=args.threads,
            limit=args.limit,
            image_scale=1.0,
            config=None,
        )
    )
    from posenet_core.mapfile import read_map

    row["points"] = read_map(out).num_points
    row.update(
        {
            "refined": summary["refined_share"],
            "median_m": summary["refined_median_m"],
            "median_deg": summary["refined_median_deg"],
            "refine_ms": summary["timings_ms"]["total"]["median"],
            "inliers": summary["median_inliers"],
        }
    )
    return row


def _cell(row: dict, key: str, spec: str) -> str:
    value = row.get(key)
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--dataset", required=True, help="posed dataset (train split maps, test refines)"
    )
    p.add_argument("--work", required=True, type=Path, help="folder for the maps built")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    p.add_argument("--threads", type=int, default=2, help="OpenCV threads (default 2)")
    p.add_argument("--frames", type=int, default=20, help="images timed for extraction (20)")
    p.add_argument("--pairs", type=int, default=30, help="consecutive pairs matched (30)")
    p.add_argument("--limit", type=int, default=0, help="test images refined (0: all)")
    p.add_argument(
        "--descriptors",
        choices=map_step.DESCRIPTOR_MODES,
        default="point",
        help="map descriptors: one per 3-D point (default) or per observation",
    )
    p.add_argument("--max-keyframes", type=int, default=0, help="training images mapped (0: all)")
    p.add_argument(
        "--prior-noise", nargs=2, type=float, default=(0.026, 2.2), metavar=("M", "DEG")
    )
    args = p.parse_args(argv)
    cv2.setNumThreads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    records = load_split(args.dataset, "train")
    count = max(args.frames, args.pairs + 1)
    records = records[:count]
    images = [_read(r.image_path) for r in records]
    poses = [pose_to_matrix(r.position_m, r.quat_wxyz) for r in records]
    first = images[0].shape
    camera, _ = dataset_intrinsics(args.dataset)
    print(
        f"dataset {args.dataset} ({first[1]}x{first[0]}), OpenCV threads {args.threads}, "
        f"load {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    print(
        "| feature | extract ms | keypoints | pair matches / inliers | map build s | map MB "
        "| points | refined | median m / deg | refine ms | inliers |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.configs:
        row = run_config(name, args, images, poses, camera.K)
        print(
            f"| {name} | {_cell(row, 'extract_ms', '.0f')} | {_cell(row, 'keypoints', '.0f')} "
            f"| {_cell(row, 'pair_matches', '.0f')} / {_cell(row, 'pair_inliers', '.0f')} "
            f"| {_cell(row, 'map_build_s', '.0f')} | {_cell(row, 'map_mb', '.1f')} "
            f"| {_cell(row, 'points', 'd')} | {_cell(row, 'refined', '.0%')} "
            f"| {_cell(row, 'median_m', '.4f')} / {_cell(row, 'median_deg', '.3f')} "
            f"| {_cell(row, 'refine_ms', '.0f')} | {_cell(row, 'inliers', '.0f')} |",
            flush=True,
        )
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
