"""Datasets of the trainer: posenet_core's formats plus COLMAP models.

Formats (``load_split`` detects them from the folder's contents, in this order):

- ``cambridge``: ``dataset_train.txt`` / ``dataset_test.txt``
  (:mod:`posenet_core.datasets.cambridge`);
- ``7scenes``: ``TrainSplit.txt`` / ``TestSplit.txt`` and ``seq-XX`` folders
  (:mod:`posenet_core.datasets.sevenscenes`);
- ``colmap``: a COLMAP model in ``sparse/0``, ``sparse`` or the folder itself (:mod:`.colmap`,
  here because it needs pycolmap).

``"FORMAT:PATH"`` (e.g. ``"colmap:/data/scene"``) forces a format. Every format converts once
into :class:`posenet_core.datasets.PoseRecord` (``T_world_camera``).
"""

from __future__ import annotations

from pathlib import Path

from posenet_core import datasets as core
from posenet_core.datasets import CameraIntrinsics, PoseRecord
from posenet_core.errors import DatasetError, PoseNetError
from posenet_train.datasets.colmap import colmap_camera, is_colmap, load_colmap

__all__ = [
    "COLMAP",
    "FORMATS",
    "dataset_intrinsics",
    "detect_format",
    "load_split",
    "parse_dataset_spec",
]

COLMAP = core.DatasetFormat(
    "colmap",
    is_colmap,
    load_colmap,
    "a COLMAP model in sparse/0, sparse or the folder itself",
    camera=colmap_camera,
)
#: The formats the trainer reads, in detection order.
FORMATS: tuple[core.DatasetFormat, ...] = (*core.FORMATS, COLMAP)


def parse_dataset_spec(dataset: str | Path) -> tuple[str | None, Path]:
    """Split ``"FORMAT:PATH"`` into ``(format, path)``; a plain path gives ``(None, path)``."""
    return core.parse_dataset_spec(dataset, FORMATS)


def detect_format(folder: Path) -> str:
    """Name of the dataset format in ``folder`` (one of :data:`FORMATS`)."""
    return core.detect_format(folder, FORMATS)


def load_split(dataset: str | Path, split: str) -> list[PoseRecord]:
    """Load the ``split`` ("train" or "test") of a dataset folder or ``"FORMAT:PATH"``.

    Returns records in the internal ``T_world_camera`` convention; raises DatasetError naming
    the file, line and value of anything malformed.
    """
    return core.load_split(dataset, split, FORMATS)


def dataset_intrinsics(
    dataset: str | Path,
    split: str = "train",
    *,
    override: str | Path | None = None,
    error: type[PoseNetError] = DatasetError,
) -> tuple[CameraIntrinsics, str]:
    """The camera of the dataset's ``split`` images and where it came from
    (:func:`posenet_core.datasets.dataset_intrinsics` with the COLMAP format too)."""
    return core.dataset_intrinsics(dataset, split, override=override, formats=FORMATS, error=error)
