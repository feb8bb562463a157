"""Build the site's map file: local features of the training images, triangulated from their poses.

Example::

    python -m posenet_train.map --dataset /work/shared/datasets/middlebury_dino \\
        --output dino.map.npz

Input: any posed dataset ``posenet_train.datasets`` reads (Cambridge Landmarks, 7-Scenes, a COLMAP
model such as ``posenet_train.sfm`` writes; ``FORMAT:PATH`` forces a format). Only the training
split goes into the map: test images must stay unseen. The poses are taken as they are (no bundle
adjustment moves them), so the map is in the model's own scene frame.

Steps:

1. intrinsics of the mapping camera: ``--intrinsics JSON`` (the format ``posenet_train.sfm``
   takes), else the dataset's own, found as the player and evaluation find them
   (:func:`posenet_core.datasets.dataset_intrinsics`): its COLMAP camera (``sparse/0``,
   ``sparse`` or the folder), ``intrinsics.json`` (the synthetic scene), ``dino_par.txt``
   (middlebury), or 7-Scenes' published calibration (f = 585, c = (320, 240));
2. local features of every training image with the extractor the node will use
   (:mod:`posenet_core.features`; ``--feature``, ``--max-keypoints`` ...);
3. image pairs from the known poses: each image with its ``--pairs-per-image`` nearest images
   whose viewing directions differ by at most ``--max-pair-angle-deg``;
4. matches of each pair (ratio test, mutual check), kept when they agree with the epipolar
   geometry of the known poses (Sampson distance below ``--epipolar-threshold-px``);
5. triangulation with pycolmap's point triangulator (``triangulate_points``: tracks built over
   all verified pairs, merged and completed, points filtered by reprojection error and
   triangulation angle, bundle adjustment of the points with every camera pose held fixed);
6. the map file (:mod:`posenet_core.mapfile`): keyframes with the keypoints that see a 3-D point,
   their descriptors and point ids, and the points. By default each 3-D point keeps one
   descriptor, its track's medoid, which all its observations share (``--descriptors point``;
   ``observation`` keeps every keypoint's own, a few times larger).

An existing output is reused unless ``--overwrite`` (a note says when it was built with other
parameters). Extracted features are cached beside the output (``<output>.features.npz``) so a
rebuild with other matching parameters skips extraction.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from posenet_core.checks import check_fields
from posenet_core.cli import int_at_least, number
from posenet_core.contract import KEY_DATASET_FINGERPRINT
from posenet_core.datasets import PoseRecord
from posenet_core.features import (
    FEATURE_TYPES,
    FeatureConfig,
    FeatureError,
    create_detector,
    extract_features,
    match_descriptors,
)
from posenet_core.geometry import pose_to_matrix
from posenet_core.mapfile import (
    MapCamera,
    MapFileError,
    SiteMap,
    read_map,
    relative_image_name,
    split_fingerprint,
    write_map,
)
from posenet_train.datasets import dataset_intrinsics, load_split, parse_dataset_spec
from posenet_train.errors import DatasetError, PoseNetTrainError

__all__ = [
    "DESCRIPTOR_MODES",
    "MapBuildError",
    "MatchOptions",
    "build_parser",
    "cli",
    "main",
    "point_descriptors",
    "select_pairs",
]

FEATURES_SUFFIX = ".features.npz"


class MapBuildError(PoseNetTrainError):
    """The map cannot be built (no intrinsics, no features, nothing triangulated...)."""


@dataclass(frozen=True)
class MatchOptions:
    """How training images are paired, matched and verified.

    Attributes:
        pairs_per_image: nearest images (by pose) each image is matched with.
        max_pair_angle_deg: images whose optical axes differ more are never paired.
        ratio: Lowe's ratio test.
        mutual: keep mutual nearest neighbours only.
        epipolar_threshold_px: largest Sampson distance (pixels) to the epipolar geometry of the
            known poses.
        min_pair_matches: pairs with fewer verified matches are dropped.
        min_triangulation_angle_deg: COLMAP's smallest triangulation angle for a new point.
        max_reprojection_px: COLMAP's largest reprojection error of an observation.
    """

    pairs_per_image: int = 8
    max_pair_angle_deg: float = 45.0
    ratio: float = 0.8
    mutual: bool = True
    epipolar_threshold_px: float = 2.0
    min_pair_matches: int = 15
    min_triangulation_angle_deg: float = 1.5
    max_reprojection_px: float = 4.0

    def __post_init__(self) -> None:
        check_fields(self, MapBuildError, integers={"pairs_per_image": 1, "min_pair_matches": 1})
        for name, low, high in (
            ("max_pair_angle_deg", 0.0, 180.0),
            ("ratio", 0.0, 1.0),
            ("epipolar_threshold_px", 0.0, 100.0),
            ("min_triangulation_angle_deg", 0.0, 90.0),
            ("max_reprojection_px", 0.0, 100.0),
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise MapBuildError(f"{name} must be a number, got {value!r}")
            if not low < value <= high:
                raise MapBuildError(f"{name} must be in ({low}, {high}], got {value!r}")


# ------------------------------------------------------------------------------ pairs, matches


def _view_cost(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centres = T[:, :3, 3]
    axes = T[:, :3, 2]
    distance = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    angle = np.arccos(np.clip(axes @ axes.T, -1.0, 1.0))
    return distance, angle


def select_pairs(
    T_world_camera: np.ndarray, pairs_per_image: int, max_angle_deg: float
) -> list[tuple[int, int]]:
    """Image pairs ``(i, j)``, ``i < j``: each image with its nearest images by pose.

    Nearness is ``distance + scale * angle`` (``scale`` the median distance between images and
    their nearest neighbour times 10, so a rotation counts like a comparable shift), among
    images whose optical axes differ by at most ``max_angle_deg``.
    """
    n = len(T_world_camera)
    distance, angle = _view_cost(np.asarray(T_world_camera, np.float64))
    off = distance + np.diag(np.full(n, np.inf))
    spacing = float(np.median(off.min(axis=1))) if n > 1 else 1.0
    cost = distance + 10.0 * max(spacing, 1e-9) * angle
    cost[angle > math.radians(max_angle_deg)] = np.inf
    np.fill_diagonal(cost, np.inf)
    pairs = set()
    for i in range(n):
        for j in np.argsort(cost[i], kind="stable")[:pairs_per_image]:
            if np.isfinite(cost[i, j]):
                pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(pairs)


def _fundamental(T_i: np.ndarray, T_j: np.ndarray, K: np.ndarray) -> np.ndarray:
    # x_j^T F x_i = 0 for a point seen at x_i in image i and x_j in image j.
    T_j_i = np.linalg.inv(T_j) @ T_i
    R, t = T_j_i[:3, :3], T_j_i[:3, 3]
    tx = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    K_inv = np.linalg.inv(K)
    return K_inv.T @ tx @ R @ K_inv


def sampson_distance(F: np.ndarray, xy_i: np.ndarray, xy_j: np.ndarray) -> np.ndarray:
    """Sampson distance (pixels) of correspondences to the epipolar geometry ``F``."""
    a = np.hstack([xy_i, np.ones((len(xy_i), 1))])
    b = np.hstack([xy_j, np.ones((len(xy_j), 1))])
    Fa = a @ F.T
    Ftb = b @ F
    num = np.sum(b * Fa, axis=1) ** 2
    den = Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Ftb[:, 0] ** 2 + Ftb[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-300))


# --------------------------------------------------------------------------------- features


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"{path}: cannot read image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _features_key(feature: FeatureConfig, names: list[str]) -> str:
    digest = hashlib.sha256(json.dumps(feature.to_dict(), sort_keys=True).encode())
    for name in names:
        digest.update(name.encode() + b"\n")
    return digest.hexdigest()


def _extract_all(
    records: Sequence[PoseRecord],
    names: list[str],
    feature: FeatureConfig,
    cache: Path,
    *,
    overwrite: bool,
    progress: bool,
) -> list[tuple[np.ndarray, np.ndarray]]:
    from tqdm import tqdm

    key = _features_key(feature, names)
    if cache.is_file() and not overwrite:
        try:
            with np.load(cache, allow_pickle=False) as npz:
                if str(npz["key"]) == key:
                    offsets = npz["offset"]
                    xy, desc = npz["xy"], npz["descriptor"]
                    return [
                        (xy[offsets[i] : offsets[i + 1]], desc[offsets[i] : offsets[i + 1]])
                        for i in range(len(names))
                    ]
        except (OSError, ValueError, KeyError):
            pass  # a stale or broken cache is rebuilt
    detector = create_detector(feature)
    out = []
    for record in tqdm(records, desc="features", unit="image", disable=not progress):
        f = extract_features(_read_rgb(record.image_path), feature, detector)
        out.append((f.xy, f.descriptors))
    offsets = np.concatenate([[0], np.cumsum([len(x) for x, _ in out])]).astype(np.int64)
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez(
        tmp,
        key=np.array(key),
        offset=offsets,
        xy=np.concatenate([x for x, _ in out]) if out else np.zeros((0, 2), np.float32),
        descriptor=np.concatenate([d for _, d in out]),
    )
    os.replace(tmp, cache)
    return out


# ------------------------------------------------------------------------------ triangulation


def _triangulate(
    names: list[str],
    image_root: Path,
    T: np.ndarray,
    camera: MapCamera,
    keypoints_undistorted: list[np.ndarray],
    verified: dict[tuple[int, int], np.ndarray],
    options: MatchOptions,
    num_threads: int,
    verbose: bool,
):
    """pycolmap's point triangulator on known poses; returns the Reconstruction."""
    import pycolmap

    work = Path(tempfile.mkdtemp(prefix="posenet_map_"))
    try:
        reconstruction = pycolmap.Reconstruction()
        # Undistorted keypoints go in, so the camera is a plain pinhole; COLMAP's pixel centres
        # are at half-integers (+0.5).
        cam = pycolmap.Camera(
            model="PINHOLE",
            width=camera.width,
            height=camera.height,
            params=[camera.fx, camera.fy, camera.cx + 0.5, camera.cy + 0.5],
            camera_id=1,
        )
        reconstruction.add_camera_with_trivial_rig(cam)
        db = pycolmap.Database.open(work / "database.db")
        try:
            db.write_camera(cam, use_camera_id=True)
            db.write_rig(reconstruction.rig(1), use_rig_id=True)
            for i, name in enumerate(names):
                image_id = i + 1
                kp = keypoints_undistorted[i].astype(np.float64) + 0.5
                image = pycolmap.Image(name=name, keypoints=kp, camera_id=1, image_id=image_id)
                cam_from_world = np.linalg.inv(T[i])[:3]
                reconstruction.add_image_with_trivial_frame(
                    image, pycolmap.Rigid3d(cam_from_world)
                )
                db.write_frame(reconstruction.frame(image_id), use_frame_id=True)
                db.write_image(reconstruction.image(image_id), use_image_id=True)
                db.write_keypoints(image_id, kp.astype(np.float32))
            for (i, j), matches in verified.items():
                m = matches.astype(np.uint32)
                db.write_matches(i + 1, j + 1, m)
                geometry = pycolmap.TwoViewGeometry()
                geometry.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
                geometry.inlier_matches = m
                db.write_two_view_geometry(i + 1, j + 1, geometry)
        finally:
            db.close()
        pipeline = pycolmap.IncrementalPipelineOptions()
        pipeline.fix_existing_frames = True
        pipeline.ba_refine_focal_length = False
        pipeline.ba_refine_principal_point = False
        pipeline.ba_refine_extra_params = False
        pipeline.num_threads = num_threads
        pipeline.triangulation.min_angle = options.min_triangulation_angle_deg
        pipeline.triangulation.complete_max_reproj_error = options.max_reprojection_px
        pipeline.triangulation.merge_max_reproj_error = options.max_reprojection_px
        pipeline.mapper.filter_max_reproj_error = options.max_reprojection_px
        pipeline.mapper.filter_min_tri_angle = options.min_triangulation_angle_deg
        (work / "out").mkdir()
        log_level = pycolmap.logging.minloglevel if hasattr(pycolmap, "logging") else None
        if not verbose and log_level is not None:
            pycolmap.logging.minloglevel = 2
        try:
            return pycolmap.triangulate_points(
                reconstruction, work / "database.db", image_root, work / "out", options=pipeline
            )
        except Exception as exc:  # pycolmap raises RuntimeError/ValueError with COLMAP's text
            raise MapBuildError(f"pycolmap triangulation failed: {exc}") from exc
        finally:
            if log_level is not None:
                pycolmap.logging.minloglevel = log_level
    finally:
        shutil.rmtree(work, ignore_errors=True)


