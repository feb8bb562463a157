"""Refinement on a forward drive with sparse mapping frames (issue 14's acceptance), end to end.

Usage (with the project's venv active; CPU-heavy: nice it on a shared machine)::

    nice -n 10 python training/benchmarks/bench_drive_refine.py \\
        --workdir /tmp/bench_defaults [--threads 1]

Chains what a user does, each step reused when its output is already in ``--workdir`` (the
layout of ``bench_defaults.py``, so a drive trained there is picked up):

1. render the drive (``posenet_train.synthetic --scene drive`` defaults: 51 frames 1.2 m apart,
   960x320, every 4th frame held out) -> ``WORKDIR/data/drive``;
2. train it with the defaults (``bench_defaults.run_set``: only ``--frozen-blocks`` and
   ``--max-shift``) and evaluate it and nearest-neighbour retrieval -> ``WORKDIR/runs/drive``;
3. export ``last.pt`` (``posenet_train.export``; the file's ``posenet.median_error`` is the
   checkpoint's last validation) -> ``WORKDIR/models/drive.onnx``;
4. build the map of the training split (``posenet_train.map`` defaults, for that model file)
   -> ``WORKDIR/maps/drive.map.npz``;
5. ``bench_refine.py`` on the test split with the node's refiner configuration (``--config``
   adds overrides), once with the model file as the prior and once with the ground truth plus
   noise at the model's median error (``--prior-noise``, same prior limits).

Prints the steps' numbers and one markdown row per prior; ``WORKDIR/drive_refine.json`` keeps
them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_defaults  # noqa: E402
import bench_refine  # noqa: E402


def trained_row(workdir: Path, options: dict) -> dict:
    """The drive's bench_defaults row: read when the run finished before, else trained now."""
    row_path = workdir / "runs" / "drive" / "bench_row.json"
    if row_path.is_file():
        return json.loads(row_path.read_text())
    return bench_defaults.run_set("drive", workdir, bench_defaults.DINO, options)


def exported_model(workdir: Path) -> Path:
    """The drive model file (``last.pt`` exported), written when missing."""
    from posenet_train.export import main as export

    model = workdir / "models" / "drive.onnx"
    if not model.is_file():
        model.parent.mkdir(parents=True, exist_ok=True)
        export(workdir / "runs" / "drive" / "last.pt", model)
    return model


def built_map(workdir: Path, dataset: Path, model: Path, threads: int) -> tuple[Path, dict]:
    """The drive's map (``posenet_train.map`` defaults) and its build facts."""
    from posenet_core.mapfile import read_map
    from posenet_train.map import main as build_map

    path = workdir / "maps" / "drive.map.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    build_map(str(dataset), path, model=model, num_threads=threads, progress=False)
    site_map = read_map(path)
    provenance = site_map.provenance
    facts = {
        "keyframes": len(site_map.keyframe_names),
        "points": len(site_map.point_xyz_m),
        "size_mb": path.stat().st_size / 1e6,
        "build_s": provenance.get("statistics", {}).get("seconds", {}).get("total"),
        "created": provenance.get("created"),
        "load": f"{load_before:.1f}-{os.getloadavg()[0]:.1f}",
        "statistics": provenance.get("statistics", {}),
    }
    return path, facts


def refine(args: list[str], out: Path) -> dict:
    """One ``bench_refine.py`` run (its table printed); its summary."""
    bench_refine.main([*args, "--json", str(out)])
    return json.loads(out.read_text())


def main(workdir: Path, threads: int, frozen_blocks: int, max_shift: int, config: str) -> dict:
    """Run (or reuse) every step; return the numbers written to ``drive_refine.json``."""
    dataset = bench_defaults.prepare("drive", workdir, bench_defaults.DINO)
    options = {"frozen_blocks": frozen_blocks, "max_shift": max_shift, "threads": threads}
    row = trained_row(workdir, options)
    model = exported_model(workdir)
    map_path, map_facts = built_map(workdir, dataset, model, threads)
    common = ["--dataset", str(dataset), "--map", str(map_path), "--threads", str(threads)]
    if config:
        common += ["--config", config]
    model_prior = refine([*common, "--prior-onnx", str(model)], workdir / "refine_model.json")
    noise = (model_prior["prior_median_m"], model_prior["prior_median_deg"])
    noise_prior = refine(
        [
            *common,
            "--prior-noise",
            f"{noise[0]:.4f}",
            f"{noise[1]:.3f}",
            "--median-error",
            model_prior["median_error"],
        ],
        workdir / "refine_noise.json",
    )
    result = {"train": row, "model": str(model), "map": map_facts}
    result["refine"] = {"model": model_prior, "noise": noise_prior}
    (workdir / "drive_refine.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    return result


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def cli() -> int:
    """Command-line entry point: the steps' numbers and one markdown row per prior."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="data, runs, model, map")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenCV/pycolmap threads (1)")
    parser.add_argument("--frozen-blocks", type=int, default=11, help="training (11)")
    parser.add_argument("--max-shift", type=int, default=0, help="training (0)")
    parser.add_argument(
        "--config", default="", help="RefinerConfig overrides as JSON (default: the node's)"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    r = main(args.workdir, args.threads, args.frozen_blocks, args.max_shift, args.config)
    t, m = r["train"], r["map"]
    print(
        f"trained: {t['input']}, {t['schedule']}, {t['train_s'] / 60:.1f} min (load {t['load']});"
        f" PoseNet {t['posenet'][0]:.3f} m / {t['posenet'][1]:.2f} deg,"
        f" retrieval {t['nn'][0]:.3f} m / {t['nn'][1]:.2f} deg"
    )
    print(
        f"map: {m['keyframes']} keyframes, {m['points']} points, {m['size_mb']:.1f} MB,"
        f" built in {_fmt(m['build_s'], '.0f')} s ({m['created']}, load {m['load']})"
    )
    print(
        "| prior | prior limits | frames | refined | refined median | refined p90 | prior median"
        " | published median | failures | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, s in r["refine"].items():
        print(
            f"| {name}: {s['prior']} | {s['max_prior_distance_m']:g} m / "
            f"{s['max_prior_angle_deg']:g} deg | {s['frames']} | {s['refined_share']:.0%} "
            f"| {_fmt(s['refined_median_m'], '.4f')} m / {_fmt(s['refined_median_deg'], '.3f')}"
            f" deg | {_fmt(s['refined_p90_m'], '.4f')} m / {_fmt(s['refined_p90_deg'], '.3f')}"
            f" deg | {s['prior_median_m']:.3f} m / {s['prior_median_deg']:.2f} deg"
            f" | {s['published_median_m']:.4f} m / {s['published_median_deg']:.3f} deg"
            f" | {s['failures'] or '-'} | {s['load'][0]:.1f} |"
        )
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
