"""Read a pose dataset's frames for playback, without ROS and without the training package.

The ROS package runs on robots where ``posenet_train`` (torch, pycolmap ...) is not installed, so
the dataset player has this small reader of its own. It converts every pose once, at the edge,
into the internal convention (``T_world_camera``: camera centre in the world frame in metres and
the camera-to-world rotation as ``quat_wxyz``, ``w >= 0``).

Formats (detected from the folder's contents, or forced with ``"FORMAT:PATH"``):

- ``cambridge``: Cambridge Landmarks. ``dataset_train.txt`` / ``dataset_test.txt`` with three
  header lines, then ``path X Y Z W P Q R`` per image: ``X Y Z`` the camera centre (m) and
  ``W P Q R`` the quaternion of the *world-to-camera* rotation (converted with
  :func:`posenet_core.geometry.cambridge_to_T_world_camera`). Image paths are relative to the
  folder.
- ``7scenes``: Microsoft 7-Scenes. ``TrainSplit.txt`` / ``TestSplit.txt`` list ``sequenceN``
  lines (folder ``seq-0N``); each sequence holds ``frame-XXXXXX.color.png`` and
  ``frame-XXXXXX.pose.txt``, a 4x4 camera-to-world matrix (already ``T_world_camera``).

Optional files beside either format:

- ``intrinsics.json``: ``{"fx", "fy", "cx", "cy", "width", "height"}`` (pixels; pixel centres at
  integer coordinates) and optionally ``"distortion"`` (plumb_bob k1 k2 t1 t2 k3);
- ``poses_{split}.csv`` (written by ``posenet_train.synthetic``): columns
  ``image,timestamp_s,x_m,y_m,z_m,qw,qx,qy,qz`` with ``T_world_camera`` poses; it gives each image
  its capture time. Its poses must agree with the split file's (a check that the two files
  describe the same frames).

Every malformed input raises :class:`DatasetError` naming the file, the line and the value.

For playback, :class:`FramePrefetcher` reads the images (:func:`load_rgb`) a few frames ahead on
a background thread, so a large dataset is never loaded whole and one slow image does not stall
the publishing rate.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import queue
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posenet_core.geometry import cambridge_to_T_world_camera, matrix_to_pose
from posenet_ros.errors import InvalidPoseError, PoseNetError

__all__ = [
    "FORMATS",
    "SPLITS",
    "CameraIntrinsics",
    "DatasetError",
    "DatasetFrame",
    "FramePrefetcher",
    "PlaybackDataset",
    "PlaybackItem",
    "detect_format",
    "load_rgb",
    "loop_period_s",
    "parse_dataset_spec",
    "read_cambridge_split",
    "read_dataset",
    "read_intrinsics",
    "read_poses_csv",
    "read_sevenscenes_pose",
    "read_sevenscenes_split",
]

SPLITS = ("train", "test")
FORMATS = ("cambridge", "7scenes")
CAMBRIDGE_HEADER_LINES = 3
POSES_CSV_COLUMNS = ("image", "timestamp_s", "x_m", "y_m", "z_m", "qw", "qx", "qy", "qz")
INTRINSICS_FILE = "intrinsics.json"
# Files written with 6+ decimals have |q| within ~1e-6 of 1; more means the numbers are not a
# rotation (a shifted column, another format), not rounding.
QUAT_NORM_TOLERANCE = 1e-3
# KinectFusion rotations are orthonormal to ~1e-6; 1e-3 rejects only matrices that are not
# rotations.
ROTATION_TOLERANCE = 1e-3
# poses_{split}.csv and the split file describe the same frames; both are written with full
# precision, so anything above rounding means they disagree.
POSE_AGREEMENT_M = 1e-6
POSE_AGREEMENT_QUAT = 1e-6

_SEVENSCENES_SPLIT_FILES = {"train": "TrainSplit.txt", "test": "TestSplit.txt"}
_SEQUENCE_LINE = re.compile(r"^sequence(\d+)$", re.IGNORECASE)


class DatasetError(PoseNetError):
    """A dataset folder, split file, pose file, intrinsics or poses CSV is missing or malformed."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics (pixels) and the image size they belong to."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the usual name of the camera matrix
        """3x3 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True, eq=False)
class DatasetFrame:
    """One image and its ground-truth pose (``T_world_camera``).

    Attributes:
        image_path: absolute path of the image file.
        position_m: (3,) camera centre in the world frame, metres (read-only array).
        quat_wxyz: (4,) camera-to-world rotation, unit, ``w >= 0`` (read-only array).
        timestamp_s: capture time in seconds (from ``poses_{split}.csv``), else None.
    """

    image_path: Path
    position_m: np.ndarray
    quat_wxyz: np.ndarray
    timestamp_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("position_m", "quat_wxyz"):
            array = np.array(getattr(self, name), dtype=np.float64)
            array.flags.writeable = False
            object.__setattr__(self, name, array)


@dataclass(frozen=True)
class PlaybackDataset:
    """The frames of one split, in playback order, and the camera where it is known."""

    folder: Path
    split: str
    format: str
    frames: tuple[DatasetFrame, ...]
    intrinsics: CameraIntrinsics | None

    @property
    def has_timestamps(self) -> bool:
        """True when every frame has a capture time."""
        return all(f.timestamp_s is not None for f in self.frames)


# ------------------------------------------------------------------------------------ helpers


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    return split


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read {what}: {exc}") from exc


def _number(token: str, where: str, name: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise DatasetError(f"{where}: {name} is not a number: {token!r}") from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: {name} must be finite, got {token!r}")
    return value


def _unit_quat(values: list[float], where: str, names: str) -> np.ndarray:
    quat = np.array(values, dtype=np.float64)
    norm = float(np.linalg.norm(quat))
    if abs(norm - 1.0) > QUAT_NORM_TOLERANCE:
        raise DatasetError(
            f"{where}: quaternion {names} = {values} has norm {norm:.6g}; a unit quaternion is"
            f" required (|norm - 1| <= {QUAT_NORM_TOLERANCE:g})"
        )
    return quat / norm


def _require_image(image_path: Path, where: str) -> None:
    if not image_path.is_file():
        raise DatasetError(f"{where}: image file not found: {image_path}")


# ----------------------------------------------------------------------------------- formats


def parse_dataset_spec(dataset: str | Path) -> tuple[str | None, Path]:
    """Split ``"FORMAT:PATH"`` into ``(format, path)``; a plain path gives ``(None, path)``."""
    if isinstance(dataset, str):
        prefix, sep, rest = dataset.partition(":")
        if sep and prefix.lower() in FORMATS:
            return prefix.lower(), Path(rest)
    return None, Path(dataset)


def detect_format(folder: Path) -> str:
    """``"cambridge"`` or ``"7scenes"`` from the split files present in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"dataset folder not found: {folder}")
    if any((folder / f"dataset_{s}.txt").is_file() for s in SPLITS):
        return "cambridge"
    if any((folder / name).is_file() for name in _SEVENSCENES_SPLIT_FILES.values()):
        return "7scenes"
    raise DatasetError(
        f"{folder}: unknown dataset layout; expected dataset_train.txt/dataset_test.txt"
        " (Cambridge) or TrainSplit.txt/TestSplit.txt with seq-XX folders (7-Scenes); force a"
        f" format with 'FORMAT:PATH', FORMAT one of {', '.join(FORMATS)}"
    )


