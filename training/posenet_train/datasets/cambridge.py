"""Cambridge Landmarks text format (PoseNet's own datasets, and /work/shared middlebury_dino).

A split file ``dataset_train.txt`` / ``dataset_test.txt`` in the dataset folder has three header
lines, then one line per image::

    seq1/frame00001.png X Y Z W P Q R

``X Y Z`` is the camera centre in the world frame (metres) and ``W P Q R`` the unit quaternion
(w, x, y, z) of the *world-to-camera* rotation (VisualSFM's convention). The loader converts each
line once into the internal ``T_world_camera`` convention (camera-to-world quaternion = the
conjugate). Image paths are relative to the dataset folder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from posenet_core.geometry import cambridge_to_world_camera, world_camera_to_cambridge
from posenet_train.datasets.common import PoseRecord, check_split, require_image
from posenet_train.errors import DatasetError

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
# Files written with 6-9 decimals have |q| within ~1e-6 of 1; a larger deviation means the
# numbers are not a rotation (wrong column, wrong format), not rounding.
QUAT_NORM_TOLERANCE = 1e-3


def split_file(folder: Path, split: str) -> Path:
    """Path of the split file ``dataset_{split}.txt`` in ``folder``."""
    return Path(folder) / f"dataset_{check_split(split)}.txt"


def is_cambridge(folder: Path) -> bool:
    """True if ``folder`` holds a Cambridge split file (train or test)."""
    return any((Path(folder) / f"dataset_{s}.txt").is_file() for s in ("train", "test"))


def _parse_record_fields(fields: list[str]) -> list[float] | None:
    if len(fields) != 8:
        return None
    try:
        return [float(v) for v in fields[1:]]
    except ValueError:
        return None


def read_cambridge_file(
    path: Path, *, image_root: Path | None = None, check_images: bool = True
) -> list[PoseRecord]:
    """Read one Cambridge split file into records (``T_world_camera``).

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
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: Cambridge split file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read Cambridge split file: {exc}") from exc
    lines = text.splitlines()
    for lineno, line in enumerate(lines[: len(HEADER)], start=1):
        if _parse_record_fields(line.split()) is not None:
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
        values = []
        for name, token in zip("XYZWPQR", fields[1:], strict=True):
            try:
                value = float(token)
            except ValueError:
                raise DatasetError(f"{where}: field {name} is not a number: {token!r}") from None
            if not math.isfinite(value):
                raise DatasetError(f"{where}: field {name} must be finite, got {token!r}")
            values.append(value)
        quat = np.array(values[3:])
        norm = float(np.linalg.norm(quat))
        if abs(norm - 1.0) > QUAT_NORM_TOLERANCE:
            raise DatasetError(
                f"{where}: quaternion W P Q R = {fields[4:]} has norm {norm:.6g}; a unit"
                f" quaternion is required (|norm - 1| <= {QUAT_NORM_TOLERANCE:g})"
            )
        image_path = (root / fields[0]).absolute()
        if check_images:
            require_image(image_path, f"{where}: {fields[0]!r}")
        position_m, quat_wxyz = cambridge_to_world_camera(np.array(values[:3]), quat)
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
