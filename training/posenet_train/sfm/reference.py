"""Scale and frame of the SfM poses: none, a factor, a known distance, or the robot's odometry.

Modes (:data:`SCALE_MODES`):

- ``none`` — SfM units (arbitrary scale), SfM frame; a warning says so.
- ``factor`` — positions multiplied by a given factor; SfM frame.
- ``distance`` — the distance between the camera centres of two frames is known: the scale
  follows; the frame stays the SfM frame (origin and axes arbitrary, units metres).
- ``odometry`` — a rosbag2 ``nav_msgs/Odometry`` topic gives the pose of the robot's base
  (``child_frame_id``) in the odometry frame (``header.frame_id``); with the camera-to-base
  extrinsic ``T_base_camera`` (given, or looked up in the bag's TF) each image gets a reference
  camera pose ``T_odom_camera = T_odom_base(t) T_base_camera`` at its stamp (odometry
  interpolated, never extrapolated). A similarity (scale, rotation, translation) from the SfM
  camera centres to the reference centres is fitted robustly
  (:func:`~posenet_train.sfm.align.fit_similarity_robust`) and applied to every SfM pose:
  positions in metres in the odometry frame, orientations rotated into it.
- ``tf`` — the same with the reference camera poses looked up in the bag's TF tree
  (``/tf`` + ``/tf_static``) from a reference frame (e.g. ``map`` or ``odom``) to the camera
  frame.

The camera frame must be an optical frame (x right, y down, z forward; REP-103 ``*_optical``),
the convention of the SfM poses; by default it is the images' ``header.frame_id``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posenet_core.checks import check_fields
from posenet_core.geometry import matrix_to_quat, quat_to_matrix
from posenet_core.metrics import rotation_error_deg
from posenet_train.sfm.align import Similarity, check_spread, fit_similarity_robust
from posenet_train.sfm.errors import SfmError
from posenet_train.sfm.rosbag import Bag

__all__ = [
    "SCALE_MODES",
    "ReferenceOptions",
    "ReferencePoses",
    "align_to_reference",
    "parse_extrinsic",
    "reference_camera_poses",
    "require_overlap",
    "scale_from_known_distance",
]

SCALE_MODES = ("none", "factor", "distance", "odometry", "tf")
# Above this median disagreement between the aligned SfM orientations and the reference ones the
# extrinsic (or the camera frame) is probably wrong: worth a warning, not an error.
ROTATION_WARNING_DEG = 5.0
# The option each scale mode needs (and that selects the mode when ``mode`` is not given).
_MODE_FIELDS = {
    "factor": "scale_factor",
    "distance": "known_distance",
    "odometry": "odometry_topic",
    "tf": "reference_frame",
}


@dataclass(frozen=True)
class ReferenceOptions:
    """Everything that decides the scale and frame of the output poses.

    Attributes:
        mode: one of :data:`SCALE_MODES`; None (the default): the mode of the one of
            ``scale_factor``, ``known_distance``, ``odometry_topic`` and ``reference_frame``
            that is given (``none`` when none is; more than one is an error).
        scale_factor: mode ``factor``.
        known_distance: mode ``distance``: ``(frame_a, frame_b, metres)``; frames by file name
            (``frame_000012.png`` or ``frame_000012``) or source index (``"12"``).
        odometry_topic: mode ``odometry``.
        reference_frame: mode ``tf``: the frame the poses are expressed in (``map``, ``odom``).
        camera_frame: the camera's optical frame in TF (default: the images' header frame_id).
        camera_extrinsic: ``T_base_camera`` as ``(x, y, z, qw, qx, qy, qz)`` (metres; the
            camera-to-base rotation); mode ``odometry`` only (default: looked up in TF).
        max_gap_s: a reference gap longer than this around an image stamp leaves it unmatched.
        inlier_threshold_m: residual above which a frame is an outlier (default: 3 x the robust
            noise estimate, at least 1 cm).
        min_pairs: fewest frames with a reference pose needed for the fit.
    """

    mode: str | None = None
    scale_factor: float | None = None
    known_distance: tuple[str, str, float] | None = None
    odometry_topic: str | None = None
    reference_frame: str | None = None
    camera_frame: str | None = None
    camera_extrinsic: tuple[float, ...] | None = None
    max_gap_s: float = 0.5
    inlier_threshold_m: float | None = None
    min_pairs: int = 10

    def __post_init__(self) -> None:
        if self.mode is None:
            object.__setattr__(self, "mode", self._given_mode())
        for name in ("known_distance", "camera_extrinsic"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.mode not in SCALE_MODES:
            raise SfmError(
                f"scale mode must be one of {', '.join(SCALE_MODES)}, got {self.mode!r}"
            )
        needs = _MODE_FIELDS.get(self.mode)
        if needs is not None and getattr(self, needs) is None:
            raise SfmError(f"scale mode {self.mode!r} needs {needs}")
        if self.scale_factor is not None and not (
            math.isfinite(self.scale_factor) and self.scale_factor > 0
        ):
            raise SfmError(f"scale factor must be a positive number, got {self.scale_factor}")
        if self.known_distance is not None:
            if len(self.known_distance) != 3:
                raise SfmError(
                    "known_distance must be (frame_a, frame_b, metres), got"
                    f" {self.known_distance!r}"
                )
            distance = self.known_distance[2]
            if not (isinstance(distance, (int, float)) and math.isfinite(distance)) or (
                distance <= 0
            ):
                raise SfmError(f"the known distance must be a positive number, got {distance!r}")
        if self.camera_extrinsic is not None:
            parse_extrinsic(self.camera_extrinsic)
            if self.mode != "odometry":
                raise SfmError("camera_extrinsic (T_base_camera) applies to mode odometry only")
        if not (math.isfinite(self.max_gap_s) and self.max_gap_s > 0):
            raise SfmError(f"max_gap_s must be a positive number, got {self.max_gap_s}")
        if self.inlier_threshold_m is not None and not (
            math.isfinite(self.inlier_threshold_m) and self.inlier_threshold_m > 0
        ):
            raise SfmError(
                f"inlier_threshold_m must be a positive number, got {self.inlier_threshold_m}"
            )
        check_fields(self, SfmError, integers={"min_pairs": 4})

    def _given_mode(self) -> str:
        given = [name for name in _MODE_FIELDS.values() if getattr(self, name) is not None]
        if len(given) > 1:
            raise SfmError(
                f"give at most one of {', '.join(_MODE_FIELDS.values())}; got {', '.join(given)}"
            )
        return next((m for m, name in _MODE_FIELDS.items() if name in given), "none")


def parse_extrinsic(values: Sequence[float]) -> np.ndarray:
    """4x4 ``T_base_camera`` from ``(x, y, z, qw, qx, qy, qz)``; the quaternion is normalised
    when its norm is within 1 % of 1, else SfmError."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.shape != (7,) or not np.all(np.isfinite(v)):
        raise SfmError(
            f"camera extrinsic must be 7 finite numbers X Y Z QW QX QY QZ, got {list(values)}"
        )
    norm = float(np.linalg.norm(v[3:]))
    if abs(norm - 1.0) > 0.01:
        raise SfmError(
            f"camera extrinsic quaternion QW QX QY QZ = {v[3:].tolist()} has norm {norm:.4g};"
            " it must be a unit quaternion (wxyz order)"
        )
    t = np.eye(4)
    t[:3, :3] = quat_to_matrix(v[3:] / norm)
    t[:3, 3] = v[:3]
    return t


