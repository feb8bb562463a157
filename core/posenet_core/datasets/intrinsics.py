"""The pinhole camera of a dataset's images, and where a dataset keeps it.

One class, :class:`CameraIntrinsics`, for every camera the project reads or writes: a
dataset's (the player publishes it as camera_info, evaluation refines with it), the map file's
mapping camera (:mod:`posenet_core.mapfile` stores it), and an ``--intrinsics`` JSON.

Sources, in the order :func:`posenet_core.datasets.find_intrinsics` tries them:

1. the dataset format's own camera (a COLMAP model's ``cameras``; the trainer adds that format);
2. ``intrinsics.json`` beside any format: ``{"fx", "fy", "cx", "cy", "width", "height"}`` in
   pixels (pixel centres at integer coordinates, OpenCV's convention), optionally
   ``"distortion"`` (0, 4, 5 or 8 coefficients in OpenCV order: k1 k2 t1 t2 [k3 [k4 k5 k6]])
   and ``"distortion_model"`` (``none``, ``plumb_bob``, ``rational_polynomial``).
   ``posenet_train.synthetic`` writes it; ``posenet_train.sfm``'s ``--intrinsics`` format is
   the same;
3. ``dino_par.txt`` (the Middlebury multi-view format: ``name k11..k33 r11..r33 t1 t2 t3`` per
   image, after a count or header line): its one K, at the images' size;
4. the format's published calibration (7-Scenes: f = 585, c = (320, 240), 640x480).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posenet_core.errors import DatasetError, PoseNetError
from posenet_core.files import read_json_object

__all__ = [
    "DISTORTION_LENGTHS",
    "DISTORTION_MODELS",
    "INTRINSICS_FILE",
    "MIDDLEBURY_FILE",
    "SEVENSCENES_INTRINSICS",
    "CameraIntrinsics",
    "check_image_size",
    "read_intrinsics",
    "read_middlebury_intrinsics",
]

INTRINSICS_FILE = "intrinsics.json"
MIDDLEBURY_FILE = "dino_par.txt"
#: Distortion models OpenCV removes from K and D alone (REP-104 names); "none" is no distortion.
DISTORTION_MODELS = ("none", "plumb_bob", "rational_polynomial")
#: How many coefficients a distortion may have (OpenCV order); 0 is none.
DISTORTION_LENGTHS = (0, 4, 5, 8)


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics (pixels, OpenCV convention: pixel centres at integers), the image
    size they belong to, and the distortion (OpenCV order; ``()`` when there is none)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = ()

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the usual name of the camera matrix
        """3x3 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def dist_coeffs(self) -> np.ndarray | None:
        """The distortion as OpenCV takes it, or None when there is none (all zero)."""
        d = np.asarray(self.distortion, dtype=np.float64)
        return d if d.size and np.any(d != 0.0) else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``intrinsics.json``'s keys, and the map file's ``camera``)."""
        return {
            "width": self.width,
            "height": self.height,
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "distortion": list(self.distortion),
        }

    @classmethod
    def from_dict(
        cls, data: object, where: str, error: type[PoseNetError] = DatasetError
    ) -> CameraIntrinsics:
        """Validate the JSON form; ``error`` (naming ``where``, the key and the value) for
        anything malformed. fx, fy > 0, finite cx, cy, whole width, height >= 1; distortion
        all-zero is stored as ``()``."""
        if not isinstance(data, dict):
            raise error(f"{where}: intrinsics must be an object, got {type(data).__name__}")
        values: dict[str, float] = {}
        for key in ("fx", "fy", "cx", "cy", "width", "height"):
            if key not in data:
                raise error(
                    f"{where}: key {key!r} missing; required: fx, fy, cx, cy, width, height"
                )
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise error(f"{where}: {key} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise error(f"{where}: {key} must be finite, got {value!r}")
            values[key] = value
        for key in ("fx", "fy"):
            if values[key] <= 0.0:
                raise error(f"{where}: {key} must be > 0 pixels, got {values[key]!r}")
        for key in ("width", "height"):
            if values[key] != int(values[key]) or values[key] < 1:
                raise error(f"{where}: {key} must be a whole number >= 1, got {values[key]!r}")
        model = data.get("distortion_model", "plumb_bob")
        if model not in DISTORTION_MODELS:
            raise error(
                f"{where}: distortion_model {model!r} is not supported; allowed: "
                f"{', '.join(DISTORTION_MODELS)} (undistort the images first otherwise)"
            )
        distortion = data.get("distortion") or []
        if (
            not isinstance(distortion, list)
            or len(distortion) not in DISTORTION_LENGTHS
            or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in distortion
            )
        ):
            raise error(
                f"{where}: distortion must be 0, 4, 5 or 8 finite numbers (OpenCV order k1 k2 "
                f"t1 t2 [k3 [k4 k5 k6]]), got {distortion!r}"
            )
        if model == "none" and any(distortion):
            raise error(f"{where}: distortion {distortion} with distortion_model 'none'")
        return cls(
            width=int(values["width"]),
            height=int(values["height"]),
            fx=float(values["fx"]),
            fy=float(values["fy"]),
            cx=float(values["cx"]),
            cy=float(values["cy"]),
            distortion=tuple(float(v) for v in distortion) if any(distortion) else (),
        )


#: 7-Scenes' published RGB calibration (Shotton et al. 2013), 640x480.
SEVENSCENES_INTRINSICS = CameraIntrinsics(640, 480, 585.0, 585.0, 320.0, 240.0)


def read_intrinsics(path: Path, error: type[PoseNetError] = DatasetError) -> CameraIntrinsics:
    """Read an ``intrinsics.json`` (see :meth:`CameraIntrinsics.from_dict`).

    Raises ``error`` naming the file, the key and the value of anything malformed.
    """
    path = Path(path)
    data = read_json_object(path, "intrinsics file (fx, fy, cx, cy, width, height)", error)
    return CameraIntrinsics.from_dict(data, str(path), error)


def read_middlebury_intrinsics(path: Path, image_size: tuple[int, int]) -> CameraIntrinsics:
    """The one camera matrix of a Middlebury ``*_par.txt`` at ``image_size`` (width, height).

    The first line may be the image count or a column header. Raises DatasetError naming the
    file and line for a malformed row, several different K, or a K that is not a pinhole
    matrix.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the camera file: {exc}") from exc
    matrices = set()
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or (lineno == 1 and (len(fields) != 22 or fields[1] == "k11")):
            continue  # the count line of the original files, or a column header
        if len(fields) != 22:
            raise DatasetError(
                f"{path}:{lineno}: expected 'name k11..k33 r11..r33 t1 t2 t3' (22 fields), got "
                f"{len(fields)}"
            )
        try:
            matrices.add(tuple(float(v) for v in fields[1:10]))
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: K is not numeric: {fields[1:10]}") from None
    if len(matrices) != 1:
        raise DatasetError(f"{path}: {len(matrices)} different camera matrices; expected one")
    k = matrices.pop()
    if k[1] != 0.0 or k[3] != 0.0 or k[6:] != (0.0, 0.0, 1.0) or k[0] <= 0 or k[4] <= 0:
        raise DatasetError(f"{path}: K {list(k)} is not an upper-triangular pinhole matrix")
    width, height = image_size
    return CameraIntrinsics(int(width), int(height), k[0], k[4], k[2], k[5])


def check_image_size(
    intrinsics: CameraIntrinsics,
    source: str,
    image_size: tuple[int, int],
    what: str = "images",
    error: type[PoseNetError] = DatasetError,
) -> None:
    """Raise ``error`` unless the intrinsics are for images of ``image_size`` (width, height)."""
    width, height = image_size
    if (intrinsics.width, intrinsics.height) != (int(width), int(height)):
        raise error(
            f"the intrinsics ({source}) are for {intrinsics.width}x{intrinsics.height} images "
            f"but the {what} are {width}x{height}"
        )
