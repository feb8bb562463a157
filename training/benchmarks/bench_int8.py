"""Benchmark of INT8 model files: accuracy against ground truth and CPU speed, FP32 vs INT8.

Usage (with the project's venv active)::

    python training/benchmarks/bench_int8.py \\
        --model demo /data/demo_scene demo.onnx demo.int8.onnx demo.full.int8.onnx \\
        --model dino ../shared/datasets/middlebury_dino dino.onnx dino.int8.onnx \\
        [--split test] [--threads 2] [--runs 200] [--repeats 3] [--no-accuracy]

Each ``--model LABEL DATASET FP32 [INT8 ...]`` names a dataset (``none`` to skip accuracy), the
FP32 model file and any INT8 files made from it (``posenet_train.quantize``). Prints, per file:

- the median translation / rotation error on the split (every image, preprocessed as the node
  does, ONNX Runtime CPU) and the increase over FP32;
- the median latency of one batch-1 inference with ``--threads`` intra-op threads. Every file of
  every model is timed in the same run, in turns (``--runs`` split into 20 turns that alternate
  between the files), so load changes on a shared machine hit all files alike; the run is
  repeated ``--repeats`` times and the speed-up over FP32 of each repeat is shown with the
  median. ``uptime``'s load average is printed before and after.

The images fed to the latency runs are the models' calibration images (any image gives the same
time: the graphs have no data-dependent control flow).
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from posenet_core.calibration import calibration_paths
from posenet_train.evaluate import read_onnx_contract
from posenet_train.quantize import (
    _session,
    load_calibration,
    load_evaluation_images,
    time_in_turns,
)
from posenet_train.quantize_search import PoseEvaluator


def _load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main(
    models: list[list[str]],
    *,
    split: str = "test",
    threads: int = 2,
    runs: int = 200,
    repeats: int = 3,
    accuracy: bool = True,
) -> list[dict]:
    """Measure every file; returns one row per file (see the module docstring)."""
    rows: list[dict] = []
    feeds = []
    for entry in models:
        label, dataset, fp32, *int8 = entry
        fp32 = Path(fp32)
        contract = read_onnx_contract(
            dict(_session(fp32, threads).get_modelmeta().custom_metadata_map), fp32
        )
        images = load_calibration(calibration_paths(fp32)[0], contract.input_hw)
        evaluator = None
        if accuracy and dataset != "none":
            eval_images, gt, _ = load_evaluation_images(
                dataset, split, contract.resize_shorter, contract.input_hw, 100000
            )
            evaluator = PoseEvaluator(fp32, contract, eval_images, gt, threads)
        for index, path in enumerate([fp32, *map(Path, int8)]):
            row = {"model": label, "file": path.name, "fp32": index == 0, "ms": []}
            if evaluator is not None:
                if index == 0:
                    summary = evaluator.fp32_summary
                    row.update(
                        t=summary["median_translation_m"],
                        r=summary["median_rotation_deg"],
                        dt=0.0,
                        dr=0.0,
                    )
                else:
                    e = evaluator.evaluate(path)
                    row.update(
                        t=e["median_translation_m"],
                        r=e["median_rotation_deg"],
                        dt=e["increase_translation"],
                        dr=e["increase_rotation"],
                    )
            rows.append(row)
            feeds.append((_session(path, threads), {contract.input_name: images[:1]}))
    print(f"before timing: {_load()}")
    for repeat in range(repeats):
        for row, ms in zip(rows, time_in_turns(feeds, runs=runs, rounds=20), strict=True):
            row["ms"].append(ms)
        print(f"repeat {repeat + 1}/{repeats} done: {_load()}")
    print(
        f"\n{split} split; ONNX Runtime CPU, batch 1, {threads} threads, median of {runs} runs "
        f"per repeat, {repeats} repeats\n"
    )
    print("| model | file | median error | vs FP32 | latency (repeats) | speed-up (repeats) |")
    print("|---|---|---|---|---|---|")
    reference: list[float] = []
    for row in rows:
        if row["fp32"]:
            reference = row["ms"]
        speedups = [f / i for f, i in zip(reference, row["ms"], strict=True)]
        row["speedup"] = statistics.median(speedups)
        error = f"{row['t']:.4f} m / {row['r']:.3f}°" if "t" in row else "-"
        change = (
            f"{100 * row['dt']:+.1f} % / {100 * row['dr']:+.1f} %"
            if "t" in row and not row["fp32"]
            else "-"
        )
        latency = (
            f"{statistics.median(row['ms']):.2f} ms ("
            + ", ".join(f"{ms:.2f}" for ms in row["ms"])
            + ")"
        )
        speed = f"**{row['speedup']:.2f}x** (" + ", ".join(f"{s:.2f}" for s in speedups) + ")"
        print(f"| {row['model']} | {row['file']} | {error} | {change} | {latency} | {speed} |")
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's argument parser."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        nargs="+",
        action="append",
        required=True,
        metavar="LABEL DATASET FP32 [INT8",
        help="a label, the dataset (or none), the FP32 file and its INT8 files; repeatable",
    )
    p.add_argument("--split", default="test", choices=("train", "test"), help="default test")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--runs", type=int, default=200, help="timed runs per file and repeat")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats (default 3)")
    p.add_argument("--no-accuracy", action="store_true", help="time only")
    return p


if __name__ == "__main__":
    args = build_parser().parse_args()
    for entry in args.model:
        if len(entry) < 3:
            raise SystemExit(f"--model needs LABEL DATASET FP32 [INT8 ...], got {entry}")
    main(
        args.model,
        split=args.split,
        threads=args.threads,
        runs=args.runs,
        repeats=args.repeats,
        accuracy=not args.no_accuracy,
    )