def resolve_frame(spec: str, names: Sequence[str], source_indices: Sequence[int]) -> str:
    """The frame file name that ``spec`` (file name, stem or source index) refers to."""
    spec = str(spec).strip()
    if spec in names:
        return spec
    stems = {Path(n).stem: n for n in names}
    if spec in stems:
        return stems[spec]
    if spec.isdigit():
        by_index = dict(zip((int(i) for i in source_indices), names, strict=True))
        if int(spec) in by_index:
            return by_index[int(spec)]
    raise SfmError(
        f"frame {spec!r} is not one of the selected frames (give a name such as {names[0]!r},"
        " its stem, or its source index; frames.csv lists them)"
    )


def scale_from_known_distance(
    positions: dict[str, np.ndarray], frame_a: str, frame_b: str, distance_m: float
) -> Similarity:
    """The scaling that makes the SfM distance between two registered frames ``distance_m``."""
    for name in (frame_a, frame_b):
        if name not in positions:
            raise SfmError(
                f"frame {name!r} of the known distance was not registered by structure from"
                " motion; choose two registered frames (poses.csv of a run without scale lists"
                " them)"
            )
    if frame_a == frame_b:
        raise SfmError("the known distance needs two different frames")
    sfm_distance = float(np.linalg.norm(positions[frame_a] - positions[frame_b]))
    if sfm_distance <= 1e-9:
        raise SfmError(
            f"frames {frame_a!r} and {frame_b!r} have the same SfM position: choose frames"
            " further apart"
        )
    return Similarity(float(distance_m) / sfm_distance, np.eye(3), np.zeros(3))


