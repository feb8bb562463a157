"""The labelling pipeline: frames -> features, matches -> mapping -> scale and frame -> dataset.

Each step is an importable function (:func:`posenet_train.sfm.frames.extract_frames`,
:func:`posenet_train.sfm.reconstruct.extract_and_match`,
:func:`posenet_train.sfm.reconstruct.run_mapping`, :func:`compute_transform`,
:func:`split_by_time_blocks`, :func:`export_dataset`); :func:`main` runs them in order and keeps
each step's result in the output folder with a marker holding the step's parameters, so a second
run reuses what is there (a step whose parameters changed is an error unless ``overwrite`` or
``redo_from`` says to recompute it).

Output folder (a Cambridge dataset, and a COLMAP dataset, for ``posenet_train.datasets``)::

    images/frame_000123.png      the selected frames
    frames.csv                   name, source index, timestamp, sharpness of every frame
    dataset_train.txt            Cambridge format, registered frames, poses in the output frame
    dataset_test.txt             the test split: whole blocks of consecutive frames
    train_list.txt, test_list.txt  the same split for the COLMAP loader
    sparse/0/                    the COLMAP model transformed into the output frame
    poses.csv                    every registered frame: time, split, pose, reference residual
    sfm_report.json              frames, SfM statistics, scale/alignment, split, timings
    trajectory.png               top and side views of the trajectory (and the reference)
    sfm/database.db, sfm/models/N  pycolmap's database and raw models (SfM frame and units)
    sfm/steps/*.json             step markers
    sfm_complete.json            written last: the folder is complete

A run that fails leaves no ``sfm_complete.json`` and no Cambridge split files; finished steps
stay (with their markers) and are reused by the next run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from posenet_core.datasets import PoseRecord, write_cambridge
from posenet_train.sfm.align import Similarity
from posenet_train.sfm.errors import SfmError
from posenet_train.sfm.frames import (
    FRAMES_CSV,
    FrameInfo,
    FrameSelection,
    extract_frames,
    open_source,
    read_frames_csv,
    write_frames_csv,
)
from posenet_train.sfm.reconstruct import (
    CameraIntrinsics,
    SfmOptions,
    camera_poses,
    extract_and_match,
    map_with_fallback,
    model_statistics,
    read_models,
    select_largest,
    write_model,
)
from posenet_train.sfm.reference import (
    ROTATION_WARNING_DEG,
    ReferenceOptions,
    align_to_reference,
    reference_camera_poses,
    require_overlap,
    resolve_frame,
    scale_from_known_distance,
)
from posenet_train.sfm.rosbag import Bag

__all__ = [
    "COMPLETE_MARKER",
    "DEFAULT_SELECTION",
    "FORMAT_VERSION",
    "REPORT",
    "STEPS",
    "SfmWarning",
    "compute_transform",
    "export_dataset",
    "main",
    "split_by_time_blocks",
]

FORMAT_VERSION = 1
COMPLETE_MARKER = "sfm_complete.json"
IN_PROGRESS_MARKER = "sfm_in_progress"
REPORT = "sfm_report.json"
STEPS = ("frames", "features", "mapping", "export")
# The frame selection of :func:`main` by default: every frame, at most 300 of them.
DEFAULT_SELECTION = FrameSelection(max_frames=300)
_EXPORT_FILES = (
    "dataset_test.txt",
    "dataset_train.txt",
    "train_list.txt",
    "test_list.txt",
    "poses.csv",
    REPORT,
    "trajectory.png",
)


# Below this ratio of the known distance to the trajectory's bounding-box diagonal the scale is
# worth a warning: a 1 cm SfM error on a 10 cm baseline is a 10 % scale error everywhere.
DISTANCE_WARNING_SHARE = 0.25


class SfmWarning(UserWarning):
    """A result that is usable but probably not what was wanted (e.g. SfM units)."""


# --------------------------------------------------------------------------------------------
# Split


def split_by_time_blocks(
    count: int, *, test_fraction: float = 0.2, blocks: int = 10, guard_frames: int = 1
) -> tuple[list[int], list[int], list[int]]:
    """Split ``count`` frames in time order into train and test by contiguous blocks.

    The sequence is cut into ``blocks`` blocks of (nearly) equal length (fewer when there are
    fewer than 2 frames per block). With ``k = round(1 / test_fraction)``, blocks
    ``k // 2, k // 2 + k, ...`` are test blocks: whole stretches of the path, spread over it,
    each with training data on both sides. Training frames within ``guard_frames`` of a test
    block are dropped, so no test frame has a near-duplicate neighbour in the training set.

    Returns ``(train indices, test indices, dropped indices)``. Raises SfmError for bad
    parameters or when either split would be empty.
    """
    if not (math.isfinite(test_fraction) and 0.0 < test_fraction < 1.0):
        raise SfmError(f"test_fraction must be in (0, 1), got {test_fraction}")
    for name, value, minimum in (("blocks", blocks, 2), ("guard_frames", guard_frames, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SfmError(f"{name} must be an integer >= {minimum}, got {value!r}")
    n_blocks = max(2, min(blocks, count // 2))
    if count < 3:
        raise SfmError(f"need at least 3 registered frames to split, got {count}")
    k = max(1, round(1.0 / test_fraction))
    test_blocks = set(range(k // 2, n_blocks, k)) or {n_blocks // 2}
    if len(test_blocks) == n_blocks:
        test_blocks = {n_blocks // 2}
    edges = [round(b * count / n_blocks) for b in range(n_blocks + 1)]
    is_test = np.zeros(count, dtype=bool)
    for b in test_blocks:
        is_test[edges[b] : edges[b + 1]] = True
    test = [i for i in range(count) if is_test[i]]
    near_test = np.zeros(count, dtype=bool)
    for i in test:
        near_test[max(0, i - guard_frames) : i + guard_frames + 1] = True
    train = [i for i in range(count) if not is_test[i] and not near_test[i]]
    dropped = [i for i in range(count) if not is_test[i] and near_test[i]]
    if not train or not test:
        raise SfmError(
            f"cannot split {count} frames into train and test (test_fraction={test_fraction},"
            f" blocks={blocks}, guard_frames={guard_frames}): a split is empty"
        )
    return train, test, dropped


# --------------------------------------------------------------------------------------------
# Scale and frame


def compute_transform(
    options: ReferenceOptions,
    names: list[str],
    source_indices: list[int],
    stamps_s: list[float | None],
    positions: np.ndarray,
    quats_wxyz: np.ndarray,
    *,
    input_path: Path,
    input_kind: str,
    image_frame_id: str | None,
    seed: int = 0,
) -> tuple[Similarity, str, dict, np.ndarray, np.ndarray | None]:
    """The transform from SfM to output coordinates for ``options.mode``.

    Args:
        names, source_indices, stamps_s: the registered frames, in time order.
        positions, quats_wxyz: their SfM ``T_world_camera`` poses.

    Returns ``(transform, output frame id, report, per-frame reference residual_m (NaN where
    none), reference positions (N, 3) or None)``.
    """
    n = len(names)
    residuals = np.full(n, np.nan)
    if options.mode == "none":
        return Similarity.identity(), "sfm", {"mode": "none", "units": "sfm"}, residuals, None
    if options.mode == "factor":
        assert options.scale_factor is not None
        transform = Similarity(float(options.scale_factor), np.eye(3), np.zeros(3))
        report = {"mode": "factor", "units": "m", "scale": transform.scale}
        return transform, "sfm", report, residuals, None
    if options.mode == "distance":
        assert options.known_distance is not None
        frame_a = resolve_frame(options.known_distance[0], names, source_indices)
        frame_b = resolve_frame(options.known_distance[1], names, source_indices)
        transform = scale_from_known_distance(
            dict(zip(names, positions, strict=True)),
            frame_a,
            frame_b,
            float(options.known_distance[2]),
        )
        extent = float(np.linalg.norm(positions.max(axis=0) - positions.min(axis=0)))
        share = float(
            np.linalg.norm(positions[names.index(frame_a)] - positions[names.index(frame_b)])
            / max(extent, 1e-12)
        )
        report = {
            "mode": "distance",
            "units": "m",
            "frames": [frame_a, frame_b],
            "distance_m": float(options.known_distance[2]),
            "distance_share_of_extent": share,
            "scale": transform.scale,
            "note": "positions are in the SfM frame (arbitrary origin and axes), in metres",
        }
        return transform, "sfm", report, residuals, None
    if input_kind != "rosbag":
        raise SfmError(
            f"scale mode {options.mode!r} needs odometry or TF from a rosbag2, but the input is"
            f" a {input_kind}"
        )
    if any(s is None for s in stamps_s):
        raise SfmError("the frames have no timestamps; odometry alignment needs them")
    stamps = np.array(stamps_s, dtype=np.float64)
    reference = reference_camera_poses(input_path, options, stamps, image_frame_id)
    transform, report, residuals = align_to_reference(
        positions, quats_wxyz, stamps, reference, options, seed=seed
    )
    report = {"mode": options.mode, "units": "m", **report}
    ref_positions = np.where(reference.valid[:, None], reference.matrices[:, :3, 3], np.nan)
    return transform, reference.frame_id, report, residuals, ref_positions


# --------------------------------------------------------------------------------------------
# Markers, fingerprints, folder handling


def _json_normal(value):
    return json.loads(json.dumps(value, default=str))


def _input_fingerprint(path: Path) -> dict:
    path = path.absolute()
    if path.is_file():
        st = path.stat()
        return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    files = []
    for p in sorted(path.iterdir()):
        if p.is_file():
            st = p.stat()
            files.append([p.name, st.st_size, st.st_mtime_ns])
    return {"path": str(path), "files": files}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_json_normal(data), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def _is_ours(folder: Path) -> bool:
    return any(
        (folder / name).exists() for name in (COMPLETE_MARKER, IN_PROGRESS_MARKER, "sfm/steps")
    )


def _prepare_output(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise SfmError(f"output {folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not _is_ours(folder):
        names = sorted(p.name for p in folder.iterdir())
        raise SfmError(
            f"output folder {folder} is not empty and was not written by posenet_train.sfm (it"
            f" holds {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); choose a new"
            " or empty folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    if overwrite:
        _remove_from(folder, "frames")


def _step_outputs(folder: Path, step: str) -> list[Path]:
    sfm = folder / "sfm"
    if step == "frames":
        return [folder / "images", folder / "images.tmp", folder / FRAMES_CSV]
    if step == "features":
        return [sfm / "database.db", sfm / "database.tmp.db"]
    if step == "mapping":
        return [sfm / "models", sfm / "models.tmp"]
    return [folder / COMPLETE_MARKER, folder / "export.tmp", folder / "sparse"] + [
        folder / name for name in _EXPORT_FILES
    ]


def _remove_from(folder: Path, step: str) -> None:
    """Delete the outputs and markers of ``step`` and every later step (marker first)."""
    later = STEPS[STEPS.index(step) :]
    (folder / COMPLETE_MARKER).unlink(missing_ok=True)
    for s in later:
        (folder / "sfm" / "steps" / f"{s}.json").unlink(missing_ok=True)
    # Cambridge split files next: without them no loader takes the folder for a dataset.
    for name in ("dataset_train.txt", "dataset_test.txt"):
        (folder / name).unlink(missing_ok=True)
    for s in reversed(later):
        for path in _step_outputs(folder, s):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def _step_state(
    folder: Path, step: str, fingerprint: dict, redo: bool
) -> tuple[bool, dict | None]:
    """``(reuse, marker)`` for a step; SfmError when its marker holds other parameters."""
    marker = _read_json(folder / "sfm" / "steps" / f"{step}.json")
    if marker is None or redo:
        return False, None
    if marker.get("fingerprint") == _json_normal(fingerprint):
        return True, marker
    differs = _differences(marker.get("fingerprint") or {}, _json_normal(fingerprint))
    raise SfmError(
        f"{folder} holds the '{step}' step made with different parameters"
        f" ({', '.join(differs[:8])}{', ...' if len(differs) > 8 else ''}); pass"
        f" --redo-from {step} (redo_from='{step}') to recompute from this step, --overwrite to"
        " recompute everything, or choose another output folder"
    )


def _finish_step(folder: Path, step: str, fingerprint: dict, stats: dict) -> dict:
    marker = {"step": step, "fingerprint": fingerprint, "stats": stats}
    (folder / "sfm" / "steps").mkdir(parents=True, exist_ok=True)
    _write_json(folder / "sfm" / "steps" / f"{step}.json", marker)
    return _json_normal(marker)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"[posenet_train.sfm] {text}", file=sys.stderr, flush=True)


class _QuietColmap:
    """Raise glog's threshold while pycolmap runs (its INFO lines drown the progress bars)."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose

    def __enter__(self):
        import pycolmap

        self.previous = pycolmap.logging.minloglevel
        if not self.verbose:
            pycolmap.logging.minloglevel = 2
        return self

    def __exit__(self, *exc_info) -> None:
        import pycolmap

        pycolmap.logging.minloglevel = self.previous