DESCRIPTOR_MODES = ("point", "observation")


def point_descriptors(
    descriptors: np.ndarray, point_ids: np.ndarray, num_points: int, feature: FeatureConfig
) -> np.ndarray:
    """One descriptor per 3-D point: the medoid of its observations' descriptors.

    The medoid (the observation closest, in the matcher's distance, to all others of its track)
    is a real descriptor that represents the track's views; storing it instead of every
    observation's makes the map smaller by the mean track length.
    """
    from posenet_core.features import normalized_descriptors

    order = np.argsort(point_ids, kind="stable")
    bounds = np.searchsorted(point_ids[order], np.arange(num_points + 1))
    out = np.zeros((num_points, descriptors.shape[1]), np.uint8)
    if feature.binary:
        bits = np.unpackbits(descriptors, axis=1).astype(np.float32)
    else:
        unit = normalized_descriptors(descriptors, feature)
    for p in range(num_points):
        members = order[bounds[p] : bounds[p + 1]]
        if len(members) <= 2:
            out[p] = descriptors[members[0]]
            continue
        if feature.binary:
            b = bits[members]
            ones = b.sum(axis=1)
            distance = ones[:, None] + ones[None, :] - 2.0 * (b @ b.T)
        else:
            u = unit[members]
            distance = np.sqrt(np.maximum(2.0 - 2.0 * (u @ u.T), 0.0))
        out[p] = descriptors[members[int(np.argmin(distance.sum(axis=1)))]]
    return out


