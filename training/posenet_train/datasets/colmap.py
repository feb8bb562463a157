"""COLMAP sparse reconstructions (read with pycolmap) plus their image folder.

Layout of a dataset folder ``ROOT`` (what ``colmap`` / hloc / nerfstudio produce)::

    ROOT/images/...          the images, named as in the model (names may contain folders)
    ROOT/sparse/0/           the model: cameras, images, points3D (.bin or .txt), or ROOT/sparse/
    ROOT/test_list.txt       optional: image names of the test split, one per line
    ROOT/train_list.txt      optional: image names of the train split (default: all others)

``ROOT`` may also be the model folder itself; the images are then looked for in ``ROOT/images``,
``ROOT/../images`` and ``ROOT/../../images`` (first that exists), or given with ``image_dir``.

Split without list files: the registered images sorted by name, every ``TEST_EVERY``-th one
(index 0, 8, 16, ...) is the test split and the rest the train split: the convention of the
LLFF / mip-NeRF benchmarks, which spreads test views evenly along the capture.

COLMAP stores ``cam_from_world`` (R, t: world -> camera); the loader converts once:
camera centre ``C = -R^T t``, camera-to-world rotation ``R^T``. Images without a pose are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posenet_core.datasets.common import PoseRecord, check_split, require_image
from posenet_core.datasets.intrinsics import CameraIntrinsics
from posenet_core.errors import DatasetError, InvalidPoseError
from posenet_core.geometry import matrix_to_quat, orthonormalize_rotation

__all__ = [
    "COLMAP_CAMERA_MODELS",
    "TEST_EVERY",
    "colmap_camera",
    "find_image_dir",
    "find_model_dir",
    "is_colmap",
    "load_colmap",
    "read_colmap_poses",
]

TEST_EVERY = 8
_MODEL_FILES = ("cameras", "images")
#: COLMAP camera models whose parameters map onto OpenCV's pinhole + distortion:
#: name -> (fx, fy, cx, cy, distortion) of the params list.
COLMAP_CAMERA_MODELS = {
    "SIMPLE_PINHOLE": lambda p: (p[0], p[0], p[1], p[2], ()),
    "PINHOLE": lambda p: (p[0], p[1], p[2], p[3], ()),
    "SIMPLE_RADIAL": lambda p: (p[0], p[0], p[1], p[2], (p[3], 0.0, 0.0, 0.0)),
    "RADIAL": lambda p: (p[0], p[0], p[1], p[2], (p[3], p[4], 0.0, 0.0)),
    "OPENCV": lambda p: (p[0], p[1], p[2], p[3], tuple(p[4:8])),
}


def _is_model_dir(folder: Path) -> bool:
    return all(
        (folder / f"{name}.bin").is_file() or (folder / f"{name}.txt").is_file()
        for name in _MODEL_FILES
    )


def find_model_dir(root: Path) -> Path | None:
    """The COLMAP model folder of ``root``: ``root/sparse/0``, ``root/sparse`` or ``root``."""
    root = Path(root)
    for candidate in (root / "sparse" / "0", root / "sparse", root):
        if _is_model_dir(candidate):
            return candidate
    return None


def is_colmap(folder: Path) -> bool:
    """True if ``folder`` holds (or is) a COLMAP model folder."""
    return find_model_dir(folder) is not None


def find_image_dir(root: Path) -> Path | None:
    """The image folder for a dataset root or model folder (see module doc), or None."""
    root = Path(root)
    for candidate in (root / "images", root.parent / "images", root.parent.parent / "images"):
        if candidate.is_dir():
            return candidate
    return None


def _cam_from_world_matrix(image) -> np.ndarray:
    # pycolmap >= 3.12 made cam_from_world a method (rig support); older versions a property.
    pose = image.cam_from_world
    if callable(pose):
        pose = pose()
    return np.asarray(pose.matrix(), dtype=np.float64)


def _has_pose(image) -> bool:
    for name in ("has_pose", "registered"):
        value = getattr(image, name, None)
        if value is not None:
            return bool(value() if callable(value) else value)
    return True


def read_colmap_poses(model_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{image name: (position_m, quat_wxyz)}`` in ``T_world_camera`` for every posed image."""
    import pycolmap  # heavy import, only needed for this format

    model_dir = Path(model_dir)
    if not _is_model_dir(model_dir):
        raise DatasetError(
            f"{model_dir}: not a COLMAP model folder (needs cameras.bin/.txt and images.bin/.txt)"
        )
    try:
        reconstruction = pycolmap.Reconstruction(str(model_dir))
    except Exception as exc:  # pycolmap raises plain RuntimeError/ValueError on corrupt files
        raise DatasetError(f"{model_dir}: cannot read the COLMAP model: {exc}") from exc
    poses: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for image_id, image in sorted(reconstruction.images.items()):
        if not _has_pose(image):
            continue
        cam_from_world = _cam_from_world_matrix(image)
        try:
            r_camera_world = orthonormalize_rotation(cam_from_world[:3, :3])
        except InvalidPoseError as exc:
            raise DatasetError(
                f"{model_dir}: image id {image_id} {image.name!r}: bad rotation: {exc}"
            ) from None
        position_m = -r_camera_world.T @ cam_from_world[:3, 3]
        poses[image.name] = (position_m, matrix_to_quat(r_camera_world.T))
    if not poses:
        raise DatasetError(f"{model_dir}: the COLMAP model has no images with a pose")
    return poses


