"""The INT8 calibration images that travel beside a model file.

``posenet_train.export`` writes ``<model stem>_calibration.npy`` -- float32 ``[N,3,H,W]`` RGB in
0..1, training images preprocessed exactly as the node feeds the network -- and
``<model stem>_calibration.json`` describing it (layout "NCHW", colour "RGB", the images used).
TensorRT's INT8 engine build (``posenet_ros.tensorrt``), ONNX Runtime's static quantisation
(``posenet_train.quantize``) and ``verify_engine`` read them with :func:`read_calibration_images`,
so a wrong file is refused the same way everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from posenet_core.errors import CalibrationDataError

__all__ = [
    "CALIBRATION_SUFFIX",
    "calibration_paths",
    "default_calibration_path",
    "read_calibration_images",
]

CALIBRATION_SUFFIX = "_calibration"
# Calibration images are 0..1; allow float rounding at the ends.
_RANGE_SLACK = 1e-3
_HINT = (
    "write them with `python -m posenet_train.export ... --calibration-images 64` "
    "(<model stem>_calibration.npy beside the model) or pass --calibration"
)


def calibration_paths(model_path: str | Path) -> tuple[Path, Path]:
    """``(<stem>_calibration.npy, <stem>_calibration.json)`` beside the model file."""
    model_path = Path(model_path)
    stem = model_path.with_name(model_path.stem + CALIBRATION_SUFFIX)
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


def default_calibration_path(model_path: str | Path) -> Path:
    """``<model stem>_calibration.npy`` beside the model (what posenet_train.export writes)."""
    return calibration_paths(model_path)[0]


def read_calibration_images(path: str | Path, input_hw: tuple[int, int]) -> np.ndarray:
    """The calibration images at ``path``: C-contiguous float32 ``[N,3,H,W]`` RGB, 0..1.

    Checks the array (dtype, rank, channels, ``H,W == input_hw``, at least one image, finite,
    range 0..1) and, when present, its JSON description beside it (layout NCHW, colour RGB).
    Raises CalibrationDataError naming the file, the bad value and what is expected.
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationDataError(f"calibration images {path} not found; {_HINT}")
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CalibrationDataError(
            f"calibration images {path} are not a readable .npy array: {exc}"
        ) from exc
    if not isinstance(images, np.ndarray) or images.dtype != np.float32:
        raise CalibrationDataError(
            f"calibration images {path} have dtype {getattr(images, 'dtype', None)}; "
            "expected float32"
        )
    expected = f"[N,3,{input_hw[0]},{input_hw[1]}]"
    if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != tuple(input_hw):
        raise CalibrationDataError(
            f"calibration images {path} have shape {list(images.shape)}; the model takes "
            f"{expected} (NCHW, RGB)"
        )
    if images.shape[0] < 1:
        raise CalibrationDataError(f"calibration images {path} hold no image; {_HINT}")
    if not np.isfinite(images).all():
        raise CalibrationDataError(f"calibration images {path} contain NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    if low < -_RANGE_SLACK or high > 1.0 + _RANGE_SLACK:
        raise CalibrationDataError(
            f"calibration images {path} range from {low:g} to {high:g}; expected 0..1 "
            "(RGB divided by 255, as the node feeds the network)"
        )
    _check_description(path.with_suffix(".json"))
    return np.ascontiguousarray(images)


def _check_description(description: Path) -> None:
    if not description.is_file():
        return
    try:
        meta = json.loads(description.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationDataError(
            f"calibration description {description} is unreadable: {exc}"
        ) from exc
    if not isinstance(meta, dict):
        raise CalibrationDataError(f"calibration description {description} must be a JSON object")
    for name, want in (("layout", "NCHW"), ("color", "RGB")):
        if name in meta and meta[name] != want:
            raise CalibrationDataError(
                f"calibration description {description}: {name} is {meta[name]!r}; "
                f"expected {want!r}"
            )