# ---------------------------------------------------------------------------------- the step


def _dataset_name(dataset: str) -> str:
    # As posenet_train.export writes posenet.dataset, so the node can compare the two.
    _, folder = parse_dataset_spec(dataset)
    return folder.resolve().name or str(folder)


def _relative_name(path: Path, folder: Path) -> str:
    return relative_image_name(path, folder)


def _model_metadata(model: Path) -> tuple[dict[str, str], str]:
    import onnx

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError...
        raise MapBuildError(f"{model}: cannot read the model file: {exc}") from exc
    digest = hashlib.sha256(Path(model).read_bytes()).hexdigest()
    return {p.key: p.value for p in proto.metadata_props}, digest


def main(
    dataset: str,
    output: str | Path,
    *,
    intrinsics: str | Path | None = None,
    scene_frame: str | None = None,
    model: str | Path | None = None,
    feature: FeatureConfig | None = None,
    match: MatchOptions | None = None,
    descriptors: str = "point",
    max_keyframes: int = 0,
    num_threads: int = 2,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool = False,
) -> Path:
    """Build the map file of ``dataset``'s training split; returns its path.

    Args:
        dataset: dataset folder or ``FORMAT:PATH``.
        output: the map file (``.npz``).
        intrinsics: JSON of the mapping camera (default: the dataset's own, see module doc).
        scene_frame: the map's scene frame (default: the model file's, else ``map``).
        model: the model file the map is for: its ``posenet.dataset`` must name this dataset,
            its scene frame is the default, and its SHA-256 is recorded.
        feature: the local feature (default :class:`FeatureConfig`'s).
        match: pairing, matching and triangulation options.
        descriptors: ``"point"`` (one descriptor per 3-D point, its track's medoid: smaller) or
            ``"observation"`` (every observation its own).
        max_keyframes: use at most this many training images, evenly spread (0: all).
        num_threads: CPU threads for pycolmap.
        overwrite: rebuild even if ``output`` exists (and re-extract features).
        progress: show progress bars.
        verbose: show pycolmap's log.

    Raises MapBuildError / DatasetError with a clear message; writes nothing then.
    """
    output = Path(output)
    feature = feature if feature is not None else FeatureConfig()
    match = match if match is not None else MatchOptions()
    if output.suffix != ".npz":
        raise MapBuildError(f"output {output} must end in .npz (the map file is an .npz)")
    if max_keyframes < 0:
        raise MapBuildError(f"max_keyframes must be >= 0, got {max_keyframes}")
    if descriptors not in DESCRIPTOR_MODES:
        raise MapBuildError(
            f"descriptors must be one of {', '.join(DESCRIPTOR_MODES)}, got {descriptors!r}"
        )
    model_sha256 = None
    dataset_name = _dataset_name(dataset)
    if model is not None:
        metadata, model_sha256 = _model_metadata(Path(model))
        model_dataset = metadata.get("posenet.dataset", "")
        if model_dataset and model_dataset != dataset_name:
            raise MapBuildError(
                f"the model file {model} was trained on dataset {model_dataset!r}, not "
                f"{dataset_name!r}: a map must be built from the model's own dataset"
            )
        if scene_frame is None:
            scene_frame = metadata.get("posenet.scene_frame") or None
    scene_frame = scene_frame or "map"
    build = {
        "feature": feature.to_dict(),
        "match": {k: getattr(match, k) for k in match.__dataclass_fields__},
        "max_keyframes": max_keyframes,
        "descriptors": descriptors,
        "scene_frame": scene_frame,
        "intrinsics": None if intrinsics is None else str(intrinsics),
    }
    if output.exists() and not overwrite:
        try:
            existing = read_map(output)
        except MapFileError as exc:
            raise MapBuildError(f"{exc} (or pass --overwrite to rebuild it)") from None
        note = ""
        if existing.provenance.get("build") != json.loads(json.dumps(build)):
            note = " (built with other parameters; pass --overwrite to rebuild)"
        print(f"{output} exists: kept{note}", file=sys.stderr)
        return output

    start = time.perf_counter()
    _, folder = parse_dataset_spec(dataset)
    records = load_split(dataset, "train")
    # Of the whole training split (as the model file's posenet.dataset_fingerprint), not of the
    # keyframes kept: the node compares the two.
    fingerprint = split_fingerprint(records, folder)
    model_fingerprint = metadata.get(KEY_DATASET_FINGERPRINT, "") if model is not None else ""
    if model_fingerprint and model_fingerprint != fingerprint:
        raise MapBuildError(
            f"the model file {model} was trained on another version of dataset "
            f"{dataset_name!r} (posenet.dataset_fingerprint {model_fingerprint[:12]}..., this "
            f"training split's is {fingerprint[:12]}...): build the map from the model's own "
            "training split"
        )
    if max_keyframes and len(records) > max_keyframes:
        index = np.unique(np.linspace(0, len(records) - 1, max_keyframes).round().astype(int))
        records = [records[i] for i in index]
    if len(records) < 2:
        raise MapBuildError(
            f"{dataset}: the training split has {len(records)} image(s); need >= 2"
        )
    names = [_relative_name(r.image_path, folder) for r in records]
    camera, camera_source = dataset_intrinsics(
        dataset, "train", override=intrinsics, error=MapBuildError
    )
    T = np.stack([pose_to_matrix(r.position_m, r.quat_wxyz) for r in records])

    # 1. features
    t0 = time.perf_counter()
    cache = output.with_name(output.name[: -len(".npz")] + FEATURES_SUFFIX)
    output.parent.mkdir(parents=True, exist_ok=True)
    features = _extract_all(records, names, feature, cache, overwrite=overwrite, progress=progress)
    if sum(len(x) for x, _ in features) == 0:
        raise MapBuildError(f"{dataset}: no local features in any training image")
    K = camera.K
    dist = np.asarray(camera.distortion, np.float64)
    undistorted = []
    for xy, _ in features:
        if len(xy) and dist.size and np.any(dist):
            xy = cv2.undistortPoints(xy.reshape(-1, 1, 2).astype(np.float64), K, dist, P=K)
            xy = xy.reshape(-1, 2)
        undistorted.append(np.asarray(xy, np.float64).reshape(-1, 2))
    t_features = time.perf_counter() - t0

    # 2. pairs and verified matches
    from tqdm import tqdm

    t0 = time.perf_counter()
    pairs = select_pairs(T, match.pairs_per_image, match.max_pair_angle_deg)
    verified: dict[tuple[int, int], np.ndarray] = {}
    for i, j in tqdm(pairs, desc="matching", unit="pair", disable=not progress):
        qi, ri, _ = match_descriptors(
            features[i][1], features[j][1], feature, ratio=match.ratio, mutual=match.mutual
        )
        if len(qi) < match.min_pair_matches:
            continue
        F = _fundamental(T[i], T[j], K)
        good = sampson_distance(F, undistorted[i][qi], undistorted[j][ri])
        keep = good < match.epipolar_threshold_px
        if keep.sum() >= match.min_pair_matches:
            verified[(i, j)] = np.stack([qi[keep], ri[keep]], axis=1)
    t_matching = time.perf_counter() - t0
    if not verified:
        raise MapBuildError(
            f"{dataset}: no image pair has {match.min_pair_matches} matches consistent with the "
            "poses (too little texture or overlap, or wrong intrinsics/poses)"
        )

    # 3. triangulation
    t0 = time.perf_counter()
    if progress:
        print(f"[posenet_train.map] triangulating {len(verified)} pairs", file=sys.stderr)
    reconstruction = _triangulate(
        names, folder, T, camera, undistorted, verified, match, num_threads, verbose
    )
    t_triangulation = time.perf_counter() - t0

    # 4. the map
    point_ids = sorted(reconstruction.points3D.keys())
    if not point_ids:
        raise MapBuildError(f"{dataset}: no 3-D point could be triangulated")
    index_of = {pid: k for k, pid in enumerate(point_ids)}
    points = reconstruction.points3D
    xyz = np.array([points[pid].xyz for pid in point_ids], dtype=np.float64)
    rgb = np.array([points[pid].color for pid in point_ids], dtype=np.uint8).reshape(-1, 3)
    error = np.array([points[pid].error for pid in point_ids], dtype=np.float32)
    offsets = [0]
    obs_xy, obs_desc, obs_pid = [], [], []
    for i in range(len(names)):
        image = reconstruction.image(i + 1)
        kp_index, pid = [], []
        for k, p2d in enumerate(image.points2D):
            if p2d.has_point3D():
                kp_index.append(k)
                pid.append(index_of[p2d.point3D_id])
        kp_index = np.asarray(kp_index, dtype=np.int64)
        obs_xy.append(features[i][0][kp_index])
        obs_desc.append(features[i][1][kp_index])
        obs_pid.append(np.asarray(pid, dtype=np.int32))
        offsets.append(offsets[-1] + len(kp_index))
    all_desc = np.concatenate(obs_desc).reshape(-1, feature.descriptor_bytes)
    all_pid = np.concatenate(obs_pid)
    if descriptors == "point":
        descriptor_table = point_descriptors(all_desc, all_pid, len(point_ids), feature)
        descriptor_index = all_pid.astype(np.int32)
    else:
        descriptor_table = all_desc
        descriptor_index = np.arange(len(all_pid), dtype=np.int32)
    site_map = SiteMap(
        scene_frame=scene_frame,
        dataset=dataset_name,
        dataset_fingerprint=fingerprint,
        feature=feature,
        camera=camera,
        keyframe_names=np.array(names),
        keyframe_T_world_camera=T,
        keyframe_obs_offset=np.asarray(offsets, dtype=np.int64),
        obs_xy=np.concatenate(obs_xy).astype(np.float32).reshape(-1, 2),
        descriptor=descriptor_table,
        obs_descriptor_index=descriptor_index,
        obs_point_id=all_pid,
        point_xyz_m=xyz,
        point_rgb=rgb,
        point_error_px=error,
        provenance={
            "builder": "posenet_train.map",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": str(dataset),
            "camera_source": camera_source,
            "model_sha256": model_sha256,
            "build": build,
            "statistics": {
                "pairs": len(pairs),
                "verified_pairs": len(verified),
                "keypoints_per_image": float(np.mean([len(x) for x, _ in features])),
                "observations_per_keyframe": float(np.mean(np.diff(offsets))),
                "mean_track_length": float(np.diff(offsets).sum() / max(len(point_ids), 1)),
                "mean_reprojection_error_px": float(error.mean()) if len(error) else 0.0,
                "seconds": {
                    "features": round(t_features, 2),
                    "matching": round(t_matching, 2),
                    "triangulation": round(t_triangulation, 2),
                    "total": round(time.perf_counter() - start, 2),
                },
            },
        },
    )
    try:
        write_map(output, site_map)
    except MapFileError as exc:
        raise MapBuildError(str(exc)) from None
    if progress:
        size_mb = output.stat().st_size / 1e6
        print(
            f"[posenet_train.map] {output}: {site_map.summary()}, {size_mb:.1f} MB, "
            f"{time.perf_counter() - start:.0f} s",
            file=sys.stderr,
        )
    return output


