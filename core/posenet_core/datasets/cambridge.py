"""Cambridge Landmarks text format (PoseNet's own datasets, and /work/shared middlebury_dino).

A split file ``dataset_train.txt`` / ``dataset_test.txt`` in the dataset folder has three header
lines, then one line per image::

    seq1/frame00001.png X Y Z W P Q R

``X Y Z`` is the camera centre in the world frame (metres) and ``W P Q R`` the unit quaternion
(w, x, y, z) of the *world-to-camera* rotation (VisualSFM's convention). The reader converts each
line once into the internal ``T_world_camera`` convention
(:func:`posenet_core.geometry.cambridge_to_world_camera`: the camera-to-world quaternion is the
conjugate). Image paths are relative to the dataset folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from posenet_core.datasets.common import (
    QUAT_NORM_TOLERANCE,
    SPLITS,
    PoseRecord,
    check_split,
    parse_number,
    read_lines,
    require_image,
    unit_quaternion,
)
from posenet_core.errors import DatasetError
from posenet_core.geometry import cambridge_to_world_camera, world_camera_to_cambridge

__all__ = [
    "HEADER",
    "QUAT_NORM_TOLERANCE",
    "is_cambridge",
    "load_cambridge",
    "read_cambridge_file",
    "split_file",
    "write_cambridge",
]

HEADER = ("Visual Landmark Dataset V1", "ImageFile, Camera Position [X Y Z W P Q R]", "")


def split_file(folder: Path, split: str) -> Path:
    """Path of the split file ``dataset_{split}.txt`` in ``folder``."""
    return Path(folder) / f"dataset_{check_split(split)}.txt"


def is_cambridge(folder: Path) -> bool:
    """True if ``folder`` holds a Cambridge split file (train or test)."""
    return any((Path(folder) / f"dataset_{s}.txt").is_file() for s in SPLITS)


def _is_data_line(fields: list[str]) -> bool:
    if len(fields) != 8:
        return False
    try:
        [float(v) for v in fields[1:]]
    except ValueError:
        return False
    return True


def read_cambridge_file(
    path: Path, *, image_root: Path | None = None, check_images: bool = True
) -> list[PoseRecord]:
    """Read one Cambridge split file into records (``T_world_camera``), in file order.

    Args:
        path: the text file.
        image_root: folder the image paths are relative to (default: the file's folder).
        check_images: raise if an image file does not exist.

    Raises:
        DatasetError naming file, line and value for: a missing file, a data line in the header
        position, a wrong field count, a non-number or non-finite number, a quaternion whose norm
        is off 1 by more than ``QUAT_NORM_TOLERANCE`` (smaller deviations are renormalised), a
        missing image, or a file with no images.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    lines = read_lines(path, "Cambridge split file")
    for lineno, line in enumerate(lines[: len(HEADER)], start=1):
        if _is_data_line(line.split()):
            raise DatasetError(
                f"{path}:{lineno}: expected {len(HEADER)} header lines before the data, but this"
                f" line is a data line: {line.strip()!r}"
            )
    records: list[PoseRecord] = []
    for lineno, line in enumerate(lines[len(HEADER) :], start=len(HEADER) + 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) != 8:
            raise DatasetError(
                f"{where}: expected 8 fields 'path X Y Z W P Q R', got {len(fields)}:"
                f" {line.strip()!r}"
            )
        values = [
            parse_number(t, where, f"field {n}")
            for n, t in zip("XYZWPQR", fields[1:], strict=True)
        ]
        unit_quaternion(values[3:], where, "W P Q R")  # the check; the conversion normalises
        image_path = (root / fields[0]).absolute()
        if check_images:
            require_image(image_path, f"{where}: {fields[0]!r}")
        position_m, quat_wxyz = cambridge_to_world_camera(values[:3], np.array(values[3:]))
        records.append(PoseRecord(image_path, position_m, quat_wxyz))
    if not records:
        raise DatasetError(f"{path}: no image lines after the {len(HEADER)} header lines")
    return records


def load_cambridge(folder: Path, split: str, *, check_images: bool = True) -> list[PoseRecord]:
    """Load ``dataset_{split}.txt`` of a Cambridge-format dataset folder."""
    return read_cambridge_file(split_file(folder, split), check_images=check_images)


def _format_float(value: float) -> str:
    # repr gives the shortest string that reads back to the same float: a lossless round trip.
    return repr(float(value))


def write_cambridge(folder: Path, split: str, records: Sequence[PoseRecord]) -> Path:
    """Write ``dataset_{split}.txt`` in ``folder`` (the inverse of :func:`load_cambridge`).

    Paths are written relative to ``folder`` (``..`` where an image lies outside it), poses in
    the Cambridge convention (centre + world-to-camera quaternion), with the 3 header lines.
    Returns the written path. Raises DatasetError for an empty list or a path with whitespace
    (the format separates fields by whitespace).
    """
    folder = Path(folder)
    out_path = split_file(folder, split)
    if not records:
        raise DatasetError(f"{out_path}: refusing to write a split with no records")
    lines = list(HEADER)
    for index, record in enumerate(records):
        relative = Path(os.path.relpath(Path(record.image_path).absolute(), folder.absolute()))
        name = relative.as_posix()
        if any(ch.isspace() for ch in name):
            raise DatasetError(
                f"record {index}: image path {name!r} contains whitespace, which the Cambridge"
                " text format cannot represent"
            )
        center, quat = world_camera_to_cambridge(record.position_m, record.quat_wxyz)
        numbers = " ".join(_format_float(v) for v in (*center, *quat))
        lines.append(f"{name} {numbers}")
    folder.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    tmp_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp_path, out_path)
    return out_path