def read_cambridge_split(path: Path, image_root: Path | None = None) -> list[DatasetFrame]:
    """Frames of a Cambridge split file (``T_world_camera``), in file order.

    ``image_root`` is the folder image paths are relative to (default: the file's folder).
    Raises DatasetError naming file:line:value for a data line in the header position, a wrong
    field count, a non-number, a non-unit quaternion, a missing image, or no image lines at all.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    lines = _read_lines(path, "Cambridge split file")
    for lineno, line in enumerate(lines[:CAMBRIDGE_HEADER_LINES], start=1):
        fields = line.split()
        if len(fields) == 8 and all(_is_float(t) for t in fields[1:]):
            raise DatasetError(
                f"{path}:{lineno}: expected {CAMBRIDGE_HEADER_LINES} header lines before the"
                f" data, but this line is a data line: {line.strip()!r}"
            )
    frames: list[DatasetFrame] = []
    for lineno, line in enumerate(
        lines[CAMBRIDGE_HEADER_LINES:], start=CAMBRIDGE_HEADER_LINES + 1
    ):
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
            _number(t, where, f"field {n}") for n, t in zip("XYZWPQR", fields[1:], strict=True)
        ]
        quat_world_to_camera = _unit_quat(values[3:], where, "W P Q R")
        image_path = (root / fields[0]).absolute()
        _require_image(image_path, f"{where}: {fields[0]!r}")
        T_world_camera = cambridge_to_T_world_camera(values[:3], quat_world_to_camera)
        position_m, quat_wxyz = matrix_to_pose(T_world_camera)
        frames.append(DatasetFrame(image_path, position_m, quat_wxyz))
    if not frames:
        raise DatasetError(
            f"{path}: no image lines after the {CAMBRIDGE_HEADER_LINES} header lines"
        )
    return frames


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_sevenscenes_pose(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(position_m, quat_wxyz)`` of a 7-Scenes ``frame-XXXXXX.pose.txt`` (4x4 camera-to-world).

    Raises DatasetError naming file:line:value for a missing file, a row that is not 4 numbers,
    a last row other than ``0 0 0 1`` or a rotation block that is not a rotation.
    """
    path = Path(path)
    lines = [ln for ln in _read_lines(path, "7-Scenes pose file") if ln.strip()]
    if len(lines) != 4:
        raise DatasetError(f"{path}: expected 4 rows of a 4x4 matrix, got {len(lines)} rows")
    matrix = np.empty((4, 4))
    for row, line in enumerate(lines):
        fields = line.split()
        where = f"{path}:{row + 1}"
        if len(fields) != 4:
            raise DatasetError(f"{where}: expected 4 numbers, got {line.strip()!r}")
        matrix[row] = [_number(t, where, f"column {c + 1}") for c, t in enumerate(fields)]
    if np.max(np.abs(matrix[3] - [0.0, 0.0, 0.0, 1.0])) > 1e-6:
        raise DatasetError(f"{path}:4: last row must be '0 0 0 1', got {matrix[3].tolist()}")
    rotation = matrix[:3, :3]
    deviation = float(np.max(np.abs(rotation.T @ rotation - np.eye(3))))
    determinant = float(np.linalg.det(rotation))
    if deviation > ROTATION_TOLERANCE or determinant <= 0.0:
        raise DatasetError(
            f"{path}:1-3: the 3x3 block is not a rotation (max |R^T R - I| = {deviation:.3g},"
            f" allowed {ROTATION_TOLERANCE:g}; det = {determinant:.3g}, must be > 0)"
        )
    try:
        return matrix_to_pose(matrix)
    except InvalidPoseError as exc:
        raise DatasetError(f"{path}: {exc}") from None


