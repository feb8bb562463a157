"""The map file: the site's 3-D points and the keyframes that saw them, for pose refinement.

The trainer writes it (``python -m posenet_train.map``), the node's refinement stage reads it
(:func:`read_map`). It is the second artefact a site ships, beside the model file, and has its own
versioned contract (README, "The map file"):

One ``.npz`` file (numpy's zip of ``.npy`` arrays, compressed; read with ``allow_pickle=False``,
so a map file can never run code). Arrays:

=============================  =============  ==============================================
name                           dtype, shape   meaning
=============================  =============  ==============================================
``meta_json``                  uint8 (B,)     UTF-8 JSON, the metadata below
``keyframe_names``             str (N,)       image names (relative to the dataset), for logs
``keyframe_T_world_camera``    float64 (N,4,4)  pose of each keyframe (project convention)
``keyframe_obs_offset``        int64 (N+1,)   keyframe i owns observations
                                              ``offset[i]:offset[i+1]``; 0 first, M last
``obs_xy``                     float32 (M,2)  keypoint, pixels of the mapping camera (OpenCV
                                              convention: pixel centres at integers)
``obs_descriptor_index``       int32 (M,)     its descriptor (row of ``descriptor``)
``descriptor``                 uint8 (Q,D)    descriptors (D: 128 SIFT, 32 ORB); one per
                                              observation (Q = M), or one per 3-D point
                                              shared by its observations (the track's medoid,
                                              Q = P: a few times smaller)
``obs_point_id``               int32 (M,)     the 3-D point it observes (index into points)
``point_xyz_m``                float64 (P,3)  3-D points, scene frame, metres
``point_rgb``                  uint8 (P,3)    colour (for viewers)
``point_error_px``             float32 (P,)   mean reprojection error of the point's track
=============================  =============  ==============================================

Only keypoints that observe a 3-D point are stored: the others cannot give a 2D-3D match, and
leaving them out keeps a few hundred keyframes at a few MB.

``meta_json`` keys: ``format`` (``"posenet_map"``), ``version`` (contract version, ``1``),
``scene_frame`` (frame id, must equal the model file's ``posenet.scene_frame``), ``dataset``
(the dataset folder's name, as the model file's ``posenet.dataset``), ``dataset_fingerprint``
(SHA-256 of the training split's image names and poses, :func:`dataset_fingerprint`),
``feature`` (:class:`posenet_core.features.FeatureConfig` as an object: the frame must be
described the same way), ``camera`` (``width``, ``height``, ``fx``, ``fy``, ``cx``, ``cy``,
``distortion``: the mapping camera, OpenCV pixel convention; keypoints are as detected, i.e.
distorted where ``distortion`` is non-zero), ``counts`` (``keyframes``, ``points``,
``observations``: checked against the arrays), and free-form provenance (``created``, ``builder``,
``source``, ``model_sha256``...), which readers ignore.

Poses are ``T_world_camera``: the camera centre in the scene frame (metres) and the
camera-to-scene rotation; camera axes are optical (x right, y down, z forward).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from posenet_core.datasets.intrinsics import CameraIntrinsics
from posenet_core.errors import PoseNetError
from posenet_core.features import FeatureConfig, FeatureError
from posenet_core.files import write_bytes_atomically

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SUPPORTED_VERSIONS",
    "MapCamera",
    "MapFileError",
    "SiteMap",
    "check_compatible",
    "dataset_fingerprint",
    "read_map",
    "relative_image_name",
    "split_fingerprint",
    "write_map",
]

FORMAT_NAME = "posenet_map"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
HOW_TO_MAKE = (
    "build one with 'python -m posenet_train.map --dataset DATASET --output site.map.npz' "
    "(see README, 'The map file')"
)
_ARRAYS = {
    # name: (dtype kind check, ndim)
    "meta_json": (np.uint8, 1),
    "keyframe_names": (np.str_, 1),
    "keyframe_T_world_camera": (np.float64, 3),
    "keyframe_obs_offset": (np.int64, 1),
    "obs_xy": (np.float32, 2),
    "obs_descriptor_index": (np.int32, 1),
    "descriptor": (np.uint8, 2),
    "obs_point_id": (np.int32, 1),
    "point_xyz_m": (np.float64, 2),
    "point_rgb": (np.uint8, 2),
    "point_error_px": (np.float32, 1),
}
# A keyframe rotation is orthonormal to float64 rounding when written by the builder; 1e-6
# rejects matrices that are not rotations while allowing text round trips of 9+ digits.
_ROTATION_TOLERANCE = 1e-6


class MapFileError(PoseNetError):
    """The map file is missing, corrupt, of another version, inconsistent or incompatible.

    The message names the file, what is wrong, and how to make a valid one.
    """


MapCamera = CameraIntrinsics
"""The mapping camera: :class:`posenet_core.datasets.CameraIntrinsics` (the one intrinsics class
of the project; this name is kept for the map file's readers)."""


@dataclass(frozen=True, eq=False)
class SiteMap:
    """A site map in memory: what :func:`read_map` returns and :func:`write_map` writes.

    Arrays as in the module doc; they are made read-only. Use :meth:`keyframe_slice` for the
    observations of one keyframe.
    """

    scene_frame: str
    dataset: str
    dataset_fingerprint: str
    feature: FeatureConfig
    camera: MapCamera
    keyframe_names: np.ndarray
    keyframe_T_world_camera: np.ndarray
    keyframe_obs_offset: np.ndarray
    obs_xy: np.ndarray
    obs_descriptor_index: np.ndarray
    descriptor: np.ndarray
    obs_point_id: np.ndarray
    point_xyz_m: np.ndarray
    point_rgb: np.ndarray
    point_error_px: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        for name in _ARRAYS:
            if name == "meta_json":
                continue
            array = np.array(getattr(self, name))
            array.flags.writeable = False
            object.__setattr__(self, name, array)

    @property
    def num_keyframes(self) -> int:
        return int(self.keyframe_T_world_camera.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.point_xyz_m.shape[0])

    @property
    def num_observations(self) -> int:
        return int(self.obs_point_id.shape[0])

    def keyframe_slice(self, index: int) -> slice:
        """The observations of keyframe ``index``: ``obs_xy[s]``, ``obs_point_id[s]``..."""
        return slice(
            int(self.keyframe_obs_offset[index]), int(self.keyframe_obs_offset[index + 1])
        )

    def keyframe_descriptors(self, index: int) -> np.ndarray:
        """(n, D) uint8 descriptors of keyframe ``index``'s observations, in their order."""
        return self.descriptor[self.obs_descriptor_index[self.keyframe_slice(index)]]

    def meta(self) -> dict[str, Any]:
        """The ``meta_json`` object of this map."""
        meta = dict(self.provenance)
        meta.update(
            {
                "format": FORMAT_NAME,
                "version": self.version,
                "scene_frame": self.scene_frame,
                "dataset": self.dataset,
                "dataset_fingerprint": self.dataset_fingerprint,
                "feature": self.feature.to_dict(),
                "camera": self.camera.to_dict(),
                "counts": {
                    "keyframes": self.num_keyframes,
                    "points": self.num_points,
                    "observations": self.num_observations,
                },
            }
        )
        return meta

    def summary(self) -> str:
        """One line for logs: counts, feature, scene frame, dataset."""
        return (
            f"{self.num_keyframes} keyframes, {self.num_points} points, "
            f"{self.num_observations} observations, feature {self.feature.type}, "
            f"scene frame {self.scene_frame!r}, dataset {self.dataset!r}"
        )


def dataset_fingerprint(entries: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> str:
    """SHA-256 (hex) of a training split: ``(image name, position_m, quat_wxyz)`` per frame.

    Names are taken as given (use paths relative to the dataset folder, so that a moved dataset
    keeps its fingerprint); poses are rounded to 1e-6 m and 1e-9, so float noise of re-reading a
    text file does not change it. Order-independent.
    """
    lines = []
    for name, position_m, quat_wxyz in entries:
        p = np.asarray(position_m, dtype=np.float64).reshape(3)
        q = np.asarray(quat_wxyz, dtype=np.float64).reshape(4)
        if q[0] < 0:
            q = -q
        lines.append(
            f"{name} " + " ".join(f"{v:.6f}" for v in p) + " " + " ".join(f"{v:.9f}" for v in q)
        )
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


def relative_image_name(image_path: str | os.PathLike, folder: str | os.PathLike) -> str:
    """An image's name in a fingerprint and a map: its path relative to the dataset ``folder``
    (POSIX), or its file name for an image outside it."""
    try:
        return Path(image_path).resolve().relative_to(Path(folder).resolve()).as_posix()
    except ValueError:
        return Path(image_path).name


def split_fingerprint(records: Iterable[Any], folder: str | os.PathLike) -> str:
    """:func:`dataset_fingerprint` of a whole split's records (``image_path``, ``position_m``,
    ``quat_wxyz`` each, e.g. :class:`posenet_core.datasets.PoseRecord`) of the dataset in
    ``folder``: what the model file records as ``posenet.dataset_fingerprint`` and the map file
    as ``dataset_fingerprint`` for the training split, so the node can compare the two."""
    return dataset_fingerprint(
        (relative_image_name(r.image_path, folder), r.position_m, r.quat_wxyz) for r in records
    )


def _fail(path: object, what: str) -> MapFileError:
    return MapFileError(f"map file {path}: {what}; {HOW_TO_MAKE}")


def _validate_arrays(m: SiteMap, where: object) -> None:
    n, p, k = m.num_keyframes, m.num_points, m.num_observations
    d = m.feature.descriptor_bytes
    expect = {
        "keyframe_names": (n,),
        "keyframe_T_world_camera": (n, 4, 4),
        "keyframe_obs_offset": (n + 1,),
        "obs_xy": (k, 2),
        "obs_descriptor_index": (k,),
        "obs_point_id": (k,),
        "point_xyz_m": (p, 3),
        "point_rgb": (p, 3),
        "point_error_px": (p,),
    }
    for name, shape in expect.items():
        array = getattr(m, name)
        dtype = _ARRAYS[name][0]
        if dtype is np.str_:
            ok = array.dtype.kind == "U"
        else:
            ok = array.dtype == dtype
        if not ok:
            raise _fail(
                where, f"array {name} has dtype {array.dtype}; expected {np.dtype(dtype).name}"
            )
        if array.shape != shape:
            raise _fail(
                where,
                f"array {name} has shape {array.shape}; expected {shape} ({n} keyframes, {p} "
                f"points, {k} observations, {d}-byte {m.feature.type} descriptors)",
            )
    if m.descriptor.dtype != np.uint8 or m.descriptor.ndim != 2 or m.descriptor.shape[1] != d:
        raise _fail(
            where,
            f"array descriptor has dtype {m.descriptor.dtype}, shape {m.descriptor.shape}; "
            f"expected uint8 (Q, {d}) for {m.feature.type} descriptors",
        )
    q = m.descriptor.shape[0]
    if k and (m.obs_descriptor_index.min() < 0 or m.obs_descriptor_index.max() >= q):
        raise _fail(
            where,
            f"obs_descriptor_index values {int(m.obs_descriptor_index.min())}.."
            f"{int(m.obs_descriptor_index.max())} are outside the {q} descriptors",
        )
    if n == 0:
        raise _fail(where, "no keyframes")
    if p == 0:
        raise _fail(where, "no 3-D points")
    offsets = m.keyframe_obs_offset
    if offsets[0] != 0 or offsets[-1] != k or np.any(np.diff(offsets) < 0):
        raise _fail(
            where,
            f"keyframe_obs_offset must rise from 0 to the observation count {k}, got "
            f"{offsets[0]} .. {offsets[-1]}",
        )
    if k and (m.obs_point_id.min() < 0 or m.obs_point_id.max() >= p):
        raise _fail(
            where,
            f"obs_point_id values {int(m.obs_point_id.min())}..{int(m.obs_point_id.max())} are "
            f"outside the {p} points",
        )
    for name in ("keyframe_T_world_camera", "obs_xy", "point_xyz_m", "point_error_px"):
        if not np.all(np.isfinite(getattr(m, name))):
            raise _fail(where, f"array {name} contains NaN or infinite values")
    poses = m.keyframe_T_world_camera
    rotations = poses[:, :3, :3]
    ortho = np.abs(np.einsum("nji,njk->nik", rotations, rotations) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(rotations)
    last_row = np.abs(poses[:, 3, :] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=1)
    bad = np.flatnonzero((ortho > _ROTATION_TOLERANCE) | (det < 0) | (last_row > 0))
    if bad.size:
        i = int(bad[0])
        raise _fail(
            where,
            f"keyframe {i} ({m.keyframe_names[i]}) pose is not a rigid transform "
            f"(|R^T R - I| = {ortho[i]:.2g}, det {det[i]:.6g}, last row {poses[i, 3].tolist()})",
        )


def _parse_meta(raw: np.ndarray, where: object) -> dict[str, Any]:
    try:
        meta = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _fail(where, f"meta_json is not UTF-8 JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise _fail(where, f"meta_json must be a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT_NAME:
        raise _fail(where, f"meta_json format is {meta.get('format')!r}, not {FORMAT_NAME!r}")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _fail(where, f"meta_json version must be an integer, got {version!r}")
    if version not in SUPPORTED_VERSIONS:
        raise _fail(
            where,
            f"map format version {version} is not supported by this posenet_core "
            f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))}); rebuild the map with this "
            "version's trainer or update the node",
        )
    for key in ("scene_frame", "dataset", "dataset_fingerprint"):
        if not isinstance(meta.get(key), str):
            raise _fail(where, f"meta_json {key} must be a string, got {meta.get(key)!r}")
    if not meta["scene_frame"]:
        raise _fail(where, "meta_json scene_frame is empty")
    counts = meta.get("counts")
    if not isinstance(counts, dict) or not all(
        isinstance(counts.get(c), int) for c in ("keyframes", "points", "observations")
    ):
        raise _fail(
            where,
            f"meta_json counts must hold integer keyframes, points, observations, got {counts!r}",
        )
    return meta


