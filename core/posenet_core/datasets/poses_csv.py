"""``poses_{split}.csv``: capture times (and exact poses) of a split's images.

Written by ``posenet_train.synthetic`` beside a Cambridge split file: columns
``image,timestamp_s,x_m,y_m,z_m,qw,qx,qy,qz`` with ``T_world_camera`` poses. It gives each image
its capture time; its poses must agree with the split file's (a check that the two files
describe the same frames).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from posenet_core.datasets.common import PoseRecord, parse_number, read_lines, unit_quaternion
from posenet_core.errors import DatasetError

__all__ = ["POSES_CSV_COLUMNS", "attach_timestamps", "read_poses_csv"]

POSES_CSV_COLUMNS = ("image", "timestamp_s", "x_m", "y_m", "z_m", "qw", "qx", "qy", "qz")
# poses_{split}.csv and the split file describe the same frames; both are written with full
# precision, so anything above rounding means they disagree.
POSE_AGREEMENT_M = 1e-6
POSE_AGREEMENT_QUAT = 1e-6


def read_poses_csv(path: Path) -> dict[str, tuple[float, np.ndarray, np.ndarray, int]]:
    """Read ``poses_{split}.csv``: image -> ``(timestamp_s, position_m, quat_wxyz, line)``.

    Columns ``image,timestamp_s,x_m,y_m,z_m,qw,qx,qy,qz`` (``T_world_camera``). Raises
    DatasetError naming file:line:value for a wrong header, a wrong field count, a non-number,
    a negative timestamp, timestamps that do not increase, a non-unit quaternion or an image
    listed twice.
    """
    path = Path(path)
    lines = read_lines(path, "poses CSV")
    rows = list(csv.reader(lines))
    if not rows or tuple(c.strip() for c in rows[0]) != POSES_CSV_COLUMNS:
        got = ",".join(rows[0]) if rows else "(empty file)"
        raise DatasetError(
            f"{path}:1: expected the header {','.join(POSES_CSV_COLUMNS)}, got {got}"
        )
    poses: dict[str, tuple[float, np.ndarray, np.ndarray, int]] = {}
    previous: float | None = None
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{path}:{lineno}"
        if len(row) != len(POSES_CSV_COLUMNS):
            raise DatasetError(
                f"{where}: expected {len(POSES_CSV_COLUMNS)} fields, got {len(row)}: {row!r}"
            )
        image = row[0].strip()
        values = [
            parse_number(t, where, n) for n, t in zip(POSES_CSV_COLUMNS[1:], row[1:], strict=True)
        ]
        timestamp_s = values[0]
        if timestamp_s < 0.0:
            raise DatasetError(f"{where}: timestamp_s must be >= 0, got {row[1]!r}")
        if previous is not None and timestamp_s <= previous:
            raise DatasetError(
                f"{where}: timestamp_s {row[1]!r} is not after the previous row's {previous!r};"
                " timestamps must increase"
            )
        previous = timestamp_s
        if image in poses:
            raise DatasetError(
                f"{where}: image {image!r} already listed on line {poses[image][3]}"
            )
        quat = unit_quaternion(values[4:], where, "qw qx qy qz")
        poses[image] = (timestamp_s, np.array(values[1:4]), quat, lineno)
    return poses


def attach_timestamps(frames: list[PoseRecord], folder: Path, csv_path: Path) -> list[PoseRecord]:
    """``frames`` with the capture times of ``csv_path`` (see the module doc); DatasetError when
    an image is missing from the CSV, its pose differs or the times do not increase."""
    poses = read_poses_csv(csv_path)
    stamped: list[PoseRecord] = []
    for frame in frames:
        try:
            key = frame.image_path.relative_to(folder.absolute()).as_posix()
        except ValueError:
            key = frame.image_path.as_posix()
        entry = poses.get(key)
        if entry is None:
            raise DatasetError(
                f"{csv_path}: no row for image {key!r} of the split file; both files must list"
                " the same images"
            )
        timestamp_s, position_m, quat_wxyz, lineno = entry
        dq = min(
            float(np.max(np.abs(quat_wxyz - frame.quat_wxyz))),
            float(np.max(np.abs(quat_wxyz + frame.quat_wxyz))),
        )
        dp = float(np.max(np.abs(position_m - frame.position_m)))
        if dp > POSE_AGREEMENT_M or dq > POSE_AGREEMENT_QUAT:
            raise DatasetError(
                f"{csv_path}:{lineno}: pose of {key!r} differs from the split file's (position"
                f" by {dp:.3g} m, quaternion by {dq:.3g}); the files describe different frames"
            )
        if stamped and timestamp_s <= stamped[-1].timestamp_s:
            raise DatasetError(
                f"{csv_path}:{lineno}: timestamp of {key!r} ({timestamp_s!r} s) is not after the"
                f" previous image's in the split file ({stamped[-1].timestamp_s!r} s); the split"
                " file must list the images in time order"
            )
        stamped.append(
            PoseRecord(frame.image_path, frame.position_m, frame.quat_wxyz, timestamp_s)
        )
    return stamped