def _sevenscenes_sequences(folder: Path, split: str) -> list[Path]:
    path = folder / _SEVENSCENES_SPLIT_FILES[split]
    sequences = []
    for lineno, line in enumerate(_read_lines(path, "7-Scenes split file"), start=1):
        text = line.strip()
        if not text:
            continue
        match = _SEQUENCE_LINE.match(text)
        if match is None:
            raise DatasetError(
                f"{path}:{lineno}: expected a line 'sequenceN' (N a number), got {text!r}"
            )
        sequence = folder / f"seq-{int(match.group(1)):02d}"
        if not sequence.is_dir():
            raise DatasetError(f"{path}:{lineno}: {text!r} names {sequence}, which does not exist")
        sequences.append(sequence)
    if not sequences:
        raise DatasetError(f"{path}: lists no sequences")
    return sequences


def read_sevenscenes_split(folder: Path, split: str) -> list[DatasetFrame]:
    """Frames of every sequence of ``split`` of a 7-Scenes scene, in sequence then frame order."""
    folder = Path(folder)
    frames = []
    for sequence in _sevenscenes_sequences(folder, _check_split(split)):
        images = sorted(sequence.glob("frame-*.color.png"))
        if not images:
            raise DatasetError(f"{sequence}: no frame-XXXXXX.color.png images")
        for image_path in images:
            pose_path = image_path.with_name(image_path.name.replace(".color.png", ".pose.txt"))
            position_m, quat_wxyz = read_sevenscenes_pose(pose_path)
            frames.append(DatasetFrame(image_path.absolute(), position_m, quat_wxyz))
    return frames


