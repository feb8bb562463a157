"""Microsoft 7-Scenes layout.

A scene folder (e.g. ``chess/``) holds ``TrainSplit.txt`` and ``TestSplit.txt``, each listing
sequences one per line as ``sequence1``, ``sequence3`` ... (sequence N is the folder ``seq-0N``),
and the sequence folders with ``frame-XXXXXX.color.png`` and ``frame-XXXXXX.pose.txt``. A pose
file is the 4x4 camera-to-world matrix (``T_world_camera``, metres, optical camera axes) written
as 4 lines of 4 numbers, so the conversion is only a matrix-to-quaternion; the slightly
non-orthonormal rotations of the KinectFusion poses are projected onto the nearest rotation.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from posenet_core.datasets.common import PoseRecord, check_split, parse_number, read_lines
from posenet_core.errors import DatasetError, InvalidPoseError
from posenet_core.geometry import ROTATION_TOLERANCE, matrix_to_quat, orthonormalize_rotation

__all__ = ["is_sevenscenes", "load_sevenscenes", "read_pose_file", "split_sequences"]

_SPLIT_FILES = {"train": "TrainSplit.txt", "test": "TestSplit.txt"}
_SEQUENCE_LINE = re.compile(r"^sequence(\d+)$", re.IGNORECASE)


def is_sevenscenes(folder: Path) -> bool:
    """True if ``folder`` holds a 7-Scenes split file."""
    return any((Path(folder) / name).is_file() for name in _SPLIT_FILES.values())


def split_sequences(folder: Path, split: str) -> list[Path]:
    """Sequence folders listed in the split file of ``split``; each must exist."""
    path = Path(folder) / _SPLIT_FILES[check_split(split)]
    sequences = []
    for lineno, line in enumerate(read_lines(path, "7-Scenes split file"), start=1):
        text = line.strip()
        if not text:
            continue
        match = _SEQUENCE_LINE.match(text)
        if match is None:
            raise DatasetError(
                f"{path}:{lineno}: expected a line 'sequenceN' (N a number), got {text!r}"
            )
        sequence = Path(folder) / f"seq-{int(match.group(1)):02d}"
        if not sequence.is_dir():
            raise DatasetError(f"{path}:{lineno}: {text!r} names {sequence}, which does not exist")
        sequences.append(sequence)
    if not sequences:
        raise DatasetError(f"{path}: lists no sequences")
    return sequences


def read_pose_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``frame-XXXXXX.pose.txt`` 4x4 camera-to-world matrix: ``(position_m, quat_wxyz)``.

    Raises DatasetError naming file, line and value for a missing file, a row that is not 4
    numbers, a non-finite number, a last row other than ``0 0 0 1`` or a rotation block that is
    not a rotation.
    """
    path = Path(path)
    lines = [ln for ln in read_lines(path, "pose file") if ln.strip()]
    if len(lines) != 4:
        raise DatasetError(f"{path}: expected 4 rows of a 4x4 matrix, got {len(lines)} rows")
    matrix = np.empty((4, 4))
    for row, line in enumerate(lines):
        fields = line.split()
        where = f"{path}:{row + 1}"
        if len(fields) != 4:
            raise DatasetError(f"{where}: expected 4 numbers, got {line.strip()!r}")
        matrix[row] = [parse_number(t, where, f"column {c + 1}") for c, t in enumerate(fields)]
    if np.max(np.abs(matrix[3] - [0.0, 0.0, 0.0, 1.0])) > 1e-6:
        raise DatasetError(f"{path}:4: last row must be '0 0 0 1', got {matrix[3].tolist()}")
    try:
        rotation = orthonormalize_rotation(matrix[:3, :3], tolerance=ROTATION_TOLERANCE)
    except InvalidPoseError as exc:
        raise DatasetError(f"{path}:1-3: {exc}") from None
    return matrix[:3, 3].copy(), matrix_to_quat(rotation)


def load_sevenscenes(folder: Path, split: str) -> list[PoseRecord]:
    """Load the frames of every sequence of ``split``, in sequence then frame order."""
    records = []
    for sequence in split_sequences(folder, split):
        images = sorted(sequence.glob("frame-*.color.png"))
        if not images:
            raise DatasetError(f"{sequence}: no frame-XXXXXX.color.png images")
        for image_path in images:
            pose_path = image_path.with_name(image_path.name.replace(".color.png", ".pose.txt"))
            position_m, quat_wxyz = read_pose_file(pose_path)
            records.append(PoseRecord(image_path.absolute(), position_m, quat_wxyz))
    return records