@dataclass
class ReferencePoses:
    """Reference camera poses at the frames' stamps.

    Attributes:
        frame_id: the frame they are expressed in.
        matrices: (N, 4, 4) ``T_frame_camera``; NaN where invalid.
        valid: (N,) bool: a reference pose exists at that stamp.
        span_s: (first, last) time the reference covers, or None when static.
        description: for the report (topic, frames, extrinsic source).
    """

    frame_id: str
    matrices: np.ndarray
    valid: np.ndarray
    span_s: tuple[float, float] | None
    description: dict


def reference_camera_poses(
    bag_path: str | Path,
    options: ReferenceOptions,
    stamps_s: np.ndarray,
    image_frame_id: str | None,
) -> ReferencePoses:
    """Reference camera poses from the bag's odometry or TF (modes ``odometry`` / ``tf``)."""
    stamps = np.asarray(stamps_s, dtype=np.float64)
    camera_frame = options.camera_frame or image_frame_id
    with Bag(bag_path) as bag:
        if options.mode == "odometry":
            assert options.odometry_topic is not None
            odometry = bag.read_odometry(options.odometry_topic)
            base_poses, valid = odometry.interpolate(stamps, options.max_gap_s)
            description = {
                "source": f"nav_msgs/Odometry on {options.odometry_topic}",
                "odometry_frame": odometry.frame,
                "base_frame": odometry.child_frame,
                "odometry_messages": int(len(odometry.stamps_s) + odometry.duplicates),
                "odometry_duplicate_stamps": int(odometry.duplicates),
            }
            if options.camera_extrinsic is not None:
                extrinsic = np.broadcast_to(parse_extrinsic(options.camera_extrinsic), (1, 4, 4))
                description["extrinsic_source"] = "given (T_base_camera)"
            else:
                if not camera_frame:
                    raise SfmError(
                        "no camera extrinsic: the images have no header frame_id to look up in"
                        " TF; give camera_extrinsic (T_base_camera: X Y Z QW QX QY QZ) or"
                        " camera_frame"
                    )
                if not odometry.child_frame:
                    raise SfmError(
                        f"the odometry on {options.odometry_topic} has an empty child_frame_id;"
                        " give camera_extrinsic (T_base_camera)"
                    )
                tf = bag.read_tf()
                try:
                    extrinsic, ext_valid = tf.lookup(
                        odometry.child_frame, camera_frame, stamps, max_gap_s=options.max_gap_s
                    )
                except SfmError as exc:
                    raise SfmError(
                        f"no camera extrinsic: {exc}; give camera_extrinsic (T_base_camera:"
                        " X Y Z QW QX QY QZ) or record /tf_static with the camera"
                    ) from None
                valid = valid & ext_valid
                description["extrinsic_source"] = (
                    f"TF {odometry.child_frame} -> {camera_frame} from the bag"
                )
                description["camera_frame"] = camera_frame
            with np.errstate(invalid="ignore"):
                matrices = base_poses @ extrinsic
            frame_id = odometry.frame or "odom"
            span = odometry.span()
        else:
            assert options.reference_frame is not None
            if not camera_frame:
                raise SfmError(
                    "the images have no header frame_id; give camera_frame for the TF lookup"
                )
            tf = bag.read_tf()
            if not tf.links:
                raise SfmError(f"rosbag2 {bag_path} has no /tf or /tf_static transforms")
            matrices, valid = tf.lookup(
                options.reference_frame, camera_frame, stamps, max_gap_s=options.max_gap_s
            )
            description = {
                "source": f"TF {options.reference_frame} -> {camera_frame}",
                "camera_frame": camera_frame,
            }
            frame_id = options.reference_frame.lstrip("/")
            span = tf.span(options.reference_frame, camera_frame)
    description["camera_frame"] = camera_frame
    return ReferencePoses(frame_id, matrices, valid, span, description)


