"""A tiny Cambridge-format dataset for the model/training/export tests (written, not shipped).

Each image shows a smooth pattern that shifts with the camera's pose, so a network can learn a
little; the point is the plumbing (formats, shapes, files), not accuracy.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

IMAGE_HW = (48, 64)
RESIZE = 40
CROP = 32


def _quat_z(angle_rad: float) -> np.ndarray:
    """wxyz of a rotation about z."""
    return np.array([math.cos(angle_rad / 2), 0.0, 0.0, math.sin(angle_rad / 2)])


def pose(index: int) -> tuple[np.ndarray, np.ndarray]:
    """(camera centre, camera-to-world quat wxyz) of frame ``index``."""
    angle = 0.4 * index
    centre = np.array([math.cos(angle), math.sin(angle), 0.05 * index])
    return centre, _quat_z(angle + 0.3)


def image(index: int) -> np.ndarray:
    """An RGB uint8 image of ``IMAGE_HW`` whose content depends on the pose."""
    h, w = IMAGE_HW
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = 0.4 * index
    r = 127.5 + 120 * np.sin(xx / 7.0 + phase)
    g = 127.5 + 120 * np.cos(yy / 5.0 - phase)
    b = 127.5 + 120 * np.sin((xx + yy) / 11.0 + 2 * phase)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def write_tiny_cambridge(folder: Path, n_train: int = 12, n_test: int = 4) -> Path:
    """Write PNGs and dataset_train.txt / dataset_test.txt in the Cambridge format.

    Lines are ``path X Y Z W P Q R`` with ``W P Q R`` the WORLD-TO-CAMERA quaternion (the
    conjugate of the camera-to-world one), as in Cambridge Landmarks.
    """
    folder = Path(folder)
    (folder / "seq1").mkdir(parents=True, exist_ok=True)
    header = "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"
    splits = {"train": range(n_train), "test": range(n_train, n_train + n_test)}
    for split, indices in splits.items():
        lines = []
        for i in indices:
            name = f"seq1/frame{i:05d}.png"
            cv2.imwrite(str(folder / name), cv2.cvtColor(image(i), cv2.COLOR_RGB2BGR))
            centre, q_cw = pose(i)
            q_wc = q_cw * np.array([1.0, -1.0, -1.0, -1.0])  # world-to-camera = conjugate
            values = " ".join(f"{v:.9f}" for v in (*centre, *q_wc))
            lines.append(f"{name} {values}\n")
        (folder / f"dataset_{split}.txt").write_text(header + "".join(lines))
    return folder


#: ``posenet_train.train.main`` options of a tiny run: posenet-tiny at this dataset's resize and
#: crop, batch 4, one thread, no progress bar.
TINY_TRAIN = {
    "model": "posenet-tiny",
    "batch_size": 4,
    "resize": RESIZE,
    "crop": CROP,
    "threads": 1,
    "progress": False,
}


def train_tiny(root: Path, **options) -> tuple[Path, Path]:
    """``(dataset, best.pt)`` of a posenet-tiny run on a tiny dataset written into ``root``.

    ``options`` go to ``posenet_train.train.main`` over these defaults: 1 epoch, batch 4, the
    tiny dataset's resize and crop, 1 thread, no progress bar.
    """
    from posenet_train.train import main as train_main  # imports torch: only when training

    dataset = write_tiny_cambridge(Path(root) / "scene")
    defaults = {**TINY_TRAIN, "epochs": 1}
    result = train_main(dataset, Path(root) / "run", **{**defaults, **options})
    return dataset, result["best"]


def random_records(
    folder: Path, count: int = 6, size_hw: tuple[int, int] = (30, 40), seed: int = 0
) -> list:
    """``count`` PoseRecords of random-noise PNGs of ``size_hw`` written into ``folder``, with
    random positions and unit quaternions (for data-pipeline tests: content does not matter)."""
    from posenet_core.datasets import PoseRecord

    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        rgb = rng.integers(0, 256, size=(*size_hw, 3), dtype=np.uint8)
        path = folder / f"img{i}.png"
        assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        quat = rng.normal(size=4)
        records.append(PoseRecord(path, rng.normal(size=3), quat / np.linalg.norm(quat)))
    return records
