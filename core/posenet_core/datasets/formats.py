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
from posenet_core.datasets.intrinsics import (
    INTRINSICS_FILE,
    MIDDLEBURY_FILE,
    SEVENSCENES_INTRINSICS,
    CameraIntrinsics,
    check_image_size,
    read_intrinsics,
    read_middlebury_intrinsics,
)
from posenet_core.datasets.poses_csv import attach_timestamps
from posenet_core.datasets.sevenscenes import is_sevenscenes, load_sevenscenes
from posenet_core.errors import DatasetError, PoseNetError
from posenet_core.images import image_size as read_image_size

__all__ = [
    "CAMBRIDGE",
    "FORMATS",
    "SEVENSCENES",
    "DatasetFormat",
    "DatasetSplit",
    "dataset_intrinsics",
    "detect_format",
    "find_intrinsics",
    "load_split",
    "parse_dataset_spec",
    "read_dataset",
]

# (intrinsics, where they came from: one phrase for logs and messages)
FoundIntrinsics = tuple[CameraIntrinsics, str]


@dataclass(frozen=True)
class DatasetFormat:
    """A dataset layout: its name (the ``FORMAT`` of ``FORMAT:PATH``), how to recognise it in a
    folder, how to load one split, and what its files are (for error messages)."""

    name: str
    detect: Callable[[Path], bool]
    load: Callable[[Path, str], list[PoseRecord]]
    layout: str
    #: The camera the format's own files hold (a COLMAP model's), or None; tried first.
    camera: Callable[[Path], FoundIntrinsics | None] | None = None
    #: A published calibration of the format's camera (7-Scenes'); tried last.
    published_camera: FoundIntrinsics | None = None


CAMBRIDGE = DatasetFormat(
    "cambridge", is_cambridge, load_cambridge, "dataset_train.txt/dataset_test.txt (Cambridge)"
)
SEVENSCENES = DatasetFormat(
    "7scenes",
    is_sevenscenes,
    load_sevenscenes,
    "TrainSplit.txt/TestSplit.txt with seq-XX folders (7-Scenes)",
    published_camera=(SEVENSCENES_INTRINSICS, "7-Scenes published calibration"),
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


def find_intrinsics(
    dataset: str | Path,
    image_size: Callable[[], tuple[int, int]],
    formats: Sequence[DatasetFormat] = FORMATS,
) -> FoundIntrinsics | None:
    """The camera of a dataset folder (or ``"FORMAT:PATH"``) and where it came from, or None.

    Tried in this order (:mod:`.intrinsics`): the format's own camera (COLMAP's), the
    ``intrinsics.json`` beside it, a Middlebury ``dino_par.txt`` (at ``image_size()``, the
    images' (width, height), asked only then), the format's published calibration (7-Scenes').
    Raises DatasetError for a malformed file of these.
    """
    fmt_name, folder = _resolve(dataset, formats)
    fmt = {f.name: f for f in formats}[fmt_name]
    # The format's own camera; also that of another format's files in the same folder (a
    # COLMAP model beside Cambridge split files holds the camera those poses came from).
    others = [f for f in formats if f is not fmt and f.camera is not None and f.detect(folder)]
    for owner in (fmt, *others):
        found = owner.camera(folder) if owner.camera is not None else None
        if found is not None:
            return found
    if (folder / INTRINSICS_FILE).is_file():
        return read_intrinsics(folder / INTRINSICS_FILE), INTRINSICS_FILE
    if (folder / MIDDLEBURY_FILE).is_file():
        return read_middlebury_intrinsics(folder / MIDDLEBURY_FILE, image_size()), MIDDLEBURY_FILE
    return fmt.published_camera


def dataset_intrinsics(
    dataset: str | Path,
    split: str = "train",
    *,
    override: str | Path | None = None,
    formats: Sequence[DatasetFormat] = FORMATS,
    error: type[PoseNetError] = DatasetError,
) -> FoundIntrinsics:
    """The camera of ``split``'s images: ``override`` (an intrinsics JSON) if given, else
    :func:`find_intrinsics`; checked against the size of the split's first image.

    What the map builder, evaluation and (through :func:`read_dataset`) the dataset player use,
    so all three see the same camera. Raises ``error`` naming the folder and what was looked
    for when there are none, or the sizes when they differ from the images'.
    """
    records = load_split(dataset, split, formats)
    if not records:
        raise error(f"{dataset}: the {split} split has no images")

    def size() -> tuple[int, int]:
        return read_image_size(records[0].image_path)

    if override is not None:
        found: FoundIntrinsics | None = (read_intrinsics(Path(override), error), str(override))
    else:
        found = find_intrinsics(dataset, size, formats)
    if found is None:
        _, folder = parse_dataset_spec(dataset, formats)
        raise error(
            f"{folder}: no intrinsics found (looked for the format's own camera, "
            f"{INTRINSICS_FILE}, {MIDDLEBURY_FILE}); add {INTRINSICS_FILE} with width, height, "
            "fx, fy, cx, cy (pixels) or pass an intrinsics JSON (--intrinsics)"
        )
    check_image_size(found[0], found[1], size(), f"{split} images", error)
    return found


@dataclass(frozen=True)
class DatasetSplit:
    """The frames of one split, in file order, and the camera where it is known."""

    folder: Path
    split: str
    format: str
    frames: tuple[PoseRecord, ...]
    intrinsics: CameraIntrinsics | None
    #: where ``intrinsics`` came from (:func:`find_intrinsics`); "" when there are none
    intrinsics_source: str = ""

    @property
    def has_timestamps(self) -> bool:
        """True when every frame has a capture time."""
        return all(f.timestamp_s is not None for f in self.frames)


def read_dataset(
    dataset: str | Path, split: str, formats: Sequence[DatasetFormat] = FORMATS
) -> DatasetSplit:
    """The frames of ``split`` of a dataset folder or ``"FORMAT:PATH"``, with what lies beside
    them: the capture times from ``poses_{split}.csv`` (:mod:`.poses_csv`) where it exists, and
    the camera where the dataset has one (:func:`find_intrinsics`: intrinsics.json,
    dino_par.txt, a published calibration...).

    Raises DatasetError naming file:line:value of anything malformed.
    """
    check_split(split)
    fmt, folder = _resolve(dataset, formats)
    frames = {f.name: f.load for f in formats}[fmt](folder, split)
    csv_path = folder / f"poses_{split}.csv"
    if csv_path.is_file():
        frames = attach_timestamps(frames, folder, csv_path)

    def size() -> tuple[int, int]:
        if not frames:
            raise DatasetError(f"{folder}: the {split} split has no images to size the camera")
        return read_image_size(frames[0].image_path)

    found = find_intrinsics(f"{fmt}:{folder}", size, formats)
    intrinsics, source = found if found is not None else (None, "")
    return DatasetSplit(folder.absolute(), split, fmt, tuple(frames), intrinsics, source)