def _read_list(path: Path, known: dict) -> list[str]:
    names = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name not in known:
            raise DatasetError(
                f"{path}:{lineno}: image {name!r} is not a posed image of the COLMAP model"
            )
        names.append(name)
    if not names:
        raise DatasetError(f"{path}: lists no images")
    return names


def load_colmap(
    root: Path,
    split: str,
    *,
    model_dir: Path | None = None,
    image_dir: Path | None = None,
    test_every: int = TEST_EVERY,
) -> list[PoseRecord]:
    """Load one split of a COLMAP dataset folder (see the module doc for layout and split rule).

    Args:
        root: dataset folder (or the model folder itself).
        split: "train" or "test".
        model_dir: model folder; default found with :func:`find_model_dir`.
        image_dir: image folder; default found with :func:`find_image_dir`.
        test_every: every N-th image (sorted by name) is a test image when no list file exists.
    """
    check_split(split)
    root = Path(root)
    if test_every < 2:
        raise DatasetError(f"test_every must be >= 2 (one test image every N), got {test_every}")
    model = Path(model_dir) if model_dir is not None else find_model_dir(root)
    if model is None:
        raise DatasetError(
            f"{root}: no COLMAP model found in {root}/sparse/0, {root}/sparse or {root}"
        )
    images = Path(image_dir) if image_dir is not None else find_image_dir(root)
    if images is None or not images.is_dir():
        raise DatasetError(
            f"{root}: no image folder found (looked for images/ in {root} and its parents);"
            " pass image_dir"
        )
    poses = read_colmap_poses(model)
    names = sorted(poses)
    test_list, train_list = root / "test_list.txt", root / "train_list.txt"
    if test_list.is_file():
        test_names = _read_list(test_list, poses)
        if split == "test":
            selected = test_names
        elif train_list.is_file():
            selected = _read_list(train_list, poses)
        else:
            excluded = set(test_names)
            selected = [n for n in names if n not in excluded]
    else:
        selected = [n for i, n in enumerate(names) if (i % test_every == 0) == (split == "test")]
    if not selected:
        raise DatasetError(f"{root}: the {split} split of the COLMAP model is empty")
    records = []
    for name in selected:
        image_path = (images / name).absolute()
        require_image(image_path, f"{model}: image {name!r}")
        position_m, quat_wxyz = poses[name]
        records.append(PoseRecord(image_path, position_m, quat_wxyz))
    return records


def colmap_camera(root: Path) -> tuple[CameraIntrinsics, str] | None:
    """The camera of the COLMAP model in ``root`` (OpenCV pixel convention) and its source, or
    None without a model. DatasetError when the model has several different cameras (a dataset
    has one) or one whose model OpenCV cannot undo (:data:`COLMAP_CAMERA_MODELS`)."""
    import pycolmap

    model_dir = find_model_dir(root)
    if model_dir is None:
        return None
    try:
        reconstruction = pycolmap.Reconstruction(str(model_dir))
    except Exception as exc:  # pycolmap raises plain RuntimeError/ValueError
        raise DatasetError(f"{model_dir}: cannot read the COLMAP model: {exc}") from exc
    converted = set()
    for camera in reconstruction.cameras.values():
        name = str(camera.model_name)
        if name not in COLMAP_CAMERA_MODELS:
            raise DatasetError(
                f"{model_dir}: COLMAP camera model {name} is not supported (supported: "
                f"{', '.join(COLMAP_CAMERA_MODELS)}); give an intrinsics JSON instead"
            )
        fx, fy, cx, cy, dist = COLMAP_CAMERA_MODELS[name]([float(v) for v in camera.params])
        # COLMAP puts pixel centres at half-integers, OpenCV at integers.
        converted.add(
            (int(camera.width), int(camera.height), fx, fy, cx - 0.5, cy - 0.5, tuple(dist))
        )
    if not converted:
        raise DatasetError(f"{model_dir}: the COLMAP model has no camera")
    if len(converted) != 1:
        raise DatasetError(
            f"{model_dir}: the COLMAP model has {len(converted)} different cameras; expected one"
            " (give an intrinsics JSON if they are really the same)"
        )
    w, h, fx, fy, cx, cy, dist = converted.pop()
    intrinsics = CameraIntrinsics(w, h, fx, fy, cx, cy, dist if any(dist) else ())
    return intrinsics, f"COLMAP camera in {model_dir}"