# --------------------------------------------------------------------------------------------
# Export


def _plot_trajectory(
    path: Path,
    positions: np.ndarray,
    splits: list[str],
    reference: np.ndarray | None,
    outliers: np.ndarray | None,
    frame_id: str,
    units: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    colours = {"train": "tab:blue", "test": "tab:orange", "guard": "tab:gray"}
    views = (((0, 1), "top view (x, y)"), ((0, 2), "side view (x, z)"))
    for ax, ((i, j), title) in zip(axes, views, strict=True):
        if reference is not None:
            ok = np.all(np.isfinite(reference), axis=1)
            ax.plot(reference[ok, i], reference[ok, j], "-", color="0.6", lw=1, label="reference")
        ax.plot(positions[:, i], positions[:, j], "-", color="0.85", lw=0.8, zorder=1)
        for split, colour in colours.items():
            mask = np.array([s == split for s in splits])
            if mask.any():
                ax.scatter(
                    positions[mask, i], positions[mask, j], s=9, c=colour, label=split, zorder=2
                )
        if outliers is not None and outliers.any():
            ax.scatter(
                positions[outliers, i],
                positions[outliers, j],
                s=40,
                marker="x",
                c="tab:red",
                label="alignment outlier",
                zorder=3,
            )
        ax.scatter(positions[:1, i], positions[:1, j], s=60, marker="*", c="k", label="start")
        ax.set_xlabel(f"{'xyz'[i]} [{units}]")
        ax.set_ylabel(f"{'xyz'[j]} [{units}]")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, lw=0.3)
        ax.set_title(f"{title}, frame '{frame_id}'")
    axes[0].legend(loc="best", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def export_dataset(
    folder: Path,
    reconstruction,
    frames: list[FrameInfo],
    positions: np.ndarray,
    quats_wxyz: np.ndarray,
    transform: Similarity,
    *,
    frame_id: str,
    units: str,
    split: tuple[float, int, int],
    residuals: np.ndarray,
    reference_positions: np.ndarray | None,
    inliers: np.ndarray | None,
    report: dict,
) -> dict:
    """Write the dataset files into ``folder`` (see the module doc).

    Args:
        reconstruction: the SfM model (written transformed by ``transform`` as sparse/0).
        frames: the registered frames in time order; positions, quats_wxyz: their poses in the
            output frame.
        residuals, reference_positions, inliers: per frame, from the alignment (NaN / None
            without a reference).
        report: the report dict; the split summary and output frame are added, then it is
            written as sfm_report.json.

    The Cambridge split files are moved into place last, so an interrupted export never
    leaves a folder a loader would take for a dataset. Returns the split summary.
    """
    ordered = [f.name for f in frames]
    info = {f.name: f for f in frames}
    quats = quats_wxyz
    test_fraction, blocks, guard = split
    train_idx, test_idx, dropped_idx = split_by_time_blocks(
        len(ordered), test_fraction=test_fraction, blocks=blocks, guard_frames=guard
    )
    labels = ["train"] * len(ordered)
    for i in test_idx:
        labels[i] = "test"
    for i in dropped_idx:
        labels[i] = "guard"

    staging = folder / "export.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        # Records point at staging/images/... so that write_cambridge's relative paths read
        # "images/..." once the files are moved up next to the real images folder.
        for split_name, indices in (("train", train_idx), ("test", test_idx)):
            records = [
                PoseRecord(
                    staging / "images" / ordered[i],
                    positions[i],
                    quats[i],
                    info[ordered[i]].timestamp_s,
                )
                for i in indices
            ]
            write_cambridge(staging, split_name, records)
            (staging / f"{split_name}_list.txt").write_text(
                "".join(f"{ordered[i]}\n" for i in indices), encoding="utf-8"
            )
        with open(staging / "poses.csv", "w", encoding="utf-8") as f:
            f.write(
                "image,timestamp_s,split,x_m,y_m,z_m,qw,qx,qy,qz,reference_residual_m,inlier\n"
            )
            for i, name in enumerate(ordered):
                stamp = info[name].timestamp_s
                values = [
                    f"images/{name}",
                    "" if stamp is None else repr(float(stamp)),
                    labels[i],
                    *(repr(float(v)) for v in (*positions[i], *quats[i])),
                    "" if not np.isfinite(residuals[i]) else repr(float(residuals[i])),
                    "" if inliers is None else str(int(inliers[i])),
                ]
                f.write(",".join(values) + "\n")
        import pycolmap

        aligned = pycolmap.Reconstruction(reconstruction)
        aligned.transform(
            pycolmap.Sim3d(
                transform.scale,
                pycolmap.Rotation3d(transform.rotation),
                transform.translation_m.reshape(3, 1),
            )
        )
        write_model(aligned, staging / "sparse" / "0")
        _plot_trajectory(
            staging / "trajectory.png",
            positions,
            labels,
            reference_positions,
            None if inliers is None else ~inliers & np.isfinite(residuals),
            frame_id,
            units,
        )
        summary = {
            "train": len(train_idx),
            "test": len(test_idx),
            "guard_dropped": len(dropped_idx),
            "test_fraction": test_fraction,
            "blocks": blocks,
            "guard_frames": guard,
            "test_frames": [ordered[i] for i in test_idx],
        }
        report["split"] = summary
        report["output_frame"] = {
            "frame_id": frame_id,
            "units": units,
            "pose_convention": "T_world_camera: camera centre in the output frame, camera-to-"
            "frame rotation, optical camera axes (x right, y down, z forward); Cambridge files"
            " store the centre and the world-to-camera quaternion",
        }
        _write_json(staging / REPORT, report)
        if (folder / "sparse").exists():
            shutil.rmtree(folder / "sparse")
        os.replace(staging / "sparse", folder / "sparse")
        for name in ("train_list.txt", "test_list.txt", "poses.csv", REPORT, "trajectory.png"):
            os.replace(staging / name, folder / name)
        for name in ("dataset_test.txt", "dataset_train.txt"):
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


# --------------------------------------------------------------------------------------------
# The pipeline


def _resolve_intrinsics(
    intrinsics: str | Path | CameraIntrinsics | None,
    camera_info_topic: str | None,
    input_path: Path,
    input_kind: str,
) -> CameraIntrinsics | None:
    if intrinsics is not None and camera_info_topic is not None:
        raise SfmError("give intrinsics or camera_info_topic, not both")
    if isinstance(intrinsics, CameraIntrinsics):
        return intrinsics
    if intrinsics is not None:
        return CameraIntrinsics.from_json(intrinsics)
    if camera_info_topic is not None:
        if input_kind != "rosbag":
            raise SfmError("camera_info_topic needs a rosbag2 input")
        with Bag(input_path) as bag:
            info = bag.read_camera_info(camera_info_topic)
        return CameraIntrinsics.from_camera_info(info, f"{input_path}:{camera_info_topic}")
    return None


def _preflight_reference(
    options: ReferenceOptions,
    frames: list[FrameInfo],
    input_path: Path,
    image_frame_id: str | None,
) -> None:
    stamps = np.array([f.timestamp_s for f in frames], dtype=np.float64)
    reference = reference_camera_poses(input_path, options, stamps, image_frame_id)
    require_overlap(reference, stamps, options)


def main(
    input_path: str | Path,
    output: str | Path,
    *,
    selection: FrameSelection = DEFAULT_SELECTION,
    sfm: SfmOptions = SfmOptions(),
    reference: ReferenceOptions = ReferenceOptions(),
    input_kind: str | None = None,
    image_topic: str | None = None,
    image_rate_hz: float | None = None,
    image_format: str = "png",
    intrinsics: str | Path | CameraIntrinsics | None = None,
    camera_info_topic: str | None = None,
    min_registered: int = 10,
    min_registered_share: float = 0.5,
    test_fraction: float = 0.2,
    split_blocks: int = 10,
    split_guard_frames: int = 1,
    overwrite: bool = False,
    redo_from: str | None = None,
    progress: bool = True,
    verbose: bool = False,
) -> Path:
    """Label a video, image folder or rosbag2 with camera poses and write a pose dataset.

    Args:
        input_path: video file, image folder, or rosbag2 (folder or .mcap).
        output: output folder (see the module doc).
        input_kind: "video", "images" or "rosbag" (detected when None).
        image_topic: rosbag2 image topic (Image or CompressedImage; default: the only one).
        image_rate_hz: image folder frame rate (gives the images timestamps).
        selection: which frames are used (:class:`~posenet_train.sfm.frames.FrameSelection`;
            default: :data:`DEFAULT_SELECTION`, at most 300 frames).
        sfm: features, matching and mapping (:class:`~posenet_train.sfm.reconstruct.SfmOptions`;
            the initialisation defaults accept a camera driving straight ahead, see
            :mod:`~posenet_train.sfm.reconstruct`). Its ``camera_model`` is estimated when no
            intrinsics are given.
        reference: scale and frame of the output poses
            (:class:`~posenet_train.sfm.reference.ReferenceOptions`): a scale factor, a known
            distance ``(frame_a, frame_b, metres)``, odometry or TF from a rosbag2, or none
            (SfM units, with a warning).
        image_format: "png" or "jpg" for the written frames.
        intrinsics: JSON file (or object) with the calibrated camera; camera_info_topic: read
            them from the bag's CameraInfo instead. Neither: ``sfm.camera_model`` is estimated.
        min_registered, min_registered_share: fewest registered frames (count and share of the
            selected frames) accepted; below them mapping is tried once more with COLMAP's own
            initialisation (:func:`~posenet_train.sfm.reconstruct.map_with_fallback`).
        test_fraction, split_blocks, split_guard_frames: :func:`split_by_time_blocks`.
        overwrite: recompute every step. redo_from: recompute from this step on (one of
            "frames", "features", "mapping", "export").
        progress: progress bars and step messages on stderr. verbose: pycolmap's own log too.

    Returns the output folder. Raises SfmError naming the problem for bad input (unreadable
    video, a bag without the topic, too few registered frames, odometry that does not overlap
    the images in time, ...); a failed run leaves no completion marker and no split files.
    """
    input_path = Path(input_path)
    folder = Path(output)
    if redo_from is not None and redo_from not in STEPS:
        raise SfmError(f"redo_from must be one of {', '.join(STEPS)}, got {redo_from!r}")
    for name, value, low, high in (
        ("min_registered", min_registered, 3, None),
        ("min_registered_share", min_registered_share, 0.0, 1.0),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value < low
            or (high is not None and value > high)
        ):
            raise SfmError(
                f"{name} must be >= {low}{f' and <= {high}' if high else ''}, got {value!r}"
            )
    split = (float(test_fraction), split_blocks, split_guard_frames)
    split_by_time_blocks(100, test_fraction=split[0], blocks=split[1], guard_frames=split[2])
    source = open_source(
        input_path, kind=input_kind, image_topic=image_topic, image_rate_hz=image_rate_hz
    )
    if reference.mode in ("odometry", "tf") and source.kind != "rosbag":
        raise SfmError(
            f"scale mode {reference.mode!r} needs odometry or TF from a rosbag2, but the"
            f" input is a {source.kind}"
        )
    camera = _resolve_intrinsics(intrinsics, camera_info_topic, input_path, source.kind)
    if image_format not in ("png", "jpg"):
        raise SfmError(f"image_format must be png or jpg, got {image_format!r}")

    fp_frames = {
        "format_version": FORMAT_VERSION,
        "input": {"kind": source.kind, **_input_fingerprint(input_path)},
        "image_topic": source.description.get("image_topic"),
        "image_rate_hz": image_rate_hz,
        "selection": asdict(selection),
        "image_format": image_format,
    }
    sfm_dict = asdict(sfm)
    sfm_dict.pop("num_threads")  # the result does not depend on it (beyond float rounding)
    fp_features = {
        "frames": fp_frames,
        "intrinsics": None if camera is None else camera.to_json(),
        "sfm": {k: sfm_dict[k] for k in ("matcher", "overlap", "max_features", "max_image_size")}
        | {"camera_model": None if camera else sfm.camera_model, "seed": sfm.seed},
    }
    fp_mapping = {
        "features": fp_features,
        "mapping": {
            "refine_intrinsics": sfm.refine_intrinsics,
            "min_model_size": sfm.min_model_size,
            "init_min_tri_angle_deg": sfm.init_min_tri_angle_deg,
            "init_max_forward_motion": sfm.init_max_forward_motion,
            "seed": sfm.seed,
        },
    }
    fp_export = {
        "mapping": fp_mapping,
        "reference": _json_normal(asdict(reference)),
        "split": list(split),
        "min_registered": min_registered,
        "min_registered_share": min_registered_share,
    }
    fingerprints = dict(zip(STEPS, (fp_frames, fp_features, fp_mapping, fp_export), strict=True))

    _prepare_output(folder, overwrite)
    complete = _read_json(folder / COMPLETE_MARKER)
    if (
        complete is not None
        and not overwrite
        and redo_from is None
        and complete.get("fingerprint") == _json_normal(fp_export)
    ):
        _say(progress, f"{folder} is complete with these parameters: reused")
        return folder
    redo_index = len(STEPS) if redo_from is None else STEPS.index(redo_from)
    timings: dict[str, float] = {}
    markers: dict[str, dict] = {}
    reused: list[str] = []
    # Decide reuse for every step first: a parameter change in a late step must not destroy
    # the results of earlier ones before the error is raised.
    plan = []
    for i, step in enumerate(STEPS):
        if plan and not plan[-1]:
            plan.append(False)  # an earlier step is recomputed: so is every later one
            continue
        can_reuse, marker = _step_state(folder, step, fingerprints[step], redo=i >= redo_index)
        plan.append(can_reuse)
        if can_reuse:
            markers[step] = marker
    first_redo = next((s for s, r in zip(STEPS, plan, strict=True) if not r), None)
    (folder / "sfm").mkdir(exist_ok=True)
    (folder / IN_PROGRESS_MARKER).touch()
    if first_redo is not None:
        _remove_from(folder, first_redo)

    images_dir = folder / "images"
    with _QuietColmap(verbose):
        # 1. frames
        if plan[0]:
            reused.append("frames")
            frames = read_frames_csv(folder / FRAMES_CSV)
        else:
            _say(progress, f"frames from {source.kind} {input_path}")
            start = time.perf_counter()
            tmp_dir = folder / "images.tmp"
            frames, stats = extract_frames(
                source, tmp_dir, selection, image_format=image_format, progress=progress
            )
            os.replace(tmp_dir, images_dir)
            write_frames_csv(folder / FRAMES_CSV, frames)
            timings["frames_s"] = time.perf_counter() - start
            markers["frames"] = _finish_step(folder, "frames", fp_frames, stats)
        names = [f.name for f in frames]
        size_wh = markers["frames"]["stats"]["image_size_wh"]
        if camera is not None and size_wh != [camera.width, camera.height]:
            raise SfmError(
                f"the intrinsics are for {camera.width}x{camera.height} images, but the frames"
                f" are {size_wh[0]}x{size_wh[1]}"
            )

        frame_ids = (markers["frames"]["stats"].get("source") or {}).get("frame_ids") or {}
        image_frame_id = max(frame_ids, key=frame_ids.get) if frame_ids else None
        if reference.mode in ("odometry", "tf") and not plan[3]:
            # Check the reference before minutes of SfM: topic, extrinsic, overlap in time.
            _preflight_reference(reference, frames, input_path, image_frame_id)

        # 2. features and matches
        database = folder / "sfm" / "database.db"
        if plan[1]:
            reused.append("features")
        else:
            _say(progress, f"SIFT features and {sfm.matcher} matching, {len(names)} frames")
            start = time.perf_counter()
            tmp_db = folder / "sfm" / "database.tmp.db"
            tmp_db.unlink(missing_ok=True)
            try:
                stats = extract_and_match(
                    images_dir, names, tmp_db, sfm, camera, progress=progress
                )
            except BaseException:
                tmp_db.unlink(missing_ok=True)
                raise
            os.replace(tmp_db, database)
            timings["features_s"] = time.perf_counter() - start
            markers["features"] = _finish_step(folder, "features", fp_features, stats)

        # 3. mapping
        models_dir = folder / "sfm" / "models"
        if plan[2]:
            reused.append("mapping")
            models = read_models(models_dir)
        else:
            _say(progress, "incremental mapping")
            start = time.perf_counter()
            tmp_models = folder / "sfm" / "models.tmp"
            shutil.rmtree(tmp_models, ignore_errors=True)
            try:
                # The bar of the export step: below it a second initialisation is worth a try.
                _, attempts = map_with_fallback(
                    database,
                    images_dir,
                    tmp_models,
                    sfm,
                    intrinsics_known=camera is not None,
                    total_frames=len(names),
                    min_registered=max(
                        min_registered, math.ceil(min_registered_share * len(names))
                    ),
                    progress=progress,
                )
            except BaseException:
                shutil.rmtree(tmp_models, ignore_errors=True)
                raise
            os.replace(tmp_models, models_dir)
            models = read_models(models_dir)
            timings["mapping_s"] = time.perf_counter() - start
            markers["mapping"] = _finish_step(
                folder,
                "mapping",
                fp_mapping,
                {
                    "models": {str(k): int(m.num_reg_images()) for k, m in models.items()},
                    "attempts": attempts,
                },
            )

    # 4. scale, frame and export
    _say(progress, f"scale and frame ({reference.mode}), export")
    start = time.perf_counter()
    report_warnings: list[str] = []
    index, best, others = select_largest(models)
    statistics = model_statistics(best, len(names))
    registered = statistics["registered_frames"]
    if registered < min_registered or statistics["registered_share"] < min_registered_share:
        raise SfmError(
            f"too few registered frames: {registered} of {len(names)}"
            f" ({100 * statistics['registered_share']:.0f} %) in the largest model"
            f" ({len(models)} model(s): sizes"
            f" {sorted((int(m.num_reg_images()) for m in models.values()), reverse=True)});"
            f" need at least {min_registered} and {100 * min_registered_share:.0f} %. More"
            " overlap between frames (smaller every_nth, more frames), more texture, exhaustive"
            " matching or known intrinsics may help"
        )
    if others:
        report_warnings.append(
            f"SfM produced {len(models)} models; kept model {index} ({registered} frames),"
            f" dropped {sum(o['registered_frames'] for o in others)} frames in the others"
        )
    poses = camera_poses(best)
    info = {f.name: f for f in frames}
    ordered = sorted(poses, key=lambda n: (info[n].timestamp_s or 0.0, info[n].source_index))
    positions = np.array([poses[n][0] for n in ordered])
    quats = np.array([poses[n][1] for n in ordered])
    frames_stats = markers["frames"]["stats"]
    transform, frame_id, scale_report, residuals, reference_positions = compute_transform(
        reference,
        ordered,
        [info[n].source_index for n in ordered],
        [info[n].timestamp_s for n in ordered],
        positions,
        quats,
        input_path=input_path,
        input_kind=source.kind,
        image_frame_id=image_frame_id,
        seed=sfm.seed,
    )
    units = scale_report["units"]
    if reference.mode == "none":
        report_warnings.append(
            "no scale given: positions are in arbitrary SfM units and the SfM frame; give"
            " known_distance, scale, or (rosbag2) odometry_topic / tf_reference_frame for metres"
        )
    if scale_report.get("distance_share_of_extent", 1.0) < DISTANCE_WARNING_SHARE:
        report_warnings.append(
            f"the known distance spans only {100 * scale_report['distance_share_of_extent']:.0f} %"
            " of the trajectory's extent: SfM position noise of the two frames enters the scale"
            " amplified; choose two frames further apart"
        )
    inliers = None
    if "inlier_frames_mask" in scale_report:
        inliers = np.array(scale_report.pop("inlier_frames_mask"), dtype=bool)
        if scale_report["rotation_residual_median_deg"] > ROTATION_WARNING_DEG:
            report_warnings.append(
                "the aligned SfM orientations differ from the reference orientations by"
                f" {scale_report['rotation_residual_median_deg']:.1f} deg (median): check the"
                " camera extrinsic (T_base_camera) and that the camera frame is the optical"
                " frame (x right, y down, z forward)"
            )
    report = {
        "generator": "posenet_train.sfm",
        "format_version": FORMAT_VERSION,
        "input": {"path": str(input_path.absolute()), "kind": source.kind},
        "frames": frames_stats,
        "features": markers["features"]["stats"],
        "sfm": {
            "kept_model": int(index),
            **statistics,
            "other_models": others,
            "intrinsics_given": None if camera is None else camera.to_json(),
            "camera_model_estimated": None if camera else sfm.camera_model,
            "options": asdict(sfm),
            "mapping_attempts": markers["mapping"]["stats"].get("attempts", []),
        },
        "scale": scale_report,
        "warnings": report_warnings,
        "reused_steps": reused,
        "timings_s": timings,
        "versions": _versions(),
    }
    out_positions, out_quats = transform.apply_poses(positions, quats)
    summary = export_dataset(
        folder,
        best,
        [info[n] for n in ordered],
        out_positions,
        out_quats,
        transform,
        frame_id=frame_id,
        units=units,
        split=split,
        residuals=residuals,
        reference_positions=reference_positions,
        inliers=inliers,
        report=report,
    )
    timings["export_s"] = time.perf_counter() - start
    report["timings_s"] = timings
    _write_json(folder / REPORT, report)
    _finish_step(folder, "export", fp_export, {"split": summary})
    _write_json(folder / COMPLETE_MARKER, {"fingerprint": fp_export})
    (folder / IN_PROGRESS_MARKER).unlink(missing_ok=True)
    for text in report_warnings:
        warnings.warn(text, SfmWarning, stacklevel=2)
    _say(
        progress,
        f"done: {registered}/{len(names)} frames registered, {summary['train']} train /"
        f" {summary['test']} test, frame '{frame_id}' ({units}) -> {folder}",
    )
    return folder


def _versions() -> dict:
    import pycolmap

    versions = {"pycolmap": getattr(pycolmap, "__version__", "unknown")}
    try:
        from importlib.metadata import version

        versions["rosbags"] = version("rosbags")
    except Exception:  # not installed as a distribution: not worth failing a report for
        versions["rosbags"] = "unknown"
    return versions
