"""The middlebury_dino dataset (../shared beside the repository) and its original calibration,
the reference the Cambridge-format poses are checked against."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def dino_dir() -> Path:
    """middlebury_dino: $POSENET_DINO_DIR, or ../shared/datasets/middlebury_dino."""
    override = os.environ.get("POSENET_DINO_DIR")
    if override:
        return Path(override)
    # core/tests/ -> repository root; the shared folder sits beside the repository.
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "middlebury_dino"


def read_calibration(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{image name: (K, R, t)}`` of ``dino_par.txt`` (x ~ K [R | t] X, R and t world to
    camera), the Middlebury multi-view format: a count line, then ``name k11..k33 r11..r33 t``."""
    calibration = {}
    for line in (Path(folder) / "dino_par.txt").read_text().splitlines()[1:]:
        fields = line.split()
        if fields:
            values = np.array(fields[1:], dtype=np.float64)
            calibration[fields[0]] = (
                values[:9].reshape(3, 3),
                values[9:18].reshape(3, 3),
                values[18:21],
            )
    return calibration
