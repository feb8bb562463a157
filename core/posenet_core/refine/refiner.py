"""Refine a PoseNet prior against the site's map: local features, 2D-3D matches, PnP-RANSAC.

Per frame (:meth:`Refiner.refine`):

1. the prior ``T_world_camera`` picks the map keyframes whose view overlaps it: viewing
   directions within ``max_view_angle_deg``, ranked by ``distance + depth * angle`` (a rotation
   by ``angle`` moves the view as much as a shift of ``depth * angle`` at the keyframe's median
   scene depth), and at least ``min_overlap`` of the keyframe's points projecting into the frame
   at the prior pose; the best ``num_keyframes`` are kept. No global descriptor is needed;
2. the frame's local features (the map's extractor, :mod:`posenet_core.features`) are
   matched (ratio test, mutual nearest neighbours) to the 3-D points those keyframes see, once
   each when the map has one descriptor per point (the builder's default), else to each
   keyframe's own descriptors; one 3-D point per frame keypoint and one keypoint per point are
   kept (the closest);
3. PnP-RANSAC (AP3P) on the 2D-3D matches, then LM on the inliers
   (:func:`posenet_core.refine.pnp.solve_pnp_ransac`);
4. accepted with at least ``min_inliers`` inliers and within ``max_prior_distance_m`` and
   ``max_prior_angle_deg`` of the prior; the covariance comes from the PnP itself
   (:func:`posenet_core.refine.pnp.pnp_covariance`), times ``covariance_scale``.

Intrinsics are the frame's own (``K`` from camera_info in the node); they may differ from the
mapping camera's, in size too. Distortion, if given, is removed from the keypoints first.

Thread safety: :meth:`Refiner.refine` may be called from several threads at once. The map arrays
are read-only and each thread gets its own OpenCV detector.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, fields

import numpy as np

from posenet_core.checks import check_fields
from posenet_core.features import (
    FeatureError,
    create_detector,
    extract_features,
    match_descriptors,
    normalized_descriptors,
)
from posenet_core.mapfile import SiteMap, read_map
from posenet_core.refine.errors import RefineError
from posenet_core.refine.pnp import camera_depth, pnp_covariance, project, solve_pnp_ransac

__all__ = [
    "FAILURE_REASONS",
    "RefinementResult",
    "Refiner",
    "RefinerConfig",
]

FAILURE_NO_TEXTURE = "no_texture"
FAILURE_NO_KEYFRAMES = "no_overlapping_keyframes"
FAILURE_TOO_FEW_MATCHES = "too_few_matches"
FAILURE_TOO_FEW_INLIERS = "too_few_inliers"
FAILURE_TOO_FAR_FROM_PRIOR = "too_far_from_prior"
FAILURE_DEGENERATE = "degenerate_geometry"
FAILURE_REASONS = (
    FAILURE_NO_TEXTURE,
    FAILURE_NO_KEYFRAMES,
    FAILURE_TOO_FEW_MATCHES,
    FAILURE_TOO_FEW_INLIERS,
    FAILURE_TOO_FAR_FROM_PRIOR,
    FAILURE_DEGENERATE,
)
# Points sampled per keyframe for the overlap test: enough for a share, cheap for 1000 keyframes.
_OVERLAP_SAMPLES = 64


@dataclass(frozen=True)
class RefinerConfig:
    """Parameters of the refinement (the node's ``refine.*`` parameters in phase B).

    Attributes:
        num_keyframes: map keyframes matched per frame.
        max_view_angle_deg: keyframes whose optical axis differs more from the prior's are not
            considered.
        min_overlap: share of a keyframe's (sampled) points that must project into the frame at
            the prior pose.
        ratio: Lowe's ratio test threshold (1 disables it).
        mutual: keep only mutual nearest neighbours.
        min_keypoints: fewer keypoints in the frame is "no texture".
        min_matches: fewer 2D-3D matches is "too few matches" (PnP is not tried).
        ransac_threshold_px: inlier threshold, pixels of the frame.
        ransac_iterations, ransac_confidence: RANSAC's budget.
        min_inliers: fewer inliers is "too few inliers".
        max_prior_distance_m, max_prior_angle_deg: a refined pose further from the prior is
            refused ("too far from prior"); 0 disables that check.
        covariance_scale: factor on the PnP covariance. ``sigma^2 (J^T J)^-1`` alone came out
            too small by a variance factor of 1.7-3.1 (median Mahalanobis distance) on
            middlebury_dino and on the rendered room (BENCHMARKS.md, "Refinement"): map points
            carry errors of their own and RANSAC trims the residuals. The default 3 makes it
            about right on average; measure your site's with training/benchmarks/bench_refine.py.
        min_sigma_px: floor of the residual sigma in the covariance (0: none).
        seed: RANSAC's random seed (repeatable results).
    """

    num_keyframes: int = 5
    max_view_angle_deg: float = 60.0
    min_overlap: float = 0.1
    ratio: float = 0.8
    mutual: bool = True
    min_keypoints: int = 20
    min_matches: int = 12
    ransac_threshold_px: float = 4.0
    ransac_iterations: int = 1000
    ransac_confidence: float = 0.9999
    min_inliers: int = 20
    max_prior_distance_m: float = 1.0
    max_prior_angle_deg: float = 20.0
    covariance_scale: float = 3.0
    min_sigma_px: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(
            self,
            RefineError,
            integers={
                "num_keyframes": 1,
                "min_keypoints": 0,
                "min_matches": 4,
                "ransac_iterations": 1,
                "min_inliers": 4,
                "seed": 0,
            },
            numbers={
                "max_view_angle_deg": (0.0, 180.0),
                "min_overlap": (0.0, 1.0),
                "ratio": (0.0, 1.0),
                "ransac_threshold_px": (0.0, 1000.0),
                "ransac_confidence": (0.0, 1.0),
                "max_prior_distance_m": (0.0, math.inf),
                "max_prior_angle_deg": (0.0, 180.0),
                "covariance_scale": (0.0, math.inf),
                "min_sigma_px": (0.0, math.inf),
            },
            open_low=(
                "max_view_angle_deg",
                "ratio",
                "ransac_threshold_px",
                "ransac_confidence",
                "covariance_scale",
            ),
            prefix="refine ",
        )
        if not isinstance(self.mutual, bool):
            raise RefineError(f"refine mutual must be true or false, got {self.mutual!r}")

    @classmethod
    def from_dict(cls, data: dict) -> RefinerConfig:
        """From a mapping of parameter names (unknown names are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RefineError(
                f"unknown refine parameter(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**data)


@dataclass(frozen=True, eq=False)
class RefinementResult:
    """What :meth:`Refiner.refine` found for one frame.

    Attributes:
        success: True when the pose was refined and accepted.
        T_world_camera: (4, 4) refined pose (None unless success).
        covariance: (6, 6) its covariance, project convention (None unless success).
        failure: "" on success, else one of :data:`FAILURE_REASONS`.
        message: one human-readable line on the failure (or the success).
        num_keypoints: local features found in the frame.
        num_matches: 2D-3D matches given to PnP.
        num_inliers: PnP inliers (0 when PnP was not run or failed).
        keyframes: indices of the map keyframes used.
        sigma_px: residual sigma of the inliers, pixels (nan without a pose).
        prior_distance_m, prior_angle_deg: refined pose vs prior (nan without a pose).
        time_s: wall time of the whole call; timings: seconds per stage (extract, select,
            match, pnp).
    """

    success: bool
    failure: str
    message: str
    T_world_camera: np.ndarray | None = None
    covariance: np.ndarray | None = None
    num_keypoints: int = 0
    num_matches: int = 0
    num_inliers: int = 0
    keyframes: tuple[int, ...] = ()
    sigma_px: float = float("nan")
    prior_distance_m: float = float("nan")
    prior_angle_deg: float = float("nan")
    time_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def _rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    cos = (np.trace(R_a.T @ R_b) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _check_pose(T: object, what: str) -> np.ndarray:
    try:
        array = np.asarray(T, dtype=np.float64)
    except (TypeError, ValueError):
        raise RefineError(f"{what} is not numeric") from None
    if array.shape != (4, 4) or not np.all(np.isfinite(array)):
        raise RefineError(f"{what} must be a finite 4x4 matrix, got shape {array.shape}")
    R = array[:3, :3]
    if np.abs(R.T @ R - np.eye(3)).max() > 1e-3 or np.linalg.det(R) <= 0:
        raise RefineError(f"{what} has a rotation block that is not a rotation")
    return array


def _check_K(K: object) -> np.ndarray:  # noqa: N802
    try:
        array = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise RefineError("K is not numeric") from None
    if array.shape != (3, 3) or not np.all(np.isfinite(array)):
        raise RefineError(f"K must be a finite 3x3 camera matrix, got shape {array.shape}")
    if array[0, 0] <= 0 or array[1, 1] <= 0 or np.abs(array[2] - [0.0, 0.0, 1.0]).max() > 1e-9:
        raise RefineError(
            "K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, "
            f"got {array.tolist()}"
        )
    return array


class Refiner:
    """Refines PoseNet priors against one site map. Build once, call :meth:`refine` per frame.

    Args:
        site_map: a :class:`posenet_core.mapfile.SiteMap` (or use :meth:`from_file`).
        config: parameters (:class:`RefinerConfig`).
    """

    def __init__(self, site_map: SiteMap, config: RefinerConfig | None = None) -> None:
        self.map = site_map
        self.config = config if config is not None else RefinerConfig()
        self._local = threading.local()
        T = site_map.keyframe_T_world_camera
        self._centres = T[:, :3, 3].copy()
        self._axes = T[:, :3, 2].copy()
        offsets = site_map.keyframe_obs_offset
        rng = np.random.default_rng(0)
        depths = np.empty(site_map.num_keyframes)
        samples = []
        for i in range(site_map.num_keyframes):
            s = site_map.keyframe_slice(i)
            pts = site_map.point_xyz_m[site_map.obs_point_id[s]]
            if len(pts):
                depth = camera_depth(pts, T[i])
                depths[i] = float(np.median(depth))
                count = min(_OVERLAP_SAMPLES, len(pts))
                samples.append(pts[rng.choice(len(pts), count, replace=False)])
            else:
                depths[i] = 0.0
                samples.append(np.zeros((0, 3)))
        self._median_depth = np.maximum(depths, 0.0)
        # A map with one descriptor per 3-D point (the builder's default) is matched once against
        # the union of the chosen keyframes' points: a point seen by all of them is compared once,
        # and the ratio test never meets the same point twice.
        self._per_point = len(site_map.descriptor) == site_map.num_points and np.array_equal(
            site_map.obs_descriptor_index, site_map.obs_point_id
        )
        self._samples = samples
        self._offsets = offsets

    @classmethod
    def from_file(cls, path, config: RefinerConfig | None = None) -> Refiner:
        """Read the map file (:func:`posenet_core.mapfile.read_map`; raises MapFileError)."""
        return cls(read_map(path), config)

    def _detector(self):
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = create_detector(self.map.feature)
            self._local.detector = detector
        return detector

    def select_keyframes(
        self, prior_T_world_camera: np.ndarray, K: np.ndarray, image_size: tuple[int, int]
    ) -> list[int]:
        """Indices of the map keyframes that overlap the prior's view, best first.

        ``image_size`` is (width, height) of the frame.
        """
        cfg = self.config
        prior = _check_pose(prior_T_world_camera, "prior T_world_camera")
        axis = prior[:3, 2]
        cos = np.clip(self._axes @ axis, -1.0, 1.0)
        angle = np.arccos(cos)
        distance = np.linalg.norm(self._centres - prior[:3, 3], axis=1)
        cost = distance + self._median_depth * angle
        candidates = np.flatnonzero(angle <= math.radians(cfg.max_view_angle_deg))
        candidates = candidates[np.argsort(cost[candidates], kind="stable")]
        width, height = image_size
        chosen: list[int] = []
        for i in candidates:
            pts = self._samples[i]
            if len(pts) == 0:
                continue
            if cfg.min_overlap > 0:
                in_front = camera_depth(pts, prior) > 0
                uv = project(pts[in_front], prior, K)
                inside = (
                    (uv[:, 0] >= -0.5)
                    & (uv[:, 0] <= width - 0.5)
                    & (uv[:, 1] >= -0.5)
                    & (uv[:, 1] <= height - 0.5)
                )
                if inside.sum() < cfg.min_overlap * len(pts):
                    continue
            chosen.append(int(i))
            if len(chosen) == cfg.num_keyframes:
                break
        return chosen

    def refine(
        self,
        rgb_HWC: np.ndarray,  # noqa: N803 - layout in the name, the project's style
        K: np.ndarray,  # noqa: N803
        prior_T_world_camera: np.ndarray,
        *,
        dist_coeffs: np.ndarray | None = None,
    ) -> RefinementResult:
        """Refine one frame's prior pose. Never raises for a frame that cannot be refined.

        Args:
            rgb_HWC: the frame, uint8 RGB (H, W, 3) (grey (H, W) and RGBA also accepted).
            K: (3, 3) the frame's camera matrix (OpenCV pixel convention).
            prior_T_world_camera: (4, 4) the PoseNet prior.
            dist_coeffs: the frame's distortion (OpenCV order), or None.

        Returns a :class:`RefinementResult`; raises :class:`RefineError` only for arguments of
        the wrong kind (not an image, K not a camera matrix, prior not a pose).
        """
        start = time.perf_counter()
        cfg = self.config
        K = _check_K(K)
        prior = _check_pose(prior_T_world_camera, "prior T_world_camera")
        image = np.asarray(rgb_HWC)
        timings: dict[str, float] = {}

        def result(success: bool, failure: str, message: str, **kwargs) -> RefinementResult:
            return RefinementResult(
                success=success,
                failure=failure,
                message=message,
                time_s=time.perf_counter() - start,
                timings=timings,
                **kwargs,
            )

        try:
            features = extract_features(image, self.map.feature, self._detector())
        except FeatureError as exc:
            raise RefineError(f"frame: {exc}") from None
        timings["extract"] = time.perf_counter() - start
        if len(features) < max(cfg.min_keypoints, 4):
            return result(
                False,
                FAILURE_NO_TEXTURE,
                f"{len(features)} keypoints in the frame (< {cfg.min_keypoints}): no texture",
                num_keypoints=len(features),
            )
        xy = features.xy.astype(np.float64)
        if dist_coeffs is not None and np.any(np.asarray(dist_coeffs, np.float64) != 0):
            import cv2

            xy = cv2.undistortPoints(
                xy.reshape(-1, 1, 2), K, np.asarray(dist_coeffs, np.float64), P=K
            ).reshape(-1, 2)

        t = time.perf_counter()
        height, width = image.shape[:2]
        keyframes = self.select_keyframes(prior, K, (width, height))
        timings["select"] = time.perf_counter() - t
        if not keyframes:
            return result(
                False,
                FAILURE_NO_KEYFRAMES,
                "no map keyframe overlaps the prior's view "
                f"(within {cfg.max_view_angle_deg:g} deg, >= {cfg.min_overlap:.0%} of its points "
                "in the frame)",
                num_keypoints=len(features),
            )

        t = time.perf_counter()
        query_norm = (
            None
            if self.map.feature.binary
            else normalized_descriptors(features.descriptors, self.map.feature)
        )
        q_all, p_all, d_all = [], [], []
        if self._per_point:
            points = np.unique(
                np.concatenate(
                    [self.map.obs_point_id[self.map.keyframe_slice(i)] for i in keyframes]
                )
            )
            qi, ri, dist = match_descriptors(
                features.descriptors,
                self.map.descriptor[points],
                self.map.feature,
                ratio=cfg.ratio,
                mutual=cfg.mutual,
                query_normalized=query_norm,
            )
            q_all.append(qi)
            p_all.append(points[ri].astype(np.int64))
            d_all.append(dist)
        else:
            for i in keyframes:
                s = self.map.keyframe_slice(i)
                qi, ri, dist = match_descriptors(
                    features.descriptors,
                    self.map.keyframe_descriptors(i),
                    self.map.feature,
                    ratio=cfg.ratio,
                    mutual=cfg.mutual,
                    query_normalized=query_norm,
                )
                q_all.append(qi)
                p_all.append(self.map.obs_point_id[s][ri].astype(np.int64))
                d_all.append(dist)
        q = np.concatenate(q_all)
        p = np.concatenate(p_all)
        d = np.concatenate(d_all)
        # One 3-D point per keypoint and one keypoint per point: the closest descriptor wins.
        order = np.argsort(d, kind="stable")
        q, p = q[order], p[order]
        _, first_q = np.unique(q, return_index=True)
        keep = np.zeros(len(q), bool)
        keep[first_q] = True
        q, p = q[keep], p[keep]
        _, first_p = np.unique(p, return_index=True)
        q, p = q[first_p], p[first_p]
        timings["match"] = time.perf_counter() - t
        common = {
            "num_keypoints": len(features),
            "num_matches": len(q),
            "keyframes": tuple(keyframes),
        }
        if len(q) < cfg.min_matches:
            return result(
                False,
                FAILURE_TOO_FEW_MATCHES,
                f"{len(q)} 2D-3D matches with {len(keyframes)} keyframes (< {cfg.min_matches})",
                **common,
            )

        t = time.perf_counter()
        points = self.map.point_xyz_m[p]
        pixels = xy[q]
        solved = solve_pnp_ransac(
            points,
            pixels,
            K,
            threshold_px=cfg.ransac_threshold_px,
            iterations=cfg.ransac_iterations,
            confidence=cfg.ransac_confidence,
            seed=cfg.seed,
        )
        if solved is None:
            timings["pnp"] = time.perf_counter() - t
            return result(
                False,
                FAILURE_TOO_FEW_INLIERS,
                f"PnP-RANSAC found no pose from {len(q)} matches",
                **common,
            )
        T, inliers = solved
        n_in = int(inliers.sum())
        if n_in < cfg.min_inliers:
            timings["pnp"] = time.perf_counter() - t
            return result(
                False,
                FAILURE_TOO_FEW_INLIERS,
                f"{n_in} PnP inliers of {len(q)} matches (< {cfg.min_inliers})",
                num_inliers=n_in,
                **common,
            )
        covariance, sigma = pnp_covariance(
            points[inliers], pixels[inliers], T, K, min_sigma_px=cfg.min_sigma_px
        )
        timings["pnp"] = time.perf_counter() - t
        distance = float(np.linalg.norm(T[:3, 3] - prior[:3, 3]))
        angle = _rotation_angle_deg(T[:3, :3], prior[:3, :3])
        geometry = {
            "num_inliers": n_in,
            "sigma_px": sigma,
            "prior_distance_m": distance,
            "prior_angle_deg": angle,
        }
        if not np.all(np.isfinite(covariance)):
            return result(
                False,
                FAILURE_DEGENERATE,
                f"the {n_in} inliers do not constrain the pose (singular covariance)",
                **common,
                **geometry,
            )
        too_far = (cfg.max_prior_distance_m > 0 and distance > cfg.max_prior_distance_m) or (
            cfg.max_prior_angle_deg > 0 and angle > cfg.max_prior_angle_deg
        )
        if too_far:
            return result(
                False,
                FAILURE_TOO_FAR_FROM_PRIOR,
                f"refined pose is {distance:.3f} m / {angle:.1f} deg from the prior (allowed "
                f"{cfg.max_prior_distance_m:g} m / {cfg.max_prior_angle_deg:g} deg)",
                **common,
                **geometry,
            )
        return result(
            True,
            "",
            f"refined with {n_in} inliers of {len(q)} matches, sigma {sigma:.2f} px",
            T_world_camera=T,
            covariance=covariance * cfg.covariance_scale,
            **common,
            **geometry,
        )
