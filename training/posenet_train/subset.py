"""A smaller copy of a pose dataset: N training images evenly spread over the training split.

How does a method do on a small site? Take a dataset and keep fewer training images, spread
evenly over the split's order (for a recording: over its time, so the subset still covers the
whole path), and the same test split (or an evenly spread part of it). The subset is written as
a Cambridge dataset whose image paths point at the original images (nothing is copied), so that
training, evaluation and the retrieval baseline all see the same subset::

    python -m posenet_train.subset --dataset ../shared/datasets/middlebury_dino \\
        --output data/dino_40 --train 40

``subset.json`` beside the split files records the source and the chosen indices.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from posenet_core.cli import positive_int, run_main
from posenet_core.datasets import write_cambridge
from posenet_core.errors import DatasetError
from posenet_train.datasets import load_split

__all__ = ["MARKER", "build_parser", "cli", "evenly_spread", "main"]

MARKER = "subset.json"
_OWN_FILES = ("dataset_train.txt", "dataset_test.txt", MARKER)


def evenly_spread(total: int, count: int) -> list[int]:
    """``count`` indices of ``range(total)``, evenly spread, first and last included
    (``round(i * (total - 1) / (count - 1))``); all of them when ``count == total``.

    Raises DatasetError unless ``1 <= count <= total``.
    """
    for name, value in (("total", total), ("count", count)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise DatasetError(f"{name} must be an integer, got {value!r}")
    if not 1 <= count <= total:
        raise DatasetError(f"cannot pick {count} of {total} images: need 1 <= count <= {total}")
    if count == 1:
        return [0]
    # Distinct: consecutive targets are >= 1 apart because count <= total.
    return [math.floor(i * (total - 1) / (count - 1) + 0.5) for i in range(count)]


def main(
    dataset: str | Path,
    output: str | Path,
    *,
    train: int,
    test: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the subset of ``dataset`` (any format :func:`posenet_train.datasets.load_split`
    reads, or ``FORMAT:PATH``) into ``output`` and return ``output``.

    ``train`` training images evenly spread over the training split; ``test`` the same for the
    test split (None: all of it). An existing subset in ``output`` is replaced only with
    ``overwrite``; a folder holding other files is never written into.
    Raises DatasetError for a bad count, a missing or malformed dataset, or such a folder.
    """
    output = Path(output)
    records = {split: load_split(dataset, split) for split in ("train", "test")}
    chosen = {
        "train": evenly_spread(len(records["train"]), train),
        "test": (
            list(range(len(records["test"])))
            if test is None
            else evenly_spread(len(records["test"]), test)
        ),
    }
    if output.exists() and not output.is_dir():
        raise DatasetError(f"output {output} exists and is not a folder")
    if output.is_dir():
        entries = sorted(p.name for p in output.iterdir())
        foreign = [name for name in entries if name not in _OWN_FILES]
        if foreign:
            raise DatasetError(
                f"output folder {output} holds files a subset does not write"
                f" ({', '.join(foreign[:5])}); choose a new or empty folder"
            )
        if entries and not overwrite:
            raise DatasetError(
                f"{output} already holds a subset; pass --overwrite (overwrite=True) to replace it"
            )
    output.mkdir(parents=True, exist_ok=True)
    # The marker goes first and last: without a complete one the folder is a half-written
    # subset (the split files alone would pass for a dataset).
    (output / MARKER).unlink(missing_ok=True)
    for split in ("train", "test"):
        write_cambridge(output, split, [records[split][i] for i in chosen[split]])
    description = {
        "generator": "posenet_train.subset",
        "source": str(dataset),
        "source_sizes": {split: len(records[split]) for split in records},
        "indices": chosen,
        "note": "indices into the source's splits, in the order its loader returns them",
    }
    tmp = output / (MARKER + ".tmp")
    tmp.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, output / MARKER)
    return output


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m posenet_train.subset``."""
    p = argparse.ArgumentParser(
        prog="python -m posenet_train.subset",
        description="Write a smaller copy of a pose dataset: N training images evenly spread "
        "over the training split, the test split whole (or M evenly spread), as a Cambridge "
        "dataset whose image paths point at the original images.",
    )
    p.add_argument("--dataset", required=True, help="dataset folder or FORMAT:PATH")
    p.add_argument("--output", required=True, type=Path, help="folder to write the subset to")
    p.add_argument("--train", required=True, type=positive_int, help="training images to keep")
    p.add_argument("--test", type=positive_int, help="test images to keep (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace a subset in --output")
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 error, 2 bad arguments)."""
    args = build_parser().parse_args(argv)
    return run_main("posenet_train.subset", main, args, then=print, error_status=1)


if __name__ == "__main__":
    sys.exit(cli())
