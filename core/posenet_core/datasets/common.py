"""The record every dataset reader returns, and the parsing checks the readers share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posenet_core.errors import DatasetError

__all__ = [
    "SPLITS",
    "PoseRecord",
    "check_split",
    "parse_number",
    "read_lines",
    "require_image",
    "unit_quaternion",
]

SPLITS = ("train", "test")
# Files written with 6+ decimals have |q| within ~1e-6 of 1; a larger deviation means the numbers
# are not a rotation (a shifted column, another format), not rounding.
QUAT_NORM_TOLERANCE = 1e-3


@dataclass(frozen=True, eq=False)
class PoseRecord:
    """One image and its pose in the internal ``T_world_camera`` convention.

    Attributes:
        image_path: absolute path of the image file.
        position_m: (3,) float64, camera centre in the world (scene) frame, metres.
        quat_wxyz: (4,) float64, camera-to-world rotation, unit norm, canonical sign ``w >= 0``.
        timestamp_s: capture time in seconds where the dataset has one, else None.

    The arrays are made read-only so a record really is immutable. Records compare by identity
    (``eq=False``): element-wise array comparison has no single truth value.
    """

    image_path: Path
    position_m: np.ndarray
    quat_wxyz: np.ndarray
    timestamp_s: float | None = None

    def __post_init__(self) -> None:
        position = np.array(self.position_m, dtype=np.float64).reshape(-1)
        quat = np.array(self.quat_wxyz, dtype=np.float64).reshape(-1)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise DatasetError(
                f"{self.image_path}: position_m must be 3 finite numbers, got {position.tolist()}"
            )
        norm = float(np.linalg.norm(quat)) if quat.shape == (4,) else float("nan")
        if quat.shape != (4,) or not np.isfinite(norm) or abs(norm - 1.0) > 1e-6:
            raise DatasetError(
                f"{self.image_path}: quat_wxyz must be a unit quaternion (4 numbers, |q| = 1),"
                f" got {quat.tolist()}"
            )
        if quat[0] < 0.0:
            quat = -quat
        position.flags.writeable = False
        quat.flags.writeable = False
        object.__setattr__(self, "image_path", Path(self.image_path))
        object.__setattr__(self, "position_m", position)
        object.__setattr__(self, "quat_wxyz", quat)


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise DatasetError naming it."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    return split


def require_image(image_path: Path, where: str) -> None:
    """Raise DatasetError if the image file is missing; ``where`` is 'file:line: value' context."""
    if not image_path.is_file():
        raise DatasetError(f"{where}: image file not found: {image_path}")


def read_lines(path: Path, what: str) -> list[str]:
    """The lines of a text file; DatasetError saying ``what`` is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read {what}: {exc}") from exc


def parse_number(token: str, where: str, name: str) -> float:
    """``float(token)``; DatasetError '<where>: <name> is not a number / must be finite'."""
    try:
        value = float(token)
    except ValueError:
        raise DatasetError(f"{where}: {name} is not a number: {token!r}") from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: {name} must be finite, got {token!r}")
    return value


def unit_quaternion(values: list[float], where: str, names: str) -> np.ndarray:
    """The quaternion ``values`` renormalised; DatasetError when its norm is off 1 by more than
    :data:`QUAT_NORM_TOLERANCE` (smaller deviations are rounding)."""
    quat = np.array(values, dtype=np.float64)
    norm = float(np.linalg.norm(quat))
    if abs(norm - 1.0) > QUAT_NORM_TOLERANCE:
        raise DatasetError(
            f"{where}: quaternion {names} = {values} has norm {norm:.6g}; a unit quaternion is"
            f" required (|norm - 1| <= {QUAT_NORM_TOLERANCE:g})"
        )
    return quat / norm
