"""Structure from motion with pycolmap: SIFT features, matching, incremental mapping, statistics.

Camera model:

- **Known intrinsics** (a JSON file, or the bag's ``sensor_msgs/CameraInfo``): the camera is
  ``PINHOLE`` (or ``OPENCV`` / ``FULL_OPENCV`` / ``OPENCV_FISHEYE`` with the calibration's
  distortion), its parameters held fixed in bundle adjustment unless ``refine_intrinsics``. A
  calibrated camera removes the focal length from the unknowns, which makes the reconstruction
  better conditioned, above all for short or forward-moving sequences.
- **Unknown intrinsics**: ``SIMPLE_RADIAL`` (one focal length, principal point at the image
  centre, one radial term), estimated by bundle adjustment from COLMAP's default prior of
  1.2 x the larger image side: the least that fits an unknown consumer or robot camera without
  over-fitting a short sequence. Another COLMAP model can be named.

Intrinsics are given in OpenCV's pixel convention (pixel centres at integer coordinates, as in
ROS ``CameraInfo`` and OpenCV calibration); COLMAP puts pixel centres at half-integers, so the
principal point is shifted by +0.5 px on the way in.

One camera is shared by all frames (``CameraMode.SINGLE``): the frames come from one video or one
topic. Matching is sequential by default (each frame with its ``overlap`` successors, plus
quadratically spaced ones, COLMAP's video matcher), exhaustive as an option (all pairs: better
loop closure, quadratic cost).

Initialisation on forward motion. COLMAP starts a model from one pair of frames and by default
refuses pairs whose baseline lies within 18° of the optical axis (``init_max_forward_motion``
0.95) or whose median triangulation angle is below 16°. A robot driving forward makes nothing
but such pairs: on a rendered 60 m street drive the defaults either register two frames or start
from a spurious pair (e.g. one whose matches a single facade's homography explains) and drift to
3-5 % of the path. Forward pairs are well conditioned with calibrated intrinsics (the points
beside the road have large parallax), so the defaults here accept them
(``init_max_forward_motion`` 1.0) with a 4° angle, which COLMAP relaxes further (2°, 1°) when
nothing initialises. When the largest model still covers too few frames,
:func:`map_with_fallback` maps again with COLMAP's own initialisation (:data:`INIT_FALLBACK`,
16° and 0.95) and keeps the better result.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from posenet_core.checks import check_fields
from posenet_core.datasets import intrinsics as core_intrinsics
from posenet_core.geometry import matrix_to_quat, orthonormalize_rotation
from posenet_train.sfm.errors import SfmError

__all__ = [
    "CAMERA_MODELS",
    "INIT_FALLBACK",
    "MATCHERS",
    "CameraIntrinsics",
    "SfmOptions",
    "camera_poses",
    "extract_and_match",
    "map_with_fallback",
    "model_statistics",
    "run_mapping",
    "select_largest",
]

MATCHERS = ("sequential", "exhaustive")
#: COLMAP's own initialisation (init_min_tri_angle in degrees, init_max_forward_motion): the
#: second try of :func:`map_with_fallback` when the first leaves too few frames registered.
INIT_FALLBACK = (16.0, 0.95)
# Images per pycolmap.extract_features call: small enough for a live progress bar, large enough
# that the per-call set-up (thread pool, database transaction) stays negligible.
_EXTRACTION_CHUNK = 16
CAMERA_MODELS = (
    "SIMPLE_PINHOLE",
    "PINHOLE",
    "SIMPLE_RADIAL",
    "RADIAL",
    "OPENCV",
    "FULL_OPENCV",
    "OPENCV_FISHEYE",
)
# ROS CameraInfo distortion models -> (COLMAP model, number of distortion coefficients used)
_DISTORTION_MODELS = {
    "plumb_bob": ("OPENCV", 4),  # k1 k2 p1 p2 (k3 must be 0, else FULL_OPENCV)
    "rational_polynomial": ("FULL_OPENCV", 8),  # k1 k2 p1 p2 k3 k4 k5 k6
    "equidistant": ("OPENCV_FISHEYE", 4),  # k1 k2 k3 k4
}


@dataclass(frozen=True)
class CameraIntrinsics(core_intrinsics.CameraIntrinsics):
    """The project's camera (:class:`posenet_core.datasets.intrinsics.CameraIntrinsics`:
    width, height, fx, fy, cx, cy in OpenCV's pixel convention, the distortion coefficients in
    ROS / OpenCV order) plus the distortion model COLMAP needs, validated on construction.

    Attributes:
        distortion_model: ``"none"``, ``"plumb_bob"``, ``"rational_polynomial"`` or
            ``"equidistant"`` (ROS names); the latter is the one the node cannot undistort.
    """

    distortion_model: str = "none"

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SfmError(f"intrinsics: {name} must be a positive integer, got {value!r}")
        for name in ("fx", "fy", "cx", "cy"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SfmError(f"intrinsics: {name} must be a finite number, got {value!r}")
        if self.fx <= 0 or self.fy <= 0:
            raise SfmError(f"intrinsics: fx, fy must be > 0, got {self.fx}, {self.fy}")
        if self.distortion_model != "none" and self.distortion_model not in _DISTORTION_MODELS:
            raise SfmError(
                f"intrinsics: distortion model {self.distortion_model!r} is not supported;"
                f" supported: none, {', '.join(_DISTORTION_MODELS)}"
            )
        if not all(math.isfinite(float(v)) for v in self.distortion):
            raise SfmError(f"intrinsics: distortion must be finite, got {list(self.distortion)}")

    @classmethod
    def from_dict(cls, data: dict, where: str) -> CameraIntrinsics:
        """From ``{"width", "height", "fx", "fy", "cx", "cy"[, "distortion_model",
        "distortion"]}`` (the synthetic scene's intrinsics.json has this form)."""
        if not isinstance(data, dict):
            raise SfmError(f"{where}: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in ("width", "height", "fx", "fy", "cx", "cy") if k not in data]
        if missing:
            raise SfmError(f"{where}: missing key(s) {', '.join(missing)}")
        distortion = [float(v) for v in data.get("distortion") or []]
        model = str(data.get("distortion_model", "plumb_bob" if any(distortion) else "none"))
        if model == "none" and any(distortion):
            raise SfmError(f"{where}: non-zero distortion {distortion} with distortion_model none")
        try:
            return cls(
                width=data["width"],
                height=data["height"],
                fx=float(data["fx"]),
                fy=float(data["fy"]),
                cx=float(data["cx"]),
                cy=float(data["cy"]),
                distortion_model=model,
                distortion=tuple(distortion) if model != "none" else (),
            )
        except (TypeError, ValueError) as exc:
            raise SfmError(f"{where}: bad intrinsics value: {exc}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> CameraIntrinsics:
        """Read a JSON intrinsics file (see :meth:`from_dict`)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SfmError(f"intrinsics file not found: {path}") from None
        except (OSError, ValueError) as exc:
            raise SfmError(f"{path}: cannot read intrinsics JSON: {exc}") from exc
        return cls.from_dict(data, str(path))

    @classmethod
    def from_camera_info(cls, info: dict, where: str) -> CameraIntrinsics:
        """From ``sensor_msgs/CameraInfo`` fields (width, height, distortion_model, d, k)."""
        k = info["k"]
        if len(k) != 9 or k[0] <= 0 or k[4] <= 0:
            raise SfmError(f"{where}: CameraInfo K {k} is not a calibrated camera matrix")
        d = [float(v) for v in info["d"]]
        model = info["distortion_model"] or "plumb_bob"
        if not any(d):
            model, d = "none", []
        return cls(
            width=int(info["width"]),
            height=int(info["height"]),
            fx=float(k[0]),
            fy=float(k[4]),
            cx=float(k[2]),
            cy=float(k[5]),
            distortion_model=model,
            distortion=tuple(d),
        )

    def colmap_camera(self) -> tuple[str, list[float]]:
        """(COLMAP model name, parameters) with the principal point in COLMAP's convention."""
        base = [self.fx, self.fy, self.cx + 0.5, self.cy + 0.5]
        if self.distortion_model == "none":
            return "PINHOLE", base
        model, count = _DISTORTION_MODELS[self.distortion_model]
        coefficients = list(self.distortion) + [0.0] * 8
        if model == "OPENCV" and any(abs(v) > 0 for v in coefficients[4:8]):
            model, count = "FULL_OPENCV", 8
        return model, base + coefficients[:count]

    def to_json(self) -> dict:
        """JSON-ready form (OpenCV pixel convention)."""
        data = asdict(self)
        data["distortion"] = list(self.distortion)
        data["pixel_convention"] = "OpenCV (pixel centres at integer coordinates)"
        return data


@dataclass(frozen=True)
class SfmOptions:
    """Parameters of features, matching and mapping.

    Attributes:
        matcher: ``"sequential"`` (videos, bags) or ``"exhaustive"``.
        overlap: sequential matching: successors each frame is matched with.
        max_features: SIFT features per image.
        max_image_size: longer image side for feature extraction (larger images are scaled).
        camera_model: COLMAP model estimated when no intrinsics are given.
        refine_intrinsics: with given intrinsics, refine them in bundle adjustment too.
        min_model_size: smallest model (registered frames) the mapper keeps.
        init_min_tri_angle_deg: smallest median triangulation angle of the pair a model starts
            from (COLMAP: 16; halved twice by COLMAP when nothing initialises).
        init_max_forward_motion: largest share of the pair's baseline along the optical axis
            (``|t_z| / |t|``; COLMAP: 0.95, i.e. baselines within 18° of the axis are refused;
            1.0 accepts a robot driving straight ahead).
        num_threads: CPU threads for extraction, matching and mapping.
        seed: random seed (COLMAP's RANSAC and mapper), for repeatable runs.
    """

    matcher: str = "sequential"
    overlap: int = 10
    max_features: int = 4096
    max_image_size: int = 1600
    camera_model: str = "SIMPLE_RADIAL"
    refine_intrinsics: bool = False
    min_model_size: int = 5
    init_min_tri_angle_deg: float = 4.0
    init_max_forward_motion: float = 1.0
    num_threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.matcher not in MATCHERS:
            raise SfmError(f"matcher must be one of {', '.join(MATCHERS)}, got {self.matcher!r}")
        if self.camera_model not in CAMERA_MODELS:
            raise SfmError(
                f"camera_model must be one of {', '.join(CAMERA_MODELS)}, got"
                f" {self.camera_model!r}"
            )
        check_fields(
            self,
            SfmError,
            integers={
                "overlap": 1,
                "max_features": 64,
                "max_image_size": 64,
                "min_model_size": 3,
                "num_threads": 1,
                "seed": 0,
            },
            numbers={"init_min_tri_angle_deg": (0.1, 60.0), "init_max_forward_motion": (0.5, 1.0)},
        )


def _device():
    import pycolmap

    return pycolmap.Device.cpu


def extract_and_match(
    images_dir: str | Path,
    image_names: list[str],
    database_path: str | Path,
    options: SfmOptions,
    intrinsics: CameraIntrinsics | None = None,
    *,
    progress: bool = False,
) -> dict:
    """SIFT features of ``image_names`` and their matches, into a new COLMAP database.

    ``database_path`` must not exist. Features are extracted in chunks of images (one shared
    camera), so a progress bar can follow. Returns statistics (keypoints per image, matched and
    geometrically verified pairs). Raises SfmError when pycolmap fails or finds no features.
    """
    import pycolmap
    from tqdm import tqdm

    database_path = Path(database_path)
    if database_path.exists():
        raise SfmError(f"database {database_path} exists already")
    pycolmap.set_random_seed(options.seed)
    reader = pycolmap.ImageReaderOptions()
    if intrinsics is not None:
        model, params = intrinsics.colmap_camera()
        reader.camera_model = model
        reader.camera_params = ",".join(repr(float(v)) for v in params)
    else:
        reader.camera_model = options.camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = options.num_threads
    extraction.max_image_size = options.max_image_size
    extraction.sift.max_num_features = options.max_features
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = options.num_threads
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = options.seed
    names = list(image_names)
    bar = tqdm(total=len(names), desc="features", unit="frame", disable=not progress)
    try:
        for start in range(0, len(names), _EXTRACTION_CHUNK):
            chunk = names[start : start + _EXTRACTION_CHUNK]
            pycolmap.extract_features(
                database_path,
                images_dir,
                image_names=chunk,
                camera_mode=pycolmap.CameraMode.SINGLE,
                reader_options=reader,
                extraction_options=extraction,
                device=_device(),
            )
            if start == 0:
                # Later chunks must add to the camera of the first, not make their own.
                db = pycolmap.Database.open(database_path)
                try:
                    cameras = db.read_all_cameras()
                finally:
                    db.close()
                if len(cameras) != 1:
                    raise SfmError(f"expected one camera in {database_path}, got {len(cameras)}")
                reader.existing_camera_id = cameras[0].camera_id
            bar.update(len(chunk))
        bar.close()
        if progress:
            print(f"[posenet_train.sfm] {options.matcher} matching", file=sys.stderr, flush=True)
        if options.matcher == "sequential":
            pairing = pycolmap.SequentialPairingOptions()
            pairing.overlap = options.overlap
            pairing.quadratic_overlap = True
            pairing.num_threads = options.num_threads
            pycolmap.match_sequential(
                database_path,
                matching_options=matching,
                pairing_options=pairing,
                verification_options=verification,
                device=_device(),
            )
        else:
            pycolmap.match_exhaustive(
                database_path,
                matching_options=matching,
                verification_options=verification,
                device=_device(),
            )
    except SfmError:
        raise
    except Exception as exc:  # pycolmap raises RuntimeError / ValueError with COLMAP's text
        raise SfmError(f"pycolmap feature extraction or matching failed: {exc}") from exc
    finally:
        bar.close()
    db = pycolmap.Database.open(database_path)
    try:
        n_images = db.num_images()
        keypoints = db.num_keypoints()
        stats = {
            "images": int(n_images),
            "keypoints_per_image": float(keypoints / max(n_images, 1)),
            "matched_pairs": int(db.num_matched_image_pairs()),
            # Pairs with a geometrically verified relation (COLMAP keeps a row for every
            # matched pair, with zero inliers where verification failed).
            "verified_pairs": int(sum(1 for n in db.read_two_view_geometry_num_inliers()[1] if n)),
            "inlier_matches": int(db.num_inlier_matches()),
        }
    finally:
        db.close()
    if n_images != len(image_names):
        raise SfmError(
            f"pycolmap imported {n_images} of {len(image_names)} images into {database_path}"
        )
    if keypoints == 0:
        raise SfmError(
            "no SIFT features were found in any frame: the images are blank or too blurred"
        )
    return stats


def run_mapping(
    database_path: str | Path,
    images_dir: str | Path,
    models_dir: str | Path,
    options: SfmOptions,
    *,
    intrinsics_known: bool,
    total_frames: int,
    progress: bool = True,
) -> dict:
    """Incremental mapping; the models are written to ``models_dir/0``, ``/1``, ...

    Returns ``{model index: pycolmap.Reconstruction}`` (possibly empty when nothing could be
    initialised). Raises SfmError when pycolmap fails.
    """
    import pycolmap
    from tqdm import tqdm

    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    pipeline = pycolmap.IncrementalPipelineOptions()
    pipeline.num_threads = options.num_threads
    pipeline.random_seed = options.seed
    pipeline.min_model_size = options.min_model_size
    pipeline.multiple_models = True
    refine = options.refine_intrinsics or not intrinsics_known
    pipeline.ba_refine_focal_length = refine
    pipeline.ba_refine_extra_params = refine
    pipeline.ba_refine_principal_point = False
    pipeline.mapper.abs_pose_refine_focal_length = refine
    pipeline.mapper.abs_pose_refine_extra_params = refine
    pipeline.mapper.init_min_tri_angle = float(options.init_min_tri_angle_deg)
    pipeline.mapper.init_max_forward_motion = float(options.init_max_forward_motion)
    pycolmap.set_random_seed(options.seed)
    bar = tqdm(total=total_frames, desc="registered", unit="frame", disable=not progress)
    try:
        reconstructions = pycolmap.incremental_mapping(
            database_path,
            images_dir,
            models_dir,
            options=pipeline,
            # Counts registered frames: the initial pair, then one per registration.
            initial_image_pair_callback=lambda: bar.update(2),
            next_image_callback=lambda: bar.update(),
        )
    except Exception as exc:
        raise SfmError(f"pycolmap incremental mapping failed: {exc}") from exc
    finally:
        bar.close()
    return dict(reconstructions)


def map_with_fallback(
    database_path: str | Path,
    images_dir: str | Path,
    models_dir: str | Path,
    options: SfmOptions,
    *,
    intrinsics_known: bool,
    total_frames: int,
    min_registered: int,
    progress: bool = True,
) -> tuple[dict, list[dict]]:
    """:func:`run_mapping` with ``options``; when its largest model registers fewer than
    ``min_registered`` frames, once more with COLMAP's own initialisation (:data:`INIT_FALLBACK`,
    unless ``options`` already use it). The try whose largest model registers the most frames
    wins (the first on a tie) and is left in ``models_dir/0``, ``/1``, ...

    Returns ``(models, attempts)``: ``attempts`` lists, per try, its initialisation settings, the
    sizes of its models and whether it was kept. Raises SfmError when pycolmap fails.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    tries = [options]
    fallback_angle, fallback_forward = INIT_FALLBACK
    if (options.init_min_tri_angle_deg, options.init_max_forward_motion) != INIT_FALLBACK:
        tries.append(
            replace(
                options,
                init_min_tri_angle_deg=fallback_angle,
                init_max_forward_motion=fallback_forward,
            )
        )
    attempts: list[dict] = []
    best: tuple[int, int, Path] | None = None  # (registered, -try index, folder)
    for index, attempt in enumerate(tries):
        folder = models_dir / f"try{index}"
        shutil.rmtree(folder, ignore_errors=True)
        models = run_mapping(
            database_path,
            images_dir,
            folder,
            attempt,
            intrinsics_known=intrinsics_known,
            total_frames=total_frames,
            progress=progress,
        )
        sizes = sorted((int(m.num_reg_images()) for m in models.values()), reverse=True)
        registered = sizes[0] if sizes else 0
        attempts.append(
            {
                "init_min_tri_angle_deg": attempt.init_min_tri_angle_deg,
                "init_max_forward_motion": attempt.init_max_forward_motion,
                "model_sizes": sizes,
            }
        )
        if best is None or registered > best[0]:
            if best is not None:
                shutil.rmtree(best[2], ignore_errors=True)
            best = (registered, -index, folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
        if registered >= min_registered:
            break
        if progress and index + 1 < len(tries):
            print(
                f"[posenet_train.sfm] the largest model registers {registered} of {total_frames}"
                f" frames (need {min_registered}): mapping again with COLMAP's initialisation"
                f" ({fallback_angle:g}°, forward motion {fallback_forward:g})",
                file=sys.stderr,
                flush=True,
            )
    assert best is not None
    kept = -best[1]
    for index, entry in enumerate(attempts):
        entry["kept"] = index == kept
    for model in best[2].iterdir():
        os.replace(model, models_dir / model.name)
    shutil.rmtree(best[2])
    return read_models(models_dir), attempts


def read_models(models_dir: str | Path) -> dict:
    """The models written by :func:`run_mapping` (``{index: Reconstruction}``)."""
    import pycolmap

    models = {}
    for sub in sorted(Path(models_dir).iterdir()) if Path(models_dir).is_dir() else []:
        if sub.is_dir() and sub.name.isdigit():
            try:
                models[int(sub.name)] = pycolmap.Reconstruction(str(sub))
            except Exception as exc:
                raise SfmError(f"cannot read the COLMAP model {sub}: {exc}") from exc
    return models


def select_largest(models: dict) -> tuple[int, object, list[dict]]:
    """``(index, reconstruction, others)`` of the model with the most registered frames; others
    are summaries of the rest. Raises SfmError when there is no model."""
    if not models:
        raise SfmError(
            "structure from motion produced no model: no pair of frames could be initialised"
            " (too little overlap or texture, or too few frames)"
        )
    ranked = sorted(models.items(), key=lambda kv: (-kv[1].num_reg_images(), kv[0]))
    index, best = ranked[0]
    others = [
        {
            "model": int(i),
            "registered_frames": int(r.num_reg_images()),
            "points": int(r.num_points3D()),
            "frames": sorted(r.images[j].name for j in r.reg_image_ids()),
        }
        for i, r in ranked[1:]
    ]
    return index, best, others


def camera_poses(reconstruction) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{image name: (position_m, quat_wxyz)}`` (``T_world_camera``) of registered images."""
    poses = {}
    for image_id in reconstruction.reg_image_ids():
        image = reconstruction.images[image_id]
        pose = image.cam_from_world
        pose = pose() if callable(pose) else pose
        matrix = np.asarray(pose.matrix(), dtype=np.float64)
        r_camera_world = orthonormalize_rotation(matrix[:3, :3])
        poses[image.name] = (-r_camera_world.T @ matrix[:3, 3], matrix_to_quat(r_camera_world.T))
    return poses


def model_statistics(reconstruction, total_frames: int) -> dict:
    """Registered share, reprojection error, track lengths and the camera of a model."""
    lengths = np.array(
        [p.track.length() for p in reconstruction.points3D.values()], dtype=np.int64
    )
    registered = int(reconstruction.num_reg_images())
    cameras = []
    for camera_id, camera in reconstruction.cameras.items():
        cameras.append(
            {
                "camera_id": int(camera_id),
                "model": str(camera.model_name),
                "width": int(camera.width),
                "height": int(camera.height),
                "params_colmap": [float(v) for v in camera.params],
            }
        )
    histogram = {}
    if len(lengths):
        for bound in (2, 3, 5, 10, 20):
            histogram[f"<={bound}"] = int(np.sum(lengths <= bound))
        histogram[">20"] = int(np.sum(lengths > 20))
    return {
        "registered_frames": registered,
        "total_frames": int(total_frames),
        "registered_share": registered / max(total_frames, 1),
        "points": int(reconstruction.num_points3D()),
        "observations": int(reconstruction.compute_num_observations()),
        "mean_reprojection_error_px": float(reconstruction.compute_mean_reprojection_error()),
        "track_length_mean": float(lengths.mean()) if len(lengths) else 0.0,
        "track_length_median": float(np.median(lengths)) if len(lengths) else 0.0,
        "track_length_max": int(lengths.max()) if len(lengths) else 0,
        "track_length_histogram": histogram,
        "mean_observations_per_frame": float(
            reconstruction.compute_mean_observations_per_reg_image()
        ),
        "cameras": cameras,
    }


def write_model(reconstruction, folder: str | Path) -> None:
    """Write a model in COLMAP binary format into ``folder`` (created, replaced if present)."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    reconstruction.write(str(folder))
