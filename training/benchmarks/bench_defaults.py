"""Acceptance of the training defaults on data shaped like a user's (issue 15).

Usage (with the project's venv active; one training at a time, each on one thread)::

    nice -n 10 python training/benchmarks/bench_defaults.py --workdir /tmp/bench_defaults \\
        [--sets drive mixed dino40 dino100 dino] [--frozen-blocks 11] [--max-shift 0]

Datasets written into ``--workdir`` (reused when there):

- ``drive``: ``posenet_train.synthetic --scene drive`` with its defaults (51 frames 1.2 m apart
  down a street, 960x320 (3:1), every 4th frame held out);
- ``mixed``: middlebury_dino with every other image (train and test) turned 90 deg clockwise, the
  label turned with it (the camera rolled about its optical axis: a phone held upright);
- ``dino40``, ``dino100``: ``posenet_train.subset`` of dino, 40 / 100 training images evenly
  spread, the whole test split; ``dino``: all 273.

Each set trains with the defaults (``posenet_train.train`` with only ``--frozen-blocks`` and
``--max-shift`` given, the README's CPU speed-up, plus one thread), then the final weights
(``last.pt``) and nearest-neighbour retrieval are evaluated on the test split; one row per set:
the derived input and schedule, the time, the medians, and the ratio retrieval / PoseNet.
``--resize``/``--crop`` (with a ``--tag`` for the run folders) replace the derived input, to
compare input sizes; ``--view-jitter``, ``--roll-jitter-deg``, ``--color-jitter``, ``--loss``,
``--beta`` and ``--steps`` replace the trainer's augmentation, loss and schedule defaults, to
compare them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from posenet_core.datasets import PoseRecord, write_cambridge
from posenet_core.geometry import matrix_to_quat, quat_to_matrix
from posenet_core.images import read_rgb
from posenet_train.datasets import load_split

DINO = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "middlebury_dino"
SETS = ("drive", "mixed", "dino40", "dino100", "dino")

# Turning an image 90 deg clockwise (cv2.ROTATE_90_CLOCKWISE) makes new pixel x' = -y, y' = x
# (up to the offset): camera axes X' = -Y, Y' = X, Z' = Z, so R_world_camera' = R_world_camera M^T.
_CLOCKWISE = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def write_mixed_orientation(source: Path, folder: Path) -> Path:
    """``source`` with every other image turned to portrait, labels turned with it."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        records = []
        for index, record in enumerate(load_split(source, split)):
            rgb = read_rgb(record.image_path)
            quat = record.quat_wxyz
            if index % 2:
                rgb = cv2.rotate(rgb, cv2.ROTATE_90_CLOCKWISE)
                quat = matrix_to_quat(quat_to_matrix(quat) @ _CLOCKWISE.T)
            path = images / f"{split}_{index:04d}.png"
            cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            records.append(PoseRecord(path, record.position_m, quat))
        write_cambridge(folder, split, records)
    return folder


def prepare(name: str, workdir: Path, dino: Path) -> Path:
    """The dataset folder of set ``name`` (written when missing)."""
    from posenet_train import subset, synthetic

    folder = workdir / "data" / name
    if name == "dino":
        return dino
    if (folder / "dataset_test.txt").is_file():
        return folder
    if name == "drive":
        return synthetic.main(folder, scene="drive", progress=False)
    if name == "mixed":
        return write_mixed_orientation(dino, folder)
    return subset.main(dino, folder, train=int(name.removeprefix("dino")))


def run_set(name: str, workdir: Path, dino: Path, train_options: dict, tag: str = "") -> dict:
    """Train with the defaults on set ``name``, evaluate it and retrieval; one table row."""
    from posenet_train.evaluate import main as evaluate
    from posenet_train.train import main as train

    dataset = prepare(name, workdir, dino)
    run = workdir / "runs" / (name + tag)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = train(dataset, run, resume="auto", progress=False, **train_options)
    train_s = time.perf_counter() - start
    config = json.loads((run / "config.json").read_text())
    model = evaluate(dataset, run / "eval_last", checkpoint=result["last"], progress=False)
    nn = evaluate(dataset, run / "eval_nn", baseline="nn", progress=False)
    row = {
        "set": name + tag,
        "jitter": f"view {config.get('view_jitter', 0.0):g} of the FOV,"
        f" roll {config.get('roll_jitter_deg', 0.0):g} deg",
        "train_images": len(load_split(dataset, "train")),
        "test_images": model["count"] if "count" in model else None,
        "input": f"{config['crop'][0]}x{config['crop'][1]} (resize {config['resize']})",
        "schedule": f"batch {config['batch_size']} x {config['epochs']} epochs"
        f" = {config['schedule']['total_steps']} steps",
        "train_s": train_s,
        "load": f"{load_before:.1f}-{os.getloadavg()[0]:.1f}",
        "posenet": (model["median_translation_m"], model["median_rotation_deg"]),
        "nn": (nn["median_translation_m"], nn["median_rotation_deg"]),
    }
    row["ratio"] = (row["nn"][0] / row["posenet"][0], row["nn"][1] / row["posenet"][1])
    (run / "bench_row.json").write_text(json.dumps(row, indent=2) + "\n")
    return row


def cli() -> None:
    """Command-line entry point: print one markdown row per set as it finishes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="datasets and runs go here")
    parser.add_argument("--dino", type=Path, default=DINO, help="middlebury_dino folder")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS), help="sets")
    parser.add_argument("--frozen-blocks", type=int, default=11, help="(11)")
    parser.add_argument("--max-shift", type=int, default=0, help="(0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--resize", type=int, help="instead of the derived input (comparisons)")
    parser.add_argument("--crop", help="instead of the derived input, N or H,W (comparisons)")
    parser.add_argument(
        "--view-jitter", type=float, help="pan/tilt FOV fraction (default: the trainer's)"
    )
    parser.add_argument(
        "--roll-jitter-deg", type=float, help="roll range, degrees (default: the trainer's)"
    )
    parser.add_argument("--color-jitter", type=float, help="(default: the trainer's)")
    parser.add_argument("--loss", help="loss name (default: the trainer's)")
    parser.add_argument("--beta", type=float, help="orientation weight (default: the trainer's)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: the trainer's)")
    parser.add_argument("--tag", default="", help="suffix of the run folders (comparisons)")
    args = parser.parse_args()
    options = {
        "frozen_blocks": args.frozen_blocks,
        "max_shift": args.max_shift,
        "threads": args.threads,
        "resize": args.resize,
        "crop": args.crop,
        "view_jitter": args.view_jitter,
        "roll_jitter_deg": args.roll_jitter_deg,
        "color_jitter": args.color_jitter,
        "loss": args.loss,
        "beta": args.beta,
        "steps": args.steps,
    }
    print(
        "| set | train imgs | input (derived) | schedule (derived) | train time | load |"
        " PoseNet median | retrieval median | retrieval / PoseNet |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.sets:
        r = run_set(name, args.workdir, args.dino, options, args.tag)
        print(
            f"| {r['set']} | {r['train_images']} | {r['input']} | {r['schedule']} |"
            f" {r['train_s'] / 60:.1f} min | {r['load']} |"
            f" {r['posenet'][0]:.3f} m / {r['posenet'][1]:.2f}° |"
            f" {r['nn'][0]:.3f} m / {r['nn'][1]:.2f}° |"
            f" {r['ratio'][0]:.1f}x / {r['ratio'][1]:.1f}x |",
            flush=True,
        )


if __name__ == "__main__":
    cli()