def _span_text(span: tuple[float, float] | None) -> str:
    return "static" if span is None else f"{span[0]:.3f} .. {span[1]:.3f} s"


def require_overlap(
    reference: ReferencePoses, stamps_s: np.ndarray, options: ReferenceOptions
) -> int:
    """Number of frames with a reference pose; SfmError when it is below ``options.min_pairs``
    (the reference does not overlap the images in time, or has gaps there)."""
    stamps = np.asarray(stamps_s, dtype=np.float64)
    n_valid = int(reference.valid.sum())
    if n_valid < options.min_pairs:
        raise SfmError(
            f"the reference ({reference.description['source']}, covering"
            f" {_span_text(reference.span_s)}) does not overlap the images in time (stamps"
            f" {stamps.min():.3f} .. {stamps.max():.3f} s): only {n_valid} of {len(stamps)}"
            f" images have a reference pose within max_gap_s = {options.max_gap_s} s; at"
            f" least {options.min_pairs} are needed"
        )
    return n_valid


def align_to_reference(
    sfm_positions: np.ndarray,
    sfm_quats_wxyz: np.ndarray,
    stamps_s: np.ndarray,
    reference: ReferencePoses,
    options: ReferenceOptions,
    *,
    seed: int = 0,
) -> tuple[Similarity, dict, np.ndarray]:
    """Fit the similarity from SfM camera centres to the reference camera centres.

    Returns ``(transform, report, per-frame residual_m with NaN where no reference)``.

    Raises SfmError when fewer than ``options.min_pairs`` frames have a reference pose (the
    reference does not overlap the images in time, or has gaps), when the reference positions
    lie on a line, or when the fit finds no consistent inliers.
    """
    valid = reference.valid
    stamps = np.asarray(stamps_s, dtype=np.float64)
    n_valid = require_overlap(reference, stamps, options)
    ref_positions = reference.matrices[valid, :3, 3]
    check_spread(ref_positions, "the reference camera positions")
    fit = fit_similarity_robust(
        sfm_positions[valid],
        ref_positions,
        inlier_threshold_m=options.inlier_threshold_m,
        seed=seed,
    )
    transform = fit.transform
    aligned_quats = transform.apply_poses(sfm_positions[valid], sfm_quats_wxyz[valid])[1]
    reference_quats = matrix_to_quat(reference.matrices[valid, :3, :3])
    rotation_residuals = rotation_error_deg(aligned_quats, reference_quats)
    residuals = np.full(len(stamps), np.nan)
    residuals[valid] = fit.residuals_m
    inlier_mask = np.zeros(len(stamps), dtype=bool)
    inlier_mask[np.flatnonzero(valid)[fit.inliers]] = True
    report = {
        "reference_frame": reference.frame_id,
        **reference.description,
        "reference_span_s": list(reference.span_s) if reference.span_s else None,
        "image_span_s": [float(stamps.min()), float(stamps.max())],
        "frames_with_reference": n_valid,
        "frames_without_reference": int(len(stamps) - n_valid),
        **fit.summary(),
        "rotation_residual_median_deg": float(np.median(rotation_residuals)),
        "rotation_residual_max_deg": float(np.max(rotation_residuals)),
        "transform_sfm_to_reference": transform.to_json(),
        "inlier_frames_mask": inlier_mask.tolist(),
    }
    return transform, report, residuals
