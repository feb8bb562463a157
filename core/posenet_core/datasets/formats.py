"""Dataset formats, detected from a folder's contents, and reading one split of a dataset.

The library knows Cambridge Landmarks (:mod:`.cambridge`) and 7-Scenes (:mod:`.sevenscenes`);
the trainer adds COLMAP models (they need pycolmap) by passing its own tuple of
:class:`DatasetFormat` to these functions. ``"FORMAT:PATH"`` (e.g. ``"7scenes:/data/chess"``)
forces a format. Every reader converts once, into :class:`~.common.PoseRecord`
(``T_world_camera``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from posenet_core.datasets.cambridge import is_cambridge, load_cambridge
from posenet_core.datasets.common import PoseRecord, check_split
from posenet_core.datasets.intrinsics import INTRINSICS_FILE, CameraIntrinsics, read_intrinsics
from posenet_core.datasets.poses_csv import attach_timestamps
from posenet_core.datasets.sevenscenes import is_sevenscenes, load_sevenscenes
from posenet_core.errors import DatasetError

__all__ = [
    "CAMBRIDGE",
    "FORMATS",
    "SEVENSCENES",
    "DatasetFormat",
    "DatasetSplit",
    "detect_format",
    "load_split",
    "parse_dataset_spec",
    "read_dataset",
]


@dataclass(frozen=True)
class DatasetFormat:
    """A dataset layout: its name (the ``FORMAT`` of ``FORMAT:PATH``), how to recognise it in a
    folder, how to load one split, and what its files are (for error messages)."""

    name: str
    detect: Callable[[Path], bool]
    load: Callable[[Path, str], list[PoseRecord]]
    layout: str


CAMBRIDGE = DatasetFormat(
    "cambridge", is_cambridge, load_cambridge, "dataset_train.txt/dataset_test.txt (Cambridge)"
)
SEVENSCENES = DatasetFormat(
    "7scenes",
    is_sevenscenes,
    load_sevenscenes,
    "TrainSplit.txt/TestSplit.txt with seq-XX folders (7-Scenes)",
)
#: The formats this library reads, in detection order.
FORMATS: tuple[DatasetFormat, ...] = (CAMBRIDGE, SEVENSCENES)


def parse_dataset_spec(
    dataset: str | Path, formats: Sequence[DatasetFormat] = FORMATS
) -> tuple[str | None, Path]:
    """Split ``"FORMAT:PATH"`` into ``(format, path)``; a plain path gives ``(None, path)``."""
    if isinstance(dataset, str):
        prefix, sep, rest = dataset.partition(":")
        if sep and prefix.lower() in {f.name for f in formats}:
            return prefix.lower(), Path(rest)
    return None, Path(dataset)


def detect_format(folder: Path, formats: Sequence[DatasetFormat] = FORMATS) -> str:
    """Name of the first of ``formats`` whose files are in ``folder``; DatasetError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"dataset folder not found: {folder}")
    for candidate in formats:
        if candidate.detect(folder):
            return candidate.name
    layouts = [f.layout for f in formats]
    expected = ", ".join(layouts[:-1]) + f" or {layouts[-1]}" if len(layouts) > 1 else layouts[0]
    raise DatasetError(
        f"{folder}: unknown dataset layout; expected {expected}; or force a format with"
        f" 'FORMAT:PATH', FORMAT one of {', '.join(f.name for f in formats)}"
    )


def _resolve(dataset: str | Path, formats: Sequence[DatasetFormat]) -> tuple[str, Path]:
    fmt, folder = parse_dataset_spec(dataset, formats)
    folder = folder.expanduser()
    if fmt is None:
        fmt = detect_format(folder, formats)
    elif not folder.is_dir():
        raise DatasetError(f"dataset folder not found: {folder}")
    return fmt, folder


def load_split(
    dataset: str | Path, split: str, formats: Sequence[DatasetFormat] = FORMATS
) -> list[PoseRecord]:
    """Load the ``split`` ("train" or "test") of a dataset folder or ``"FORMAT:PATH"``.

    Returns records in the internal ``T_world_camera`` convention; raises DatasetError naming
    the file, line and value of anything malformed.
    """
    check_split(split)
    fmt, folder = _resolve(dataset, formats)
    return {f.name: f.load for f in formats}[fmt](folder, split)


@dataclass(frozen=True)
class DatasetSplit:
    """The frames of one split, in file order, and the camera where it is known."""

    folder: Path
    split: str
    format: str
    frames: tuple[PoseRecord, ...]
    intrinsics: CameraIntrinsics | None

    @property
    def has_timestamps(self) -> bool:
        """True when every frame has a capture time."""
        return all(f.timestamp_s is not None for f in self.frames)


def read_dataset(
    dataset: str | Path, split: str, formats: Sequence[DatasetFormat] = FORMATS
) -> DatasetSplit:
    """The frames of ``split`` of a dataset folder or ``"FORMAT:PATH"``, with what lies beside
    them: the capture times from ``poses_{split}.csv`` (:mod:`.poses_csv`) and the camera from
    ``intrinsics.json`` (:mod:`.intrinsics`) where those files exist.

    Raises DatasetError naming file:line:value of anything malformed.
    """
    check_split(split)
    fmt, folder = _resolve(dataset, formats)
    frames = {f.name: f.load for f in formats}[fmt](folder, split)
    csv_path = folder / f"poses_{split}.csv"
    if csv_path.is_file():
        frames = attach_timestamps(frames, folder, csv_path)
    intrinsics_path = folder / INTRINSICS_FILE
    intrinsics = read_intrinsics(intrinsics_path) if intrinsics_path.is_file() else None
    return DatasetSplit(folder.absolute(), split, fmt, tuple(frames), intrinsics)
