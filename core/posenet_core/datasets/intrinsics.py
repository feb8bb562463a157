"""``intrinsics.json``: the pinhole camera of a dataset's images (optional beside any format).

``{"fx", "fy", "cx", "cy", "width", "height"}`` in pixels (pixel centres at integer
coordinates, OpenCV's convention) and optionally ``"distortion"`` (plumb_bob k1 k2 t1 t2 k3).
``posenet_train.synthetic`` writes it; the dataset player publishes it as camera_info.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posenet_core.errors import DatasetError
from posenet_core.files import read_json_object

__all__ = ["INTRINSICS_FILE", "CameraIntrinsics", "read_intrinsics"]

INTRINSICS_FILE = "intrinsics.json"


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


def read_intrinsics(path: Path) -> CameraIntrinsics:
    """Read ``intrinsics.json``: fx, fy > 0, finite cx, cy, integer width, height > 0 (pixels).

    An optional ``distortion`` list holds the plumb_bob coefficients (k1, k2, t1, t2, k3).
    Raises DatasetError naming the file, the key and the value of anything malformed.
    """
    path = Path(path)
    data = read_json_object(path, "intrinsics file (fx, fy, cx, cy, width, height)", DatasetError)
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