def read_map(path: str | os.PathLike) -> SiteMap:
    """Read and validate a map file; raises :class:`MapFileError` naming what is wrong.

    Checks: the file exists and is a complete zip of ``.npy`` arrays without pickled objects,
    every array of the contract is there with its dtype and a shape consistent with the others
    and with ``counts``, the format and version are known, the feature configuration and camera
    are valid, offsets and point ids are in range, numbers are finite and poses are rigid.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "not found")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            missing = [n for n in _ARRAYS if n not in names]
            if missing:
                raise _fail(path, f"lacks the array(s) {', '.join(missing)}")
            for name in _ARRAYS:
                arrays[name] = npz[name]
    except MapFileError:
        raise
    except ValueError as exc:
        # allow_pickle=False refuses object arrays with a ValueError; so do malformed headers.
        raise _fail(path, f"is not a valid map (.npz without pickled objects): {exc}") from None
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, KeyError) as exc:
        raise _fail(path, f"is corrupt or truncated ({type(exc).__name__}: {exc})") from None
    for name, (_dtype, ndim) in _ARRAYS.items():
        if arrays[name].ndim != ndim:
            raise _fail(path, f"array {name} has {arrays[name].ndim} dimensions; expected {ndim}")
    meta = _parse_meta(arrays["meta_json"], path)
    try:
        feature = FeatureConfig.from_dict(meta.get("feature"))
    except (FeatureError, TypeError) as exc:
        raise _fail(path, f"meta_json feature: {exc}") from None
    try:
        camera = CameraIntrinsics.from_dict(meta.get("camera"), "meta_json", MapFileError)
    except MapFileError as exc:
        raise _fail(path, str(exc)) from None
    reserved = {
        "format",
        "version",
        "scene_frame",
        "dataset",
        "dataset_fingerprint",
        "feature",
        "camera",
        "counts",
    }
    site_map = SiteMap(
        scene_frame=meta["scene_frame"],
        dataset=meta["dataset"],
        dataset_fingerprint=meta["dataset_fingerprint"],
        feature=feature,
        camera=camera,
        provenance={k: v for k, v in meta.items() if k not in reserved},
        version=meta["version"],
        **{name: arrays[name] for name in _ARRAYS if name != "meta_json"},
    )
    _validate_arrays(site_map, path)
    counts = meta["counts"]
    actual = {
        "keyframes": site_map.num_keyframes,
        "points": site_map.num_points,
        "observations": site_map.num_observations,
    }
    if counts != actual:
        raise _fail(path, f"meta_json counts {counts} disagree with the arrays {actual}")
    return site_map


def write_map(path: str | os.PathLike, site_map: SiteMap) -> Path:
    """Validate ``site_map`` and write it to ``path`` atomically (temporary file, then rename).

    Returns the path. Raises :class:`MapFileError` if the map breaks the contract (nothing is
    written then).
    """
    path = Path(path)
    _validate_arrays(site_map, path)
    meta = json.dumps(site_map.meta(), sort_keys=True).encode("utf-8")
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        meta_json=np.frombuffer(meta, dtype=np.uint8),
        **{name: getattr(site_map, name) for name in _ARRAYS if name != "meta_json"},
    )
    # A map is shared like any data file: the umask's permissions, not mkstemp's 0600.
    write_bytes_atomically(path, buffer.getvalue())
    return path


def check_compatible(
    site_map: SiteMap,
    *,
    scene_frame: str | None = None,
    dataset: str | None = None,
    dataset_fingerprint: str | None = None,
    where: str = "map",
) -> None:
    """Raise :class:`MapFileError` unless the map belongs to the given model / dataset.

    ``scene_frame`` is the model file's ``posenet.scene_frame``, ``dataset`` its
    ``posenet.dataset``; a value of None (or an empty/"unknown" dataset) is not checked. A map of
    another scene frame or dataset would "refine" poses into another coordinate frame.
    """
    if scene_frame is not None and site_map.scene_frame != scene_frame:
        raise MapFileError(
            f"{where}: the map is in scene frame {site_map.scene_frame!r} but the model's is "
            f"{scene_frame!r}; build the map from the dataset the model was trained on"
        )
    if dataset and dataset != "unknown" and site_map.dataset != dataset:
        raise MapFileError(
            f"{where}: the map was built from dataset {site_map.dataset!r} but the model from "
            f"{dataset!r}; build the map from the model's training dataset"
        )
    if dataset_fingerprint and site_map.dataset_fingerprint != dataset_fingerprint:
        raise MapFileError(
            f"{where}: the map's dataset fingerprint {site_map.dataset_fingerprint[:12]}... "
            f"differs from {dataset_fingerprint[:12]}... (another version of dataset "
            f"{site_map.dataset!r}); rebuild the map"
        )