# ------------------------------------------------------------------------- optional extras


def read_intrinsics(path: Path) -> CameraIntrinsics:
    """Read ``intrinsics.json``: fx, fy > 0, finite cx, cy, integer width, height > 0 (pixels).

    An optional ``distortion`` list holds the plumb_bob coefficients (k1, k2, t1, t2, k3).
    Raises DatasetError naming the file, the key and the value of anything malformed.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: intrinsics file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read intrinsics file: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object with fx, fy, cx, cy, width, height")
    values: dict[str, float] = {}
    for key in ("fx", "fy", "cx", "cy", "width", "height"):
        if key not in data:
            raise DatasetError(
                f"{path}: key {key!r} missing; required: fx, fy, cx, cy, width, height"
            )
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DatasetError(f"{path}: {key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise DatasetError(f"{path}: {key} must be finite, got {value!r}")
        values[key] = value
    for key in ("fx", "fy"):
        if values[key] <= 0.0:
            raise DatasetError(f"{path}: {key} must be > 0 pixels, got {values[key]!r}")
    for key in ("width", "height"):
        if values[key] != int(values[key]) or values[key] < 1:
            raise DatasetError(f"{path}: {key} must be a whole number >= 1, got {values[key]!r}")
    distortion = data.get("distortion", [0.0] * 5)
    if (
        not isinstance(distortion, list)
        or len(distortion) != 5
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in distortion
        )
    ):
        raise DatasetError(
            f"{path}: distortion must be 5 finite numbers (k1 k2 t1 t2 k3), got {distortion!r}"
        )
    return CameraIntrinsics(
        width=int(values["width"]),
        height=int(values["height"]),
        fx=float(values["fx"]),
        fy=float(values["fy"]),
        cx=float(values["cx"]),
        cy=float(values["cy"]),
        distortion=tuple(float(v) for v in distortion),
    )


def read_poses_csv(path: Path) -> dict[str, tuple[float, np.ndarray, np.ndarray, int]]:
    """Read ``poses_{split}.csv``: image -> ``(timestamp_s, position_m, quat_wxyz, line)``.

    Columns ``image,timestamp_s,x_m,y_m,z_m,qw,qx,qy,qz`` (``T_world_camera``). Raises
    DatasetError naming file:line:value for a wrong header, a wrong field count, a non-number,
    a negative timestamp, timestamps that do not increase, a non-unit quaternion or an image
    listed twice.
    """
    path = Path(path)
    lines = _read_lines(path, "poses CSV")
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
            _number(t, where, n) for n, t in zip(POSES_CSV_COLUMNS[1:], row[1:], strict=True)
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
        quat = _unit_quat(values[4:], where, "qw qx qy qz")
        poses[image] = (timestamp_s, np.array(values[1:4]), quat, lineno)
    return poses


def _attach_timestamps(
    frames: list[DatasetFrame], folder: Path, csv_path: Path
) -> list[DatasetFrame]:
    poses = read_poses_csv(csv_path)
    stamped: list[DatasetFrame] = []
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
            DatasetFrame(frame.image_path, frame.position_m, frame.quat_wxyz, timestamp_s)
        )
    return stamped


def read_dataset(dataset: str | Path, split: str) -> PlaybackDataset:
    """Frames of ``split`` ("train" or "test") of a dataset folder or ``"FORMAT:PATH"``.

    Adds the intrinsics from ``intrinsics.json`` and the timestamps from ``poses_{split}.csv``
    where those files exist. Raises DatasetError naming file:line:value of anything malformed.
    """
    _check_split(split)
    fmt, folder = parse_dataset_spec(dataset)
    folder = folder.expanduser()
    if fmt is None:
        fmt = detect_format(folder)
    elif not folder.is_dir():
        raise DatasetError(f"dataset folder not found: {folder}")
    if fmt == "cambridge":
        frames = read_cambridge_split(folder / f"dataset_{split}.txt")
    else:
        frames = read_sevenscenes_split(folder, split)
    csv_path = folder / f"poses_{split}.csv"
    if csv_path.is_file():
        frames = _attach_timestamps(frames, folder, csv_path)
    intrinsics_path = folder / INTRINSICS_FILE
    intrinsics = read_intrinsics(intrinsics_path) if intrinsics_path.is_file() else None
    return PlaybackDataset(folder.absolute(), split, fmt, tuple(frames), intrinsics)


# ------------------------------------------------------------------------------- playback


def load_rgb(image_path: Path) -> np.ndarray:
    """The image file as H x W x 3 uint8 RGB (grey and 16-bit images converted to it).

    Raises DatasetError naming the file when it is missing or cannot be decoded.
    """
    image_path = Path(image_path)
    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if bgr is None:
        reason = "not found" if not image_path.is_file() else "cannot be decoded as an image"
        raise DatasetError(f"{image_path}: {reason}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def loop_period_s(frames: Sequence[DatasetFrame]) -> float:
    """Offset added to dataset timestamps per loop, so stamps keep increasing when playback
    loops: the time span of the frames plus their mean interval (1 s for a single frame)."""
    stamps = [f.timestamp_s for f in frames]
    if not stamps or any(s is None for s in stamps):
        raise DatasetError("loop_period_s needs frames that all have timestamps")
    if len(stamps) == 1:
        return 1.0
    span = stamps[-1] - stamps[0]
    return span + span / (len(stamps) - 1)


@dataclass(frozen=True)
class PlaybackItem:
    """One frame as the prefetch thread prepared it.

    ``count`` numbers the frames in playback order from 0 (over every loop), ``loop`` is the
    pass over the dataset (0 first) and ``index`` the frame's index in the dataset. ``payload``
    is what the load function returned, or None with ``error`` saying why it failed.
    """

    count: int
    loop: int
    index: int
    frame: DatasetFrame
    payload: Any
    error: str = ""


class FramePrefetcher:
    """Loads the next frames on a background thread, a few ahead of playback.

    Datasets can be larger than memory, so images are read just before they are needed;
    reading ahead keeps a steady publishing rate when one image decodes slowly. ``load`` runs on
    the thread with a :class:`DatasetFrame` and returns the payload (e.g. message fields); a
    :class:`PoseNetError` it raises becomes the item's ``error`` and playback carries on.
    """

    def __init__(
        self,
        frames: Sequence[DatasetFrame],
        load: Callable[[DatasetFrame], Any],
        *,
        loop: bool = False,
        depth: int = 4,
    ) -> None:
        if not frames:
            raise DatasetError("nothing to play: no frames")
        if depth < 1:
            raise DatasetError(f"prefetch depth {depth} must be >= 1")
        self._frames = list(frames)
        self._load = load
        self._loop = loop
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dataset-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: PlaybackItem | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        count = 0
        for loop in itertools.count():
            for index, frame in enumerate(self._frames):
                if self._stop.is_set():
                    return
                try:
                    item = PlaybackItem(count, loop, index, frame, self._load(frame))
                except PoseNetError as exc:
                    item = PlaybackItem(count, loop, index, frame, None, str(exc))
                except Exception as exc:  # noqa: BLE001 - a bug must not end playback silently
                    item = PlaybackItem(
                        count, loop, index, frame, None, f"unexpected {type(exc).__name__}: {exc}"
                    )
                if not self._put(item):
                    return
                count += 1
            if not self._loop:
                self._put(None)
                return

    def next(self, timeout_s: float = 0.0) -> PlaybackItem | None:
        """The next item; None at the end of a non-looping playback.

        Raises ``queue.Empty`` when the next frame is not ready within ``timeout_s``.
        """
        if timeout_s <= 0.0:
            return self._queue.get_nowait()
        return self._queue.get(timeout=timeout_s)

    def stop(self) -> None:
        """Stop the thread (it ends after the frame it is loading)."""
        self._stop.set()
        self._thread.join(timeout=5.0)
