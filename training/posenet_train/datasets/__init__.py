"""Datasets: every format converts once into :class:`PoseRecord` (``T_world_camera``).

Formats (``load_split`` detects them from the folder's contents, in this order):

- ``cambridge``: ``dataset_train.txt`` / ``dataset_test.txt`` (see :mod:`.cambridge`);
- ``7scenes``: ``TrainSplit.txt`` / ``TestSplit.txt`` and ``seq-XX`` folders (:mod:`.sevenscenes`);
- ``colmap``: a COLMAP model in ``sparse/0``, ``sparse`` or the folder itself (:mod:`.colmap`).

``"FORMAT:PATH"`` (e.g. ``"colmap:/data/scene"``) forces a format.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from posenet_train.datasets.cambridge import is_cambridge, load_cambridge, write_cambridge
from posenet_train.datasets.colmap import is_colmap, load_colmap
from posenet_train.datasets.common import SPLITS, PoseRecord, check_split
from posenet_train.datasets.sevenscenes import is_sevenscenes, load_sevenscenes
from posenet_train.errors import DatasetError

__all__ = [
    "FORMATS",
    "SPLITS",
    "PoseRecord",
    "detect_format",
    "load_split",
    "parse_dataset_spec",
    "write_cambridge",
]

FORMATS: dict[str, Callable[[Path, str], list[PoseRecord]]] = {
    "cambridge": load_cambridge,
    "7scenes": load_sevenscenes,
    "colmap": load_colmap,
}
_DETECTORS = (("cambridge", is_cambridge), ("7scenes", is_sevenscenes), ("colmap", is_colmap))


def parse_dataset_spec(dataset: str | Path) -> tuple[str | None, Path]:
    """Split ``"FORMAT:PATH"`` into ``(format, path)``; a plain path gives ``(None, path)``."""
    if isinstance(dataset, str):
        prefix, sep, rest = dataset.partition(":")
        if sep and prefix.lower() in FORMATS:
            return prefix.lower(), Path(rest)
    return None, Path(dataset)


def detect_format(folder: Path) -> str:
    """Name of the dataset format in ``folder`` (a key of :data:`FORMATS`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"dataset folder not found: {folder}")
    for name, detector in _DETECTORS:
        if detector(folder):
            return name
    raise DatasetError(
        f"{folder}: unknown dataset layout; expected dataset_train.txt/dataset_test.txt"
        " (Cambridge), TrainSplit.txt/TestSplit.txt (7-Scenes) or a COLMAP model in"
        " sparse/0, sparse or the folder itself; or force a format with 'FORMAT:PATH',"
        f" FORMAT one of {', '.join(FORMATS)}"
    )


def load_split(dataset: str | Path, split: str) -> list[PoseRecord]:
    """Load the ``split`` ("train" or "test") of a dataset folder or ``"FORMAT:PATH"``.

    Returns records in the internal ``T_world_camera`` convention; raises DatasetError naming
    the file, line and value of anything malformed.
    """
    check_split(split)
    fmt, folder = parse_dataset_spec(dataset)
    if fmt is None:
        fmt = detect_format(folder)
    elif not folder.is_dir():
        raise DatasetError(f"dataset folder not found: {folder}")
    return FORMATS[fmt](folder, split)