# ------------------------------------------------------------------------------------ the CLI


_Config = TypeVar("_Config", FeatureConfig, MatchOptions)


def _add_config_option(
    group: argparse._ArgumentGroup,
    flag: str,
    field: str,
    kind: Callable[[str], Any],
    defaults: FeatureConfig | MatchOptions,
    text: str,
) -> None:
    """An option that sets ``field`` of a FeatureConfig or MatchOptions (its ``dest``; see
    :func:`_config_from`), with that field's default, named at the end of the help."""
    default = getattr(defaults, field)
    group.add_argument(
        flag, dest=field, type=kind, default=default, help=f"{text} (default {default})"
    )


def _config_from(cls: type[_Config], args: argparse.Namespace, **values: Any) -> _Config:
    """A ``cls`` (FeatureConfig or MatchOptions) from the parsed options named like its fields,
    and ``values``."""
    names = {item.name for item in fields(cls)}
    return cls(**{name: value for name, value in vars(args).items() if name in names}, **values)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m posenet_train.map``."""
    defaults_f, defaults_m = FeatureConfig(), MatchOptions()
    p = argparse.ArgumentParser(
        prog="python -m posenet_train.map",
        description="Build the map file for pose refinement from a posed dataset's training "
        "split: local features triangulated from the known poses (pycolmap). An existing map "
        "is kept unless --overwrite.",
    )
    p.add_argument("--dataset", required=True, help="dataset folder or FORMAT:PATH")
    p.add_argument("--output", required=True, type=Path, help="map file to write (.npz)")
    p.add_argument(
        "--intrinsics",
        type=Path,
        help="JSON with width, height, fx, fy, cx, cy [, distortion_model, distortion] (OpenCV "
        "pixels; posenet_train.sfm's format); default: the dataset's own",
    )
    p.add_argument(
        "--scene-frame", help="the map's scene frame (default: the --model's, else 'map')"
    )
    p.add_argument(
        "--model",
        type=Path,
        help="the model file (.onnx) the map is for: checks its dataset, takes its scene frame,"
        " records its SHA-256",
    )
    g = p.add_argument_group("local features (the node extracts the same)")
    g.add_argument(
        "--feature", choices=FEATURE_TYPES, default=defaults_f.type, help="feature type"
    )
    g.add_argument(
        "--no-root-sift", action="store_true", help="match plain SIFT instead of RootSIFT"
    )
    for flag, field, kind, text in (
        ("--max-keypoints", "max_keypoints", int_at_least(8), "keypoints per image"),
        ("--sift-contrast-threshold", "sift_contrast_threshold", number(low=0.0, high=1.0),
         "SIFT contrast threshold; lower finds more keypoints on weak texture"),
        ("--orb-fast-threshold", "orb_fast_threshold", int_at_least(1), "ORB FAST threshold"),
        ("--clahe", "clahe_clip_limit", number(low=0.0, high=1000.0),
         "CLAHE clip limit before detection, 0: off; try 2 for white, weakly textured objects"),
        ("--max-image-side", "max_image_side", int_at_least(0),
         "shrink larger images for detection, 0: never"),
    ):  # fmt: skip
        _add_config_option(g, flag, field, kind, defaults_f, text)
    g = p.add_argument_group("pairs, matching, triangulation")
    for flag, kind, text in (
        ("--pairs-per-image", int_at_least(1), "nearest images (by pose) matched with each image"),
        ("--max-pair-angle-deg", number(low=0.1, high=180.0),
         "never pair images whose optical axes differ more"),
        ("--ratio", number(low=0.01, high=1.0), "Lowe's ratio test"),
        ("--epipolar-threshold-px", number(low=0.01, high=100.0),
         "largest Sampson distance to the poses' epipolar geometry"),
        ("--min-triangulation-angle-deg", number(low=0.01, high=90.0),
         "smallest triangulation angle of a point"),
        ("--max-reprojection-px", number(low=0.01, high=100.0),
         "largest reprojection error of an observation"),
    ):  # fmt: skip
        _add_config_option(g, flag, flag[2:].replace("-", "_"), kind, defaults_m, text)
    g.add_argument(
        "--descriptors",
        choices=DESCRIPTOR_MODES,
        default="point",
        help="point: one descriptor per 3-D point, its track's medoid (default; a few times"
        " smaller); observation: every keypoint's own",
    )
    g.add_argument(
        "--max-keyframes",
        type=int_at_least(0),
        default=0,
        help="use at most this many training images, evenly spread (default 0: all)",
    )
    g.add_argument("--threads", type=int_at_least(1), default=2, help="CPU threads (default 2)")
    p.add_argument("--overwrite", action="store_true", help="rebuild an existing map")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or messages")
    p.add_argument("--verbose", action="store_true", help="show pycolmap's own log")
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 error, 2 bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        feature = _config_from(
            FeatureConfig, args, type=args.feature, root_sift=not args.no_root_sift
        )
        match = _config_from(MatchOptions, args)
        path = main(
            args.dataset,
            args.output,
            intrinsics=args.intrinsics,
            scene_frame=args.scene_frame,
            model=args.model,
            feature=feature,
            match=match,
            descriptors=args.descriptors,
            max_keyframes=args.max_keyframes,
            num_threads=args.threads,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            verbose=args.verbose,
        )
    except (PoseNetTrainError, FeatureError) as exc:
        print(f"posenet_train.map: error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
