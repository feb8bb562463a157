"""Evaluate a relocalizer on a dataset split: errors, accuracy shares, plots and a JSON summary.

Three ways to predict the test poses:

- ``--checkpoint CKPT``: a trained PyTorch model
  (:func:`posenet_train.checkpoint.model_from_checkpoint`);
- ``--onnx MODEL.onnx``: the exported model file through ONNX Runtime, preprocessed exactly as
  the ROS node does it (resize and crop read from the file's ``posenet.*`` metadata), so the
  numbers are the node's numbers;
- ``--baseline nn``: nearest-neighbour retrieval, no network. Every image is described by its
  32x24 greyscale thumbnail (zero mean, unit norm); a query gets the pose of the train image
  with the highest cosine similarity. Any learned relocalizer must beat this. (On the train
  split every query finds itself: zero error by construction.)

``--dense`` averages the predictions over 128 uniformly spaced crops of the resized image (the
PoseNet paper's dense evaluation) instead of the single centre crop: positions by their mean,
orientations by the eigenvector mean of the quaternions (sign-invariant).

Outputs in ``--output``: ``summary.json`` (configuration, median/mean errors, shares of frames
within 5 cm/5 deg, 25 cm/2 deg, 50 cm/5 deg, 5 m/10 deg), ``predictions.csv`` (per image),
``trajectory.png`` (top view: ground truth vs prediction, a line joining each pair) and
``error_cdf.png``. An existing evaluation with the same configuration is reused; a different one
is an error unless ``--overwrite``.

Refinement. ``--map MAP`` (a map file of this dataset, ``posenet_train.map``) also refines each
prediction against the map exactly as the node does (:func:`refine_poses`: the same refiner and
default ``refine.*`` settings, the full frame, the dataset's intrinsics - what ``dataset_player``
publishes as camera_info - or ``--intrinsics JSON``) and reports prior and refined side by side:
medians and threshold shares of the prior, of what the node publishes (refined where refinement
succeeded, else the prior), of the refined frames alone, the refined share and the failures by
reason (``summary["refinement"]``, printed as a table), with ``refined_predictions.csv``,
``refined_error_cdf.png`` (prior vs refined, log scale) and ``refined_trajectory.png``. A
missing or corrupt map, or one of another dataset, version or scene frame, is an error naming
the value and what is allowed (exit status 2).

Uncertainty. A model with an uncertainty head (``--model-arg uncertainty=True``, trained with
``--loss nll``; or its format 2 model file) predicts per-image variances; the summary then says
how well they describe the actual errors (``uncertainty.head``): the share of test frames inside
the 1/2/3-sigma Mahalanobis radius (ideal 19.9/73.9/97.1 % for 3-D Gaussian errors), the share of
per-axis errors within 1/2/3 sigma (ideal 68.3/95.4/99.7 %), the Spearman correlation between
the predicted sigma and the error, and the covariance factor that would calibrate it; plotted in
``uncertainty_head.png``. ``--mc-dropout N`` (checkpoints) adds the reference it is checked
against: N passes with dropout active (Bayesian PoseNet), their sample covariance calibrated the
same way (``uncertainty.mc_dropout``, ``uncertainty_mc_dropout.png``) and compared with the
head's (``uncertainty.agreement``).

Example::

    python -m posenet_train.evaluate --dataset ../shared/datasets/middlebury_dino \\
        --split test --baseline nn --output runs/dino_nn
    python -m posenet_train.evaluate --dataset ../shared/datasets/middlebury_dino \\
        --checkpoint runs/dino_nll/best.pt --mc-dropout 30 --output runs/dino_nll_eval
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from posenet_core.cli import positive_int, run_main
from posenet_core.contract import (
    KEY_DATASET_FINGERPRINT,
    ORT_DISABLED_OPTIMIZERS,
    UNCERTAINTY_KEY,
    ModelInfo,
    format_median_error,
    parse_metadata,
)
from posenet_core.datasets import SPLITS, CameraIntrinsics, PoseRecord
from posenet_core.errors import ModelFileError
from posenet_core.geometry import (
    average_quaternions,
    matrix_to_pose,
    pose_to_matrix,
    quat_canonical,
    quat_conjugate,
    quat_multiply,
    quat_normalize,
    quat_to_rotvec,
)
from posenet_core.images import read_rgb
from posenet_core.mapfile import (
    MapFileError,
    SiteMap,
    check_compatible,
    read_map,
    split_fingerprint,
)
from posenet_core.metrics import THRESHOLDS, error_statistics, pose_errors
from posenet_core.plots import figure, plot_error_cdf_curves, plot_error_cdfs, save_figure
from posenet_core.preprocess import center_crop, crop, resize_shorter
from posenet_core.refine import (
    AUTO_FACTOR,
    FAILURE_REASONS,
    Refiner,
    RefinerConfig,
    with_auto_prior_limits,
)
from posenet_train.datasets import dataset_intrinsics, load_split, parse_dataset_spec
from posenet_train.errors import ModelError, PoseNetTrainError
from posenet_train.preprocess import DENSE_CROPS, dense_crop_offsets

__all__ = [
    "BASELINES",
    "IDEAL_SHARES",
    "McDropoutPrediction",
    "NN_DESCRIPTOR_WH",
    "OnnxContract",
    "RefinedPoses",
    "calibration_report",
    "chi3_cdf",
    "cli",
    "compare_uncertainties",
    "global_descriptor",
    "load_refinement_map",
    "main",
    "mc_dropout_predict",
    "nearest_neighbour_baseline",
    "plot_trajectory",
    "plot_uncertainty",
    "pose_error_vectors",
    "predict",
    "predict_onnx",
    "predict_with",
    "print_refinement",
    "read_onnx_contract",
    "refine_poses",
    "refinement_report",
    "spearman",
    "summarize",
]

BASELINES = ("nn",)
NN_DESCRIPTOR_WH = (32, 24)
DEFAULT_RESIZE = 256
DEFAULT_CROP_HW = (224, 224)
_IMAGE_CHUNK = 32  # images decoded ahead in threads; bounds memory on large datasets

# forward(image_BCHW float32 0..1) -> (position_m [B,3], quat_wxyz [B,4])
Forward = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------- errors and summary


def summarize(translation_error_m: np.ndarray, rotation_error_deg: np.ndarray) -> dict:
    """Summary statistics of per-frame errors.

    Keys: ``count``, ``median_translation_m``, ``mean_translation_m``, ``median_rotation_deg``,
    ``mean_rotation_deg`` and, for each of :data:`THRESHOLDS`, ``share_<name>`` (e.g.
    ``share_5cm_5deg``): the fraction (0..1) of frames with both errors within the thresholds
    (:func:`posenet_core.metrics.error_statistics`, the node's numbers); there must be errors.
    """
    t = np.asarray(translation_error_m, dtype=np.float64).reshape(-1)
    r = np.asarray(rotation_error_deg, dtype=np.float64).reshape(-1)
    if len(t) != len(r) or len(t) == 0:
        raise PoseNetTrainError(
            f"need the same non-zero number of translation and rotation errors, got {len(t)}"
            f" and {len(r)}"
        )
    return error_statistics(t, r)


# ----------------------------------------------------------------------- network predictions


def _resized_images(records: Sequence[PoseRecord], resize: int, progress: bool) -> Iterator:
    """Yield each record's image resized to the shorter side, decoding ahead in threads."""
    bar = tqdm(total=len(records), desc="images", unit="img", disable=not progress)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, len(records), _IMAGE_CHUNK):
            chunk = records[start : start + _IMAGE_CHUNK]
            for image in pool.map(lambda r: resize_shorter(read_rgb(r.image_path), resize), chunk):
                yield image
                bar.update(1)
    bar.close()


def _to_bchw(crops: Sequence[np.ndarray]) -> np.ndarray:
    # Division by 255 in float32, as posenet_core.preprocess.to_input_tensor does.
    stacked = np.stack(crops).transpose(0, 3, 1, 2)
    return np.divide(stacked, np.float32(255.0), dtype=np.float32)


def predict_with(
    forward: Forward,
    records: Sequence[PoseRecord],
    *,
    dense: bool = False,
    batch_size: int = 32,
    resize_shorter_px: int = DEFAULT_RESIZE,
    crop_hw: tuple[int, int] = DEFAULT_CROP_HW,
    progress: bool = False,
    with_uncertainty: bool = False,
) -> tuple[np.ndarray, ...]:
    """Predict every record's pose with ``forward`` (the runtime-independent part of predict).

    Single crop: resize the shorter side then centre-crop (the node's algorithm). Dense: 128
    uniformly spaced crops of the resized image, positions averaged, quaternions averaged by the
    eigenvector method. Returns ``(position_m (N,3), quat_wxyz (N,4))`` float64, unit w >= 0.

    ``forward`` may return a third array, log-variances ``[B,6]`` (or ``[B,2]``, isotropic) of
    an uncertainty head. With ``with_uncertainty`` the result has a third item: those
    log-variances ``(N,6)`` float64, or None when ``forward`` gives none (always None with
    ``dense``: the uncertainty is measured on the centre crop the node runs).
    """
    if batch_size < 1:
        raise PoseNetTrainError(f"batch_size must be >= 1, got {batch_size}")
    if not records:
        raise PoseNetTrainError("no images to predict")
    crop_hw = (int(crop_hw[0]), int(crop_hw[1]))
    positions: list[np.ndarray] = []
    quats: list[np.ndarray] = []
    log_variances: list[np.ndarray] = []

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        output = forward(batch)
        position = np.asarray(output[0], dtype=np.float64).reshape(len(batch), 3)
        quat = np.asarray(output[1], dtype=np.float64).reshape(len(batch), 4)
        if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quat))):
            raise ModelError("the model predicted a non-finite pose (NaN or inf)")
        if len(output) > 2 and output[2] is not None and not dense:
            log_variances.append(_log_variance_6(output[2], len(batch)))
        return position, quat_normalize(quat)

    pending: list[np.ndarray] = []
    for image in _resized_images(records, resize_shorter_px, progress):
        if dense:
            offsets = dense_crop_offsets(image.shape[:2], crop_hw, DENSE_CROPS)
            crops = [crop(image, int(top), int(left), crop_hw) for top, left in offsets]
            crop_positions, crop_quats = [], []
            for start in range(0, len(crops), batch_size):
                p, q = run(_to_bchw(crops[start : start + batch_size]))
                crop_positions.append(p)
                crop_quats.append(q)
            positions.append(np.concatenate(crop_positions).mean(axis=0, keepdims=True))
            quats.append(average_quaternions(np.concatenate(crop_quats))[None])
        else:
            pending.append(center_crop(image, crop_hw))
            if len(pending) == batch_size:
                p, q = run(_to_bchw(pending))
                positions.append(p)
                quats.append(q)
                pending = []
    if pending:
        p, q = run(_to_bchw(pending))
        positions.append(p)
        quats.append(q)
    quat_all = np.concatenate(quats)
    quat_all = np.where(quat_all[:, :1] < 0.0, -quat_all, quat_all)
    if with_uncertainty:
        log_variance = np.concatenate(log_variances) if log_variances else None
        return np.concatenate(positions), quat_all, log_variance
    return np.concatenate(positions), quat_all


def _log_variance_6(values: np.ndarray, count: int) -> np.ndarray:
    """Log-variances as ``(count, 6)`` float64 (an isotropic ``[count, 2]`` pair repeated);
    ModelError when the shape or the values are unusable."""
    array = np.asarray(values, dtype=np.float64)
    if array.shape == (count, 2):
        array = np.repeat(array, 3, axis=1)
    if array.shape != (count, 6):
        raise ModelError(
            f"the uncertainty output has shape {list(array.shape)}; expected [{count}, 6] or "
            f"[{count}, 2] log-variances"
        )
    if not np.all(np.isfinite(array)):
        raise ModelError("the model predicted non-finite log-variances (NaN or inf)")
    return array


def predict(
    model: torch.nn.Module, records: Sequence[PoseRecord], **options: Any
) -> tuple[np.ndarray, ...]:
    """Predict poses with a PyTorch model obeying the eval-mode contract.

    The model is put in eval mode; ``model(image_BCHW)`` must return ``(position_m [B,3],
    quat_wxyz [B,4])``, or ``(..., log_variance [B,6])`` with an uncertainty head. ``options``
    are :func:`predict_with`'s keyword arguments (dense, batch_size, resize_shorter_px, crop_hw,
    progress, with_uncertainty). Returns ``(position_m (N,3), quat_wxyz (N,4))`` numpy float64,
    and with ``with_uncertainty`` the log-variances ``(N,6)`` (None without an uncertainty
    head).
    """
    model.eval()
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")

    def forward(batch: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            output = model(torch.from_numpy(batch).to(device))
        return _eval_outputs(output)

    return predict_with(forward, records, **options)


def _eval_outputs(output: object) -> tuple[np.ndarray, ...]:
    """A model's eval-mode output as numpy: (position, quat[, log_variance])."""
    if not isinstance(output, (tuple, list)) or len(output) not in (2, 3):
        raise ModelError(
            "in eval mode the model must return (position_m [N,3], quat_wxyz [N,4]) or, with an"
            f" uncertainty head, (..., log_variance [N,6]); got {type(output).__name__}"
        )
    return tuple(t.float().cpu().numpy() for t in output)


# ----------------------------------------------------------------------------------- ONNX


OnnxContract = ModelInfo
"""What evaluation reads from a model file: posenet_core's :class:`ModelInfo` (the node's)."""


def read_onnx_contract(metadata: dict[str, str], path: str | Path = "<memory>") -> ModelInfo:
    """Parse the ``posenet.*`` metadata with the node's rules
    (:func:`posenet_core.contract.parse_metadata`; ``posenet.scene_frame`` may be missing, as
    evaluation does not need it); ModelError names the key and the value."""
    try:
        return parse_metadata(metadata, str(path), require_scene_frame=False)
    except ModelFileError as exc:
        raise ModelError(str(exc)) from None


def predict_onnx(
    model_path: str | Path,
    records: Sequence[PoseRecord],
    *,
    dense: bool = False,
    batch_size: int = 32,
    num_threads: int | None = None,
    progress: bool = False,
    with_uncertainty: bool = False,
) -> tuple[tuple[np.ndarray, ...], OnnxContract]:
    """Predict poses with an ONNX model file the way the node does (ONNX Runtime, CPU).

    Resize and crop come from the file's metadata. A graph with a fixed batch size gets batches
    of exactly that size (the last one padded). Returns ``((position_m, quat_wxyz), contract)``;
    with ``with_uncertainty`` the prediction has a third item, the file's log-variances
    ``(N,6)`` (None when it declares no ``posenet.uncertainty_output``).
    """
    import onnxruntime as ort

    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"ONNX model file not found: {model_path}")
    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(
            str(model_path),
            sess_options=options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS),
        )
    except Exception as exc:  # ORT raises its own pybind types for every load failure
        raise ModelError(f"{model_path}: cannot be loaded by ONNX Runtime: {exc}") from exc
    contract = read_onnx_contract(dict(session.get_modelmeta().custom_metadata_map), model_path)
    inputs = {item.name: item for item in session.get_inputs()}
    if contract.input_name not in inputs:
        raise ModelError(
            f"{model_path}: posenet.input names {contract.input_name!r}, but the graph's inputs"
            f" are {', '.join(inputs)}"
        )
    output_names = {item.name for item in session.get_outputs()}
    wanted = [contract.position_output, contract.orientation_output]
    if with_uncertainty and contract.uncertainty_output is not None:
        wanted.append(contract.uncertainty_output)
    for index, name in enumerate(wanted):
        if name not in output_names:
            key = "posenet.outputs" if index < 2 else UNCERTAINTY_KEY
            raise ModelError(
                f"{model_path}: {key} names {name!r}, but the graph's outputs are"
                f" {', '.join(sorted(output_names))}"
            )
    fixed_batch = inputs[contract.input_name].shape[0]
    fixed_batch = fixed_batch if isinstance(fixed_batch, int) and fixed_batch > 0 else None

    def forward(batch: np.ndarray) -> tuple[np.ndarray, ...]:
        count = len(batch)
        if fixed_batch is not None and count != fixed_batch:
            outs = [
                forward_fixed(batch[i : i + fixed_batch]) for i in range(0, count, fixed_batch)
            ]
            return tuple(np.concatenate(parts) for parts in zip(*outs, strict=True))
        return run(batch)

    def forward_fixed(batch: np.ndarray) -> tuple[np.ndarray, ...]:
        count = len(batch)
        if count < fixed_batch:
            padding = np.repeat(batch[-1:], fixed_batch - count, axis=0)
            batch = np.concatenate([batch, padding])
        return tuple(output[:count] for output in run(batch))

    def run(batch: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(
            session.run(
                wanted, {contract.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
            )
        )

    prediction = predict_with(
        forward,
        records,
        dense=dense,
        batch_size=batch_size,
        resize_shorter_px=contract.resize_shorter,
        crop_hw=contract.input_hw,
        progress=progress,
        with_uncertainty=with_uncertainty,
    )
    return prediction, contract


# ------------------------------------------------------------------- nearest-neighbour baseline


def global_descriptor(
    rgb_hwc: np.ndarray, size_wh: tuple[int, int] = NN_DESCRIPTOR_WH
) -> np.ndarray:
    """Whole-image descriptor: greyscale thumbnail ``size_wh`` (INTER_AREA), zero mean, unit norm.

    A uniform image gives the zero vector (similarity 0 to everything).
    """
    grey = cv2.cvtColor(rgb_hwc, cv2.COLOR_RGB2GRAY)
    thumb = cv2.resize(grey, tuple(int(v) for v in size_wh), interpolation=cv2.INTER_AREA)
    vector = thumb.astype(np.float64).ravel()
    vector -= vector.mean()
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 1e-12 else vector


def _describe(records: Sequence[PoseRecord], size_wh: tuple[int, int], progress: bool, desc: str):
    with ThreadPoolExecutor(max_workers=2) as pool:
        items = pool.map(lambda r: global_descriptor(read_rgb(r.image_path), size_wh), records)
        return np.stack(list(tqdm(items, total=len(records), desc=desc, disable=not progress)))


def nearest_neighbour_baseline(
    train_records: Sequence[PoseRecord],
    query_records: Sequence[PoseRecord],
    *,
    size_wh: tuple[int, int] = NN_DESCRIPTOR_WH,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pose of the most similar train image for each query (cosine similarity of descriptors).

    Returns ``(position_m (N,3), quat_wxyz (N,4), train_index (N,))``; ties go to the first
    train image.
    """
    if not train_records or not query_records:
        raise PoseNetTrainError(
            f"nearest-neighbour baseline needs train and query images, got {len(train_records)}"
            f" and {len(query_records)}"
        )
    database = _describe(train_records, size_wh, progress, "train descriptors")
    queries = _describe(query_records, size_wh, progress, "query descriptors")
    index = np.argmax(queries @ database.T, axis=1)
    positions = np.stack([train_records[i].position_m for i in index])
    quats = np.stack([train_records[i].quat_wxyz for i in index])
    return positions, quats, index


# ------------------------------------------------------------------------------- refinement


@dataclass(frozen=True)
class RefinedPoses:
    """The node's output per frame with a map: the refined pose where refinement succeeded,
    else the prior (``position_m`` (N,3), ``quat_wxyz`` (N,4)); ``refined`` (N,) which were
    refined, ``failure`` the reason of each that was not ("" where refined), ``inliers`` (N,)
    PnP inliers, ``time_s`` (N,) wall time of each refinement."""

    position_m: np.ndarray
    quat_wxyz: np.ndarray
    refined: np.ndarray
    failure: tuple[str, ...]
    inliers: np.ndarray
    time_s: np.ndarray


def load_refinement_map(
    map_path: str | Path, dataset: str | Path, split: str = "train"
) -> SiteMap:
    """Read the map file and check it is the map of ``dataset``: built from this dataset
    (its folder's name, as ``posenet_train.map`` records it) and from this version of its
    training split (the fingerprint). MapFileError names the file, the value and what is
    allowed: the map ``posenet_train.map`` builds from this dataset."""
    site_map = read_map(map_path)  # MapFileError: missing, corrupt, newer version...
    _, folder = parse_dataset_spec(str(dataset))
    name = folder.resolve().name or str(folder)
    how = f"build it with 'python -m posenet_train.map --dataset {dataset} --output MAP'"
    if site_map.dataset != name:
        raise MapFileError(
            f"map file {map_path}: built from dataset {site_map.dataset!r}, but --dataset is "
            f"{name!r}; allowed: a map of {name!r} ({how})"
        )
    fingerprint = split_fingerprint(load_split(dataset, split), folder)
    if site_map.dataset_fingerprint != fingerprint:
        raise MapFileError(
            f"map file {map_path}: dataset fingerprint {site_map.dataset_fingerprint[:12]}... "
            f"differs from {fingerprint[:12]}..., this copy of {name!r}'s {split} split (another "
            f"version of the dataset); allowed: a map of this copy ({how})"
        )
    return site_map


def refine_poses(
    site_map: SiteMap,
    records: Sequence[PoseRecord],
    prior_position_m: np.ndarray,
    prior_quat_wxyz: np.ndarray,
    intrinsics: CameraIntrinsics,
    *,
    config: RefinerConfig | None = None,
    model_median_error: str | None = None,
    opencv_threads: int = 1,
    progress: bool = False,
) -> RefinedPoses:
    """Refine each record's prior against the map exactly as the node does.

    The node's refine worker: :class:`posenet_core.refine.Refiner` with the node's defaults
    (``RefinerConfig()``, what ``refine.*`` defaults to, with the prior limits' auto value for
    ``model_median_error``, the model's ``posenet.median_error``; "unknown" or None gives the
    floors 1 m / 20 deg), the full RGB frame, the camera's K and distortion (the dataset's
    intrinsics, which ``dataset_player`` publishes as camera_info), OpenCV on
    ``opencv_threads`` threads (``refine.opencv_threads``). ``config`` replaces all of that
    configuration. A frame whose size differs from the intrinsics' is an error (the node would
    skip it: ``camera_info_size``).
    """
    if config is None:
        config = with_auto_prior_limits(RefinerConfig(), model_median_error)
    refiner = Refiner(site_map, config)
    K, dist = intrinsics.K, intrinsics.dist_coeffs
    count = len(records)
    position = np.array(prior_position_m, dtype=np.float64).reshape(count, 3)
    quat = np.array(prior_quat_wxyz, dtype=np.float64).reshape(count, 4)
    refined = np.zeros(count, dtype=bool)
    inliers = np.zeros(count, dtype=np.int64)
    time_s = np.zeros(count)
    failure: list[str] = []
    threads_before = cv2.getNumThreads()
    cv2.setNumThreads(int(opencv_threads))
    try:
        for i, record in enumerate(tqdm(records, desc="refine", unit="img", disable=not progress)):
            rgb = read_rgb(record.image_path)
            if rgb.shape[:2] != (intrinsics.height, intrinsics.width):
                raise PoseNetTrainError(
                    f"{record.image_path} is {rgb.shape[1]}x{rgb.shape[0]} but the camera "
                    f"intrinsics are for {intrinsics.width}x{intrinsics.height} images"
                )
            prior_T = pose_to_matrix(position[i], quat[i])
            result = refiner.refine(rgb, K, prior_T, dist_coeffs=dist)
            inliers[i], time_s[i] = result.num_inliers, result.time_s
            if result.success:
                refined[i] = True
                position[i], quat[i] = matrix_to_pose(result.T_world_camera)
                failure.append("")
            else:
                failure.append(result.failure)
    finally:
        cv2.setNumThreads(threads_before)
    quat = np.where(quat[:, :1] < 0.0, -quat, quat)
    return RefinedPoses(position, quat, refined, tuple(failure), inliers, time_s)


def refinement_report(
    refined: RefinedPoses,
    prior_t_err: np.ndarray,
    prior_r_err: np.ndarray,
    refined_t_err: np.ndarray,
    refined_r_err: np.ndarray,
) -> dict:
    """The prior beside the refinement: ``published`` (statistics of what the node publishes:
    refined where refined, else the prior), ``refined_only`` / ``prior_on_refined`` (the
    refined frames' errors, and their priors'), ``refined_count``, ``refined_share``,
    ``failures`` (count per reason, every reason listed), median inliers and refine time."""
    mask = refined.refined
    failures = dict.fromkeys(FAILURE_REASONS, 0)
    for reason in refined.failure:
        if reason:
            failures[reason] = failures.get(reason, 0) + 1
    count = len(mask)
    return {
        "refined_count": int(mask.sum()),
        "refined_share": float(mask.mean()) if count else 0.0,
        "failures": failures,
        "published": error_statistics(refined_t_err, refined_r_err),
        "refined_only": error_statistics(refined_t_err[mask], refined_r_err[mask]),
        "prior_on_refined": error_statistics(prior_t_err[mask], prior_r_err[mask]),
        "median_inliers": float(np.median(refined.inliers[mask])) if mask.any() else None,
        "median_refine_ms": float(np.median(refined.time_s)) * 1e3 if count else None,
    }


def _write_refined_csv(
    path: Path,
    records: Sequence[PoseRecord],
    refined: RefinedPoses,
    t_err: np.ndarray,
    r_err: np.ndarray,
    prior_t_err: np.ndarray,
    prior_r_err: np.ndarray,
) -> None:
    """One row per image: what the node publishes for it, and the prior's errors beside."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["image", "source", "failure", "inliers", "refine_ms"]
            + ["x_m", "y_m", "z_m", "qw", "qx", "qy", "qz"]
            + ["translation_error_m", "rotation_error_deg"]
            + ["prior_translation_error_m", "prior_rotation_error_deg"]
        )
        for i, record in enumerate(records):
            writer.writerow(
                [str(record.image_path), "refined" if refined.refined[i] else "prior"]
                + [refined.failure[i], int(refined.inliers[i]), f"{refined.time_s[i] * 1e3:.1f}"]
                + [f"{v:.9g}" for v in (*refined.position_m[i], *refined.quat_wxyz[i])]
                + [f"{v:.9g}" for v in (t_err[i], r_err[i], prior_t_err[i], prior_r_err[i])]
            )


# ------------------------------------------------------------------------------ uncertainty

#: Mahalanobis radii (in sigmas) at which calibration is measured.
SIGMA_LEVELS = (1, 2, 3)


def chi3_cdf(x: float) -> float:
    """P(chi-square with 3 degrees of freedom <= x)."""
    x = max(float(x), 0.0)
    return math.erf(math.sqrt(x / 2.0)) - math.sqrt(2.0 * x / math.pi) * math.exp(-x / 2.0)


#: Ideal shares of a calibrated 3-D Gaussian: inside the k-sigma Mahalanobis radius (3-D), and
#: per axis within k sigma (1-D).
IDEAL_SHARES = {
    "mahalanobis_3d": [round(chi3_cdf(k * k), 4) for k in SIGMA_LEVELS],
    "per_axis": [round(math.erf(k / math.sqrt(2.0)), 4) for k in SIGMA_LEVELS],
}
#: Median of the chi-square distribution with 3 degrees of freedom.
CHI3_MEDIAN = 2.365974


def pose_error_vectors(
    pred_position_m: np.ndarray,
    pred_quat_wxyz: np.ndarray,
    gt_position_m: np.ndarray,
    gt_quat_wxyz: np.ndarray,
) -> np.ndarray:
    """Signed per-frame errors ``(N, 6)`` in the covariance's convention.

    Position ``gt - pred`` (m, world frame); rotation the vector ``d`` (rad) with ``R_gt =
    Exp(d) R_pred``: about the world's fixed axes, applied on the left (the node's
    PoseWithCovariance convention).
    """
    pred_p = np.asarray(pred_position_m, dtype=np.float64).reshape(-1, 3)
    gt_p = np.asarray(gt_position_m, dtype=np.float64).reshape(-1, 3)
    pred_q = quat_normalize(np.asarray(pred_quat_wxyz, dtype=np.float64).reshape(-1, 4))
    gt_q = quat_normalize(np.asarray(gt_quat_wxyz, dtype=np.float64).reshape(-1, 4))
    if not len(pred_p) == len(gt_p) == len(pred_q) == len(gt_q):
        raise PoseNetTrainError(
            f"prediction/ground-truth counts differ: {len(pred_p)}, {len(gt_p)}, {len(pred_q)},"
            f" {len(gt_q)}"
        )
    rotation = quat_to_rotvec(quat_multiply(gt_q, quat_conjugate(pred_q)))
    return np.concatenate([gt_p - pred_p, rotation], axis=1)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation (ties averaged); None when either is constant or n < 3."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if len(a) != len(b):
        raise PoseNetTrainError(f"spearman: {len(a)} and {len(b)} values")
    if len(a) < 3:
        return None
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / denominator if denominator > 0.0 else None


def _as_covariances(uncertainty: np.ndarray, count: int) -> np.ndarray:
    """(N,6,6) covariances from (N,6,6) matrices or (N,6) variances."""
    array = np.asarray(uncertainty, dtype=np.float64)
    if array.shape == (count, 6):
        return np.einsum("ni,ij->nij", array, np.eye(6))
    if array.shape == (count, 6, 6):
        return array
    raise PoseNetTrainError(
        f"uncertainty must be ({count}, 6) variances or ({count}, 6, 6) covariances, got "
        f"{array.shape}"
    )


def _block_calibration(errors: np.ndarray, covariance: np.ndarray, unit_scale: float) -> dict:
    """Calibration of 3-D errors (N,3) against 3x3 covariances (N,3,3)."""
    count = len(errors)
    # Tiny ridge: an MC-dropout covariance can be rank-deficient where dropout never reaches.
    ridge = 1e-12 * np.maximum(np.trace(covariance, axis1=1, axis2=2), 1e-30)
    regular = covariance + ridge[:, None, None] * np.eye(3)
    solved = np.linalg.solve(regular, errors[..., None])[..., 0]
    d2 = np.einsum("ni,ni->n", errors, solved)
    sigma_axes = np.sqrt(np.clip(np.diagonal(covariance, axis1=1, axis2=2), 0.0, None))
    z = np.abs(errors) / np.maximum(sigma_axes, 1e-300)
    sigma = np.sqrt(np.clip(np.trace(covariance, axis1=1, axis2=2), 0.0, None) / 3.0)
    error_norm = np.linalg.norm(errors, axis=1)
    _, logdet = np.linalg.slogdet(regular)
    nll = 0.5 * (d2 + logdet + 3.0 * math.log(2.0 * math.pi))
    return {
        "count": count,
        "share_within_sigma_mahalanobis": [float(np.mean(d2 <= k * k)) for k in SIGMA_LEVELS],
        "share_within_sigma_per_axis": [float(np.mean(z <= k)) for k in SIGMA_LEVELS],
        "share_within_sigma_each_axis": [
            [float(np.mean(z[:, axis] <= k)) for k in SIGMA_LEVELS] for axis in range(3)
        ],
        "spearman_sigma_vs_error": spearman(sigma, error_norm),
        "median_sigma": float(np.median(sigma)) * unit_scale,
        "median_error": float(np.median(error_norm)) * unit_scale,
        "mean_nll": float(np.mean(nll)),
        # Multiply the predicted covariance by this to make the median squared Mahalanobis
        # distance that of a calibrated Gaussian (robust to a few gross outliers)...
        "variance_scale_median": float(np.median(d2) / CHI3_MEDIAN),
        # ... or the mean (what a Kalman filter's consistency test, NEES, looks at).
        "variance_scale_mean": float(np.mean(d2) / 3.0),
    }


def calibration_report(errors: np.ndarray, uncertainty: np.ndarray) -> dict:
    """How well predicted covariances describe actual errors.

    ``errors`` (N,6) from :func:`pose_error_vectors`; ``uncertainty`` (N,6) variances or
    (N,6,6) covariances in the same convention (m^2, rad^2). For position and rotation each:
    the share of frames inside the 1/2/3-sigma Mahalanobis radius (ideal 19.9/73.9/97.1 % for
    3-D Gaussian errors), the share of per-axis errors within 1/2/3 sigma (ideal
    68.3/95.4/99.7 %), per axis too, the Spearman correlation between the predicted sigma
    (``sqrt(trace / 3)``) and the error's norm, medians of both (position in metres, rotation in
    degrees), the mean Gaussian negative log-likelihood, and the factor on the covariance that
    would calibrate it (``variance_scale_median`` / ``variance_scale_mean``).
    """
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 2 or errors.shape[1] != 6 or len(errors) == 0:
        raise PoseNetTrainError(f"errors must be (N, 6) with N > 0, got {errors.shape}")
    covariance = _as_covariances(uncertainty, len(errors))
    if not np.all(np.isfinite(covariance)):
        raise PoseNetTrainError("the predicted covariances contain NaN or inf")
    return {
        "position": {
            "unit": "m",
            **_block_calibration(errors[:, :3], covariance[:, :3, :3], 1.0),
        },
        "rotation": {
            "unit": "deg",
            **_block_calibration(errors[:, 3:], covariance[:, 3:, 3:], math.degrees(1.0)),
        },
        "ideal": IDEAL_SHARES,
    }


_DROPOUT_TYPES = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


@dataclass(frozen=True)
class McDropoutPrediction:
    """MC-dropout samples summarised per frame, and the deterministic prediction beside them.

    ``position_m`` (N,3) / ``quat_wxyz`` (N,4): the sample mean (quaternions by the eigenvector
    mean); ``covariance`` (N,6,6): the sample covariance of the position and of the rotation
    vector about the mean rotation (world-fixed axes, on the left), m^2 / rad^2;
    ``deterministic_*``: dropout off (what the node publishes), with the head's log-variances
    (None without an uncertainty head).
    """

    position_m: np.ndarray
    quat_wxyz: np.ndarray
    covariance: np.ndarray
    deterministic_position_m: np.ndarray
    deterministic_quat_wxyz: np.ndarray
    deterministic_log_variance: np.ndarray | None
    samples: int
    head_only: bool


def _sample_summary(positions: np.ndarray, quats: np.ndarray) -> tuple:
    """(mean position (B,3), mean quat (B,4), covariance (B,6,6)) of (S,B,3) / (S,B,4)."""
    mean_position = positions.mean(axis=0)
    mean_quat = average_quaternions(np.swapaxes(quats, 0, 1))
    relative = quat_multiply(quat_normalize(quats), quat_conjugate(mean_quat)[None])
    deviations = np.concatenate(
        [positions - mean_position[None], quat_to_rotvec(relative)], axis=2
    )
    deviations -= deviations.mean(axis=0, keepdims=True)
    covariance = np.einsum("sbi,sbj->bij", deviations, deviations) / (len(positions) - 1)
    return mean_position, mean_quat, covariance


def mc_dropout_predict(
    model: torch.nn.Module,
    records: Sequence[PoseRecord],
    samples: int,
    *,
    batch_size: int = 32,
    resize_shorter_px: int = DEFAULT_RESIZE,
    crop_hw: tuple[int, int] = DEFAULT_CROP_HW,
    seed: int = 0,
    progress: bool = False,
) -> McDropoutPrediction:
    """Monte Carlo dropout (Kendall & Cipolla 2016, "Bayesian PoseNet"): ``samples`` forward
    passes per centre-cropped image with the model's dropout layers active (batch-norm and
    everything else in eval mode), summarised per frame.

    When every dropout layer sits in the main head (the posenet_train models), the backbone
    runs once per image and only the head is resampled; the result is the same. Reproducible
    for a given ``seed`` (the global torch RNG state is restored afterwards). Raises
    PoseNetTrainError when ``samples < 2`` or the model has no dropout layer.
    """
    if samples < 2:
        raise PoseNetTrainError(f"MC dropout needs at least 2 samples, got {samples}")
    if batch_size < 1:
        raise PoseNetTrainError(f"batch_size must be >= 1, got {batch_size}")
    if not records:
        raise PoseNetTrainError("no images to predict")
    dropouts = [m for m in model.modules() if isinstance(m, _DROPOUT_TYPES) and m.p > 0.0]
    if not dropouts:
        raise PoseNetTrainError(
            "the model has no active dropout layer to sample (trained with dropout=0?); MC "
            "dropout needs one"
        )
    model.eval()
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    from posenet_train.models.base import PoseNetModel  # imports torchvision: only here

    head_only = False
    if isinstance(model, PoseNetModel):
        in_head = {id(m) for m in model.heads[-1].modules()}
        head_only = all(id(m) in in_head for m in dropouts)
    crop_hw = (int(crop_hw[0]), int(crop_hw[1]))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("p", "q", "cov", "dp", "dq", "lv")}

    def run_batch(batch: np.ndarray) -> None:
        x = torch.from_numpy(batch).to(device)
        with torch.inference_mode():
            deterministic = _eval_outputs(model(x))
            if head_only:
                normalised = (x - model.input_mean) / model.input_std
                features = model.extract_features(normalised)[-1]
            for module in dropouts:
                module.train()
            try:
                sampled = []
                for _ in range(samples):
                    if head_only:
                        output = model._to_pose(model.heads[-1](features))
                    else:
                        output = model(x)
                    sampled.append(_eval_outputs(output)[:2])
            finally:
                for module in dropouts:
                    module.eval()
        positions = np.stack([s[0] for s in sampled]).astype(np.float64)
        quats = np.stack([s[1] for s in sampled]).astype(np.float64)
        if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(quats))):
            raise ModelError("the model predicted a non-finite pose (NaN or inf) with dropout on")
        mean_p, mean_q, cov = _sample_summary(positions, quats)
        parts["p"].append(mean_p)
        parts["q"].append(mean_q)
        parts["cov"].append(cov)
        parts["dp"].append(deterministic[0].astype(np.float64))
        parts["dq"].append(quat_canonical(quat_normalize(deterministic[1].astype(np.float64))))
        if len(deterministic) > 2:
            parts["lv"].append(_log_variance_6(deterministic[2], len(batch)))

    pending: list[np.ndarray] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for image in _resized_images(records, resize_shorter_px, progress):
            pending.append(center_crop(image, crop_hw))
            if len(pending) == batch_size:
                run_batch(_to_bchw(pending))
                pending = []
        if pending:
            run_batch(_to_bchw(pending))
    return McDropoutPrediction(
        position_m=np.concatenate(parts["p"]),
        quat_wxyz=quat_canonical(np.concatenate(parts["q"])),
        covariance=np.concatenate(parts["cov"]),
        deterministic_position_m=np.concatenate(parts["dp"]),
        deterministic_quat_wxyz=np.concatenate(parts["dq"]),
        deterministic_log_variance=np.concatenate(parts["lv"]) if parts["lv"] else None,
        samples=samples,
        head_only=head_only,
    )


def compare_uncertainties(head_variances: np.ndarray, mc_covariance: np.ndarray) -> dict:
    """How the head's per-frame sigmas relate to MC dropout's: Spearman rank correlation and the
    median ratio head / MC, for position (m) and rotation."""
    head = np.asarray(head_variances, dtype=np.float64)
    mc = np.asarray(mc_covariance, dtype=np.float64)
    result = {}
    for name, axes in (("position", slice(0, 3)), ("rotation", slice(3, 6))):
        head_sigma = np.sqrt(head[:, axes].mean(axis=1))
        mc_sigma = np.sqrt(np.trace(mc[:, axes, axes], axis1=1, axis2=2) / 3.0)
        result[name] = {
            "spearman_head_vs_mc_sigma": spearman(head_sigma, mc_sigma),
            "median_ratio_head_over_mc_sigma": float(
                np.median(head_sigma / np.maximum(mc_sigma, 1e-300))
            ),
        }
    return result


def plot_uncertainty(
    errors: np.ndarray, uncertainty: np.ndarray, path: Path, title: str = ""
) -> Path:
    """PNG: actual error against predicted sigma (``sqrt(trace / 3)``), position (m) and
    rotation (deg), log-log, with the 1/2/3-sigma lines of an isotropic Gaussian."""
    errors = np.asarray(errors, dtype=np.float64)
    covariance = _as_covariances(uncertainty, len(errors))
    fig = figure((11, 4.6))
    axes = fig.subplots(1, 2)
    for ax, block, scale, unit, name in (
        (axes[0], slice(0, 3), 1.0, "m", "position"),
        (axes[1], slice(3, 6), math.degrees(1.0), "deg", "rotation"),
    ):
        sigma = np.sqrt(np.trace(covariance[:, block, block], axis1=1, axis2=2) / 3.0) * scale
        error = np.linalg.norm(errors[:, block], axis=1) * scale
        ax.scatter(sigma, error, s=10, alpha=0.7, c="tab:blue", zorder=3)
        positive = np.concatenate([sigma[sigma > 0], error[error > 0]])
        low = float(positive.min()) / 2 if len(positive) else 1e-3
        high = float(positive.max()) * 2 if len(positive) else 1.0
        line = np.array([low, high])
        for k, style in zip(SIGMA_LEVELS, (":", "--", "-"), strict=True):
            ax.plot(line, k * line, style, color="0.4", linewidth=0.9, label=f"error = {k} sigma")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        rho = spearman(sigma, error)
        rho_text = f"{rho:.2f}" if rho is not None else "n/a"
        ax.set_title(f"{name}: Spearman {rho_text}")
        ax.set_xlabel(f"predicted sigma ({unit}, sqrt(trace/3))")
        ax.set_ylabel(f"actual error ({unit})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path, title)


# ------------------------------------------------------------------------------------ plots


def plot_trajectory(
    gt_position_m: np.ndarray,
    pred_position_m: np.ndarray,
    path: Path,
    title: str = "",
    *,
    pred_label: str = "prediction",
    extra: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Top view PNG: ground-truth and predicted centres, a line joining each pair; ``extra``
    (label -> centres (N,3)) adds more predictions of the same frames (e.g. refined beside the
    prior), each joined to its ground truth too.

    The view plane is spanned by the two principal axes of the ground-truth centres (the top
    view for a ground-level trajectory, whatever the dataset's up axis is).
    """
    from matplotlib.collections import LineCollection

    gt = np.asarray(gt_position_m, dtype=np.float64).reshape(-1, 3)
    pred = np.asarray(pred_position_m, dtype=np.float64).reshape(-1, 3)
    mean = gt.mean(axis=0)
    _, _, vt = np.linalg.svd(gt - mean, full_matrices=True)
    axes = vt[:2].T
    gt_2d, pred_2d = (gt - mean) @ axes, (pred - mean) @ axes
    fig = figure((7, 6))
    ax = fig.subplots()
    ax.add_collection(
        LineCollection(np.stack([gt_2d, pred_2d], axis=1), colors="0.6", linewidths=0.6)
    )
    ax.scatter(gt_2d[:, 0], gt_2d[:, 1], s=9, c="tab:green", label="ground truth", zorder=3)
    ax.scatter(pred_2d[:, 0], pred_2d[:, 1], s=9, c="tab:red", label=pred_label, zorder=3)
    colours = ("tab:blue", "tab:purple", "tab:orange")
    for (name, positions), colour in zip((extra or {}).items(), colours, strict=False):
        other_2d = (np.asarray(positions, dtype=np.float64).reshape(-1, 3) - mean) @ axes
        ax.add_collection(
            LineCollection(np.stack([gt_2d, other_2d], axis=1), colors=colour, linewidths=0.4)
        )
        ax.scatter(other_2d[:, 0], other_2d[:, 1], s=6, c=colour, label=name, zorder=4)
    ax.set_xlabel("principal axis 1 of ground-truth centres (m)")
    ax.set_ylabel("principal axis 2 (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title or "camera centres, top view")
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------ main


def _file_identity(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _checkpoint_data_config(ckpt: dict) -> tuple[int | None, tuple[int, int] | None]:
    """Resize / crop the checkpoint was trained with, where it records them."""
    for source in (ckpt, ckpt.get("extra") or {}):
        if not isinstance(source, dict):
            continue
        resize = source.get("resize_shorter")
        crop_hw = source.get("crop_hw") or source.get("input_hw")
        if resize is not None or crop_hw is not None:
            return (
                int(resize) if resize is not None else None,
                (int(crop_hw[0]), int(crop_hw[1])) if crop_hw is not None else None,
            )
    return None, None


def _write_predictions_csv(
    path: Path,
    records: Sequence[PoseRecord],
    position: np.ndarray,
    quat: np.ndarray,
    t_err: np.ndarray,
    r_err: np.ndarray,
    stddev: np.ndarray | None = None,
) -> None:
    """One row per image; with ``stddev`` (N,6) also the predicted standard deviations."""
    std_columns = ["std_x_m", "std_y_m", "std_z_m", "std_rx_rad", "std_ry_rad", "std_rz_rad"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["image", "gt_x_m", "gt_y_m", "gt_z_m", "gt_qw", "gt_qx", "gt_qy", "gt_qz"]
            + ["pred_x_m", "pred_y_m", "pred_z_m", "pred_qw", "pred_qx", "pred_qy", "pred_qz"]
            + ["translation_error_m", "rotation_error_deg"]
            + (std_columns if stddev is not None else [])
        )
        for i, record in enumerate(records):
            writer.writerow(
                [str(record.image_path)]
                + [f"{v:.9g}" for v in (*record.position_m, *record.quat_wxyz)]
                + [f"{v:.9g}" for v in (*position[i], *quat[i])]
                + [f"{t_err[i]:.9g}", f"{r_err[i]:.9g}"]
                + ([f"{v:.9g}" for v in stddev[i]] if stddev is not None else [])
            )


def main(
    dataset: str | Path,
    output: str | Path,
    *,
    split: str = "test",
    checkpoint: str | Path | None = None,
    onnx: str | Path | None = None,
    baseline: str | None = None,
    dense: bool = False,
    overwrite: bool = False,
    batch_size: int = 32,
    resize_shorter_px: int | None = None,
    crop_hw: tuple[int, int] | None = None,
    num_threads: int | None = None,
    progress: bool = True,
    mc_dropout: int = 0,
    mc_seed: int = 0,
    map_path: str | Path | None = None,
    intrinsics: str | Path | None = None,
) -> dict:
    """Evaluate one model (or the baseline) on ``split`` of ``dataset``; returns the summary.

    Exactly one of ``checkpoint``, ``onnx``, ``baseline`` ("nn") must be given. ``dense`` works
    with checkpoint and onnx. ``resize_shorter_px`` / ``crop_hw`` apply to checkpoints only
    (default: what the checkpoint records, else 256 / 224x224); an ONNX file carries its own.
    Writes summary.json, predictions.csv, trajectory.png and error_cdf.png into ``output``.

    Uncertainty (single centre crop only): a model with an uncertainty head (checkpoint or
    format 2 file) gets ``summary["uncertainty"]["head"]``, a :func:`calibration_report` of its
    predicted covariance against the errors, and ``uncertainty_head.png``. ``mc_dropout`` N > 1
    (checkpoint only) also samples N dropout passes per image (:func:`mc_dropout_predict`,
    seeded by ``mc_seed``): ``summary["uncertainty"]["mc_dropout"]`` calibrates the sample
    covariance against the errors of the sample mean, ``["agreement"]`` compares it with the
    head's, and ``uncertainty_mc_dropout.png`` plots it. The other numbers stay those of the
    deterministic prediction (dropout off), the one the node publishes.

    Refinement: with ``map_path`` (a map file of this dataset, ``posenet_train.map``) each
    prediction is the prior of the node's refinement (:func:`refine_poses`: the node's refiner
    and defaults, the dataset's intrinsics or the ``intrinsics`` JSON). The top-level numbers
    stay the prior's; ``summary["refinement"]`` (:func:`refinement_report`) holds the refined
    side, and ``refined_predictions.csv``, ``refined_error_cdf.png`` (prior vs refined) and
    ``refined_trajectory.png`` are written. A missing, corrupt or foreign map (another dataset,
    another version of it, another scene frame than the model file's) raises MapFileError
    before any prediction.
    """
    modes = {"checkpoint": checkpoint, "onnx": onnx, "baseline": baseline}
    chosen = [name for name, value in modes.items() if value is not None]
    if len(chosen) != 1:
        raise PoseNetTrainError(
            "choose exactly one of checkpoint, onnx, baseline; got"
            f" {', '.join(chosen) if chosen else 'none'}"
        )
    if split not in SPLITS:
        raise PoseNetTrainError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if baseline is not None and baseline not in BASELINES:
        raise PoseNetTrainError(
            f"unknown baseline {baseline!r}; expected one of {', '.join(BASELINES)}"
        )
    if baseline is not None and dense:
        raise PoseNetTrainError("dense evaluation applies to checkpoint and onnx, not a baseline")
    if onnx is not None and (resize_shorter_px is not None or crop_hw is not None):
        raise PoseNetTrainError(
            "resize/crop cannot be overridden for an ONNX model: its metadata defines them"
        )
    if batch_size < 1:
        raise PoseNetTrainError(f"batch_size must be >= 1, got {batch_size}")
    if mc_dropout < 0 or mc_dropout == 1:
        raise PoseNetTrainError(f"mc_dropout must be 0 (off) or >= 2 samples, got {mc_dropout}")
    if mc_dropout and checkpoint is None:
        raise PoseNetTrainError(
            "MC dropout samples the PyTorch model's dropout layers: it needs a checkpoint (an "
            "ONNX file has none)"
        )
    if mc_dropout and dense:
        raise PoseNetTrainError("MC dropout is measured on the centre crop; drop dense")
    for label, value in (("checkpoint", checkpoint), ("onnx", onnx)):
        if value is not None and not Path(value).is_file():
            raise PoseNetTrainError(f"{label} file not found: {value}")
    if intrinsics is not None and map_path is None:
        raise PoseNetTrainError("intrinsics are for refinement: give a map too (--map)")
    site_map = camera = None
    if map_path is not None:
        if baseline is not None or dense:
            raise PoseNetTrainError(
                "--map refines the node's prior: give --checkpoint or --onnx, without --dense "
                f"(got {'--baseline' if baseline is not None else '--dense'})"
            )
        site_map = load_refinement_map(map_path, dataset)
        camera = dataset_intrinsics(dataset, split, override=intrinsics)
    if num_threads:
        torch.set_num_threads(int(num_threads))

    output = Path(output)
    summary_path = output / "summary.json"
    config: dict = {"dataset": str(dataset), "split": split, "mode": chosen[0], "dense": dense}
    if checkpoint is not None:
        config["checkpoint"] = _file_identity(Path(checkpoint))
        config["resize_shorter"] = resize_shorter_px
        config["crop_hw"] = list(crop_hw) if crop_hw is not None else None
    elif onnx is not None:
        config["onnx"] = _file_identity(Path(onnx))
    else:
        config["baseline"] = baseline
    if mc_dropout:  # only when used, so earlier evaluations' configurations still match
        config["mc_dropout"] = {"samples": int(mc_dropout), "seed": int(mc_seed)}
    if site_map is not None:  # likewise
        config["map"] = {
            **_file_identity(Path(map_path)),
            # The prior limits follow the model file (auto, as the node's default), which the
            # configuration already names.
            "refiner": {
                **dataclasses.asdict(RefinerConfig()),
                "max_prior_distance_m": "auto",
                "max_prior_angle_deg": "auto",
            },
            "intrinsics": camera[0].to_dict(),
        }
    if summary_path.is_file() and not overwrite:
        try:
            previous = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PoseNetTrainError(
                f"{summary_path} exists but cannot be read ({exc}); pass overwrite"
            ) from exc
        if previous.get("config") == config:
            print(f"reusing the existing evaluation in {output} (pass --overwrite to redo it)")
            return previous
        raise PoseNetTrainError(
            f"{output} holds an evaluation with a different configuration; pass --overwrite"
            " or choose another --output"
        )

    records = load_split(dataset, split)
    extra: dict = {}
    head_log_variance = None
    mc = None
    model_median_error = None
    if checkpoint is not None:
        from posenet_train.checkpoint import model_from_checkpoint

        model, ckpt = model_from_checkpoint(Path(checkpoint))
        ckpt_resize, ckpt_crop = _checkpoint_data_config(ckpt if isinstance(ckpt, dict) else {})
        resize = resize_shorter_px or ckpt_resize or DEFAULT_RESIZE
        crop_size = tuple(crop_hw or ckpt_crop or DEFAULT_CROP_HW)
        if mc_dropout:
            mc = mc_dropout_predict(
                model,
                records,
                mc_dropout,
                batch_size=batch_size,
                resize_shorter_px=resize,
                crop_hw=crop_size,
                seed=mc_seed,
                progress=progress,
            )
            position, quat = mc.deterministic_position_m, mc.deterministic_quat_wxyz
            head_log_variance = mc.deterministic_log_variance
        else:
            position, quat, head_log_variance = predict(
                model,
                records,
                dense=dense,
                batch_size=batch_size,
                resize_shorter_px=resize,
                crop_hw=crop_size,
                progress=progress,
                with_uncertainty=True,
            )
        extra = {"resize_shorter": resize, "crop_hw": list(crop_size)}
        # What export will write as the model file's posenet.median_error.
        model_median_error = format_median_error(
            (ckpt.get("extra") or {}).get("val") if isinstance(ckpt, dict) else None
        )
    elif onnx is not None:
        (position, quat, head_log_variance), contract = predict_onnx(
            onnx,
            records,
            dense=dense,
            batch_size=batch_size,
            num_threads=num_threads,
            progress=progress,
            with_uncertainty=True,
        )
        extra = {"resize_shorter": contract.resize_shorter, "crop_hw": list(contract.input_hw)}
        model_median_error = contract.median_error
        if site_map is not None:  # the node's start-up check of its map against its model
            check_compatible(
                site_map,
                scene_frame=contract.scene_frame or None,
                dataset=contract.dataset,
                dataset_fingerprint=contract.metadata.get(KEY_DATASET_FINGERPRINT) or None,
                where=f"map file {map_path} with model {onnx}",
            )
    else:
        train_records = load_split(dataset, "train")
        position, quat, index = nearest_neighbour_baseline(
            train_records, records, progress=progress
        )
        extra = {"descriptor_wh": list(NN_DESCRIPTOR_WH), "database_size": len(train_records)}

    t_err, r_err = pose_errors(
        position,
        quat,
        np.stack([r.position_m for r in records]),
        np.stack([r.quat_wxyz for r in records]),
    )
    summary = summarize(t_err, r_err)
    output.mkdir(parents=True, exist_ok=True)
    mode_label = f"{baseline} baseline" if baseline is not None else chosen[0]
    label = f"{mode_label}{' dense' if dense else ''} on {split} of {Path(str(dataset)).name}"
    title = (
        f"{label}: median {summary['median_translation_m']:.3f} m,"
        f" {summary['median_rotation_deg']:.2f} deg"
    )
    head_variance = np.exp(head_log_variance) if head_log_variance is not None else None
    _write_predictions_csv(
        output / "predictions.csv",
        records,
        position,
        quat,
        t_err,
        r_err,
        np.sqrt(head_variance) if head_variance is not None else None,
    )
    plot_trajectory(
        np.stack([r.position_m for r in records]), position, output / "trajectory.png", title
    )
    plot_error_cdfs(t_err, r_err, output / "error_cdf.png", title)
    files = {
        "predictions": "predictions.csv",
        "trajectory_plot": "trajectory.png",
        "error_cdf_plot": "error_cdf.png",
    }
    gt_position = np.stack([r.position_m for r in records])
    gt_quat = np.stack([r.quat_wxyz for r in records])
    uncertainty: dict = {}
    if head_variance is not None:
        errors = pose_error_vectors(position, quat, gt_position, gt_quat)
        uncertainty["head"] = calibration_report(errors, head_variance)
        files["uncertainty_head_plot"] = "uncertainty_head.png"
        plot_uncertainty(
            errors,
            head_variance,
            output / files["uncertainty_head_plot"],
            f"{label}: predicted sigma (uncertainty head) vs error",
        )
    if mc is not None:
        mc_errors = pose_error_vectors(mc.position_m, mc.quat_wxyz, gt_position, gt_quat)
        uncertainty["mc_dropout"] = {
            "samples": mc.samples,
            "seed": int(mc_seed),
            "backbone_sampled": not mc.head_only,
            **calibration_report(mc_errors, mc.covariance),
        }
        if head_variance is not None:
            uncertainty["agreement"] = compare_uncertainties(head_variance, mc.covariance)
        files["uncertainty_mc_dropout_plot"] = "uncertainty_mc_dropout.png"
        plot_uncertainty(
            mc_errors,
            mc.covariance,
            output / files["uncertainty_mc_dropout_plot"],
            f"{label}: MC dropout ({mc.samples} samples) sigma vs error of the sample mean",
        )
    refinement: dict = {}
    if site_map is not None:
        refiner_config = with_auto_prior_limits(RefinerConfig(), model_median_error)
        refined = refine_poses(
            site_map, records, position, quat, camera[0], config=refiner_config, progress=progress
        )
        ref_t, ref_r = pose_errors(refined.position_m, refined.quat_wxyz, gt_position, gt_quat)
        refinement = {
            "map": str(map_path),
            "map_summary": site_map.summary(),
            "intrinsics_source": camera[1],
            "prior_limits": {
                "model_median_error": model_median_error,
                "max_prior_distance_m": refiner_config.max_prior_distance_m,
                "max_prior_angle_deg": refiner_config.max_prior_angle_deg,
            },
            **refinement_report(refined, t_err, r_err, ref_t, ref_r),
        }
        _write_refined_csv(
            output / "refined_predictions.csv", records, refined, ref_t, ref_r, t_err, r_err
        )
        published = refinement["published"]
        refined_title = (
            f"{label}: prior {summary['median_translation_m']:.3g} m, "
            f"{summary['median_rotation_deg']:.3g} deg; refined ({refinement['refined_share']:.0%}"
            f" of frames) {published['median_translation_m']:.3g} m, "
            f"{published['median_rotation_deg']:.3g} deg"
        )
        plot_error_cdf_curves(
            {"prior": (t_err, r_err), "refined, else prior (the node's output)": (ref_t, ref_r)},
            output / "refined_error_cdf.png",
            refined_title,
            log_x=True,
        )
        plot_trajectory(
            gt_position,
            position,
            output / "refined_trajectory.png",
            refined_title,
            pred_label="prior",
            extra={"refined, else prior": refined.position_m},
        )
        files["refined_predictions"] = "refined_predictions.csv"
        files["refined_error_cdf_plot"] = "refined_error_cdf.png"
        files["refined_trajectory_plot"] = "refined_trajectory.png"
    result = {
        "config": config,
        **summary,
        **extra,
        **({"uncertainty": uncertainty} if uncertainty else {}),
        **({"refinement": refinement} if refinement else {}),
        "files": files,
    }
    tmp_path = summary_path.with_name(summary_path.name + ".tmp")
    tmp_path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp_path, summary_path)
    return result


def _crop_arg(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected 'H,W' or 'S' positive integers, got {text!r}")
    return values[0], values[1]


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m posenet_train.evaluate",
        description="Evaluate a PoseNet checkpoint, an exported ONNX model file, or the"
        " nearest-neighbour baseline on a dataset split; writes summary.json, predictions.csv"
        " and plots.",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="dataset folder (Cambridge, 7-Scenes or COLMAP; auto-detected) or FORMAT:PATH",
    )
    parser.add_argument(
        "--split", default="test", choices=SPLITS, help="split to evaluate (default: test)"
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--checkpoint", type=Path, help="PyTorch checkpoint written by train.py")
    mode.add_argument(
        "--onnx",
        type=Path,
        help="exported model file; preprocessed from its posenet.* metadata, as the node does",
    )
    mode.add_argument(
        "--baseline",
        choices=BASELINES,
        help="'nn': nearest train image by 32x24 greyscale thumbnail similarity (no network)",
    )
    parser.add_argument(
        "--dense",
        action="store_true",
        help="average predictions over 128 uniformly spaced crops instead of the centre crop",
    )
    parser.add_argument(
        "--output", required=True, type=Path, help="folder for summary.json, CSV and plots"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="redo an evaluation that already exists there"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="images per batch (default 32)"
    )
    parser.add_argument(
        "--resize",
        type=positive_int,
        default=None,
        help="checkpoint only: shorter side before cropping (default: from checkpoint, else 256)",
    )
    parser.add_argument(
        "--crop",
        type=_crop_arg,
        default=None,
        help="checkpoint only: crop 'H,W' or 'S' (default: from checkpoint, else 224,224)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads for torch / ONNX Runtime (default: library default)",
    )
    parser.add_argument(
        "--mc-dropout",
        type=_mc_samples_arg,
        default=0,
        metavar="N",
        help="checkpoint only: also run N >= 2 forward passes per image with dropout active "
        "(MC dropout, Bayesian PoseNet) and calibrate their sample covariance; compared with "
        "the uncertainty head when the model has one (default 0: off)",
    )
    parser.add_argument(
        "--mc-seed", type=int, default=0, help="random seed of the MC dropout samples (0)"
    )
    parser.add_argument(
        "--map",
        dest="map_path",
        type=Path,
        default=None,
        metavar="MAP",
        help="map file of this dataset (posenet_train.map): also refine each prediction against "
        "it exactly as the node does (its refiner and default refine.* settings, the dataset's "
        "intrinsics) and report prior and refined side by side, with refined_*.png plots",
    )
    parser.add_argument(
        "--intrinsics",
        type=Path,
        default=None,
        help="with --map: JSON with width, height, fx, fy, cx, cy [, distortion] (pixels) of the "
        "images; default: the dataset's own (COLMAP camera, intrinsics.json, dino_par.txt, "
        "7-Scenes' published calibration)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _mc_samples_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value != 0 and value < 2:
        raise argparse.ArgumentTypeError(f"expected 0 (off) or an integer >= 2, got {text!r}")
    return value


def _print_calibration(name: str, report: dict) -> None:
    ideal = report["ideal"]
    for block in ("position", "rotation"):
        r = report[block]
        rho = r["spearman_sigma_vs_error"]
        print(
            f"uncertainty {name} {block}: within 1/2/3 sigma (3-D) "
            + "/".join(f"{100 * v:.1f}" for v in r["share_within_sigma_mahalanobis"])
            + " % (ideal "
            + "/".join(f"{100 * v:.1f}" for v in ideal["mahalanobis_3d"])
            + "), per axis "
            + "/".join(f"{100 * v:.1f}" for v in r["share_within_sigma_per_axis"])
            + " % (ideal "
            + "/".join(f"{100 * v:.1f}" for v in ideal["per_axis"])
            + f"), Spearman(sigma, error) {'n/a' if rho is None else f'{rho:.2f}'}, median "
            f"sigma {r['median_sigma']:.4g} {r['unit']} vs error {r['median_error']:.4g} "
            f"{r['unit']}, variance scale (median) {r['variance_scale_median']:.3g}"
        )


def _statistics_row(name: str, s: dict) -> str:
    if not s["count"]:
        return f"| {name} | 0 |" + " - |" * (2 + len(THRESHOLDS))
    shares = " | ".join(f"{100 * s[f'share_{t}']:.1f} %" for t, _, _ in THRESHOLDS)
    return (
        f"| {name} | {s['count']} | {s['median_translation_m']:.4f} | "
        f"{s['median_rotation_deg']:.3f} | {shares} |"
    )


def print_refinement(result: dict) -> None:
    """Prior and refined side by side (a Markdown table), refined share and failures."""
    r = result["refinement"]
    thresholds = " | ".join(
        f"<= {m * 100:g} cm & {deg:g} deg" if m < 1 else f"<= {m:g} m & {deg:g} deg"
        for _, m, deg in THRESHOLDS
    )
    print(f"\n| pose | frames | median m | median deg | {thresholds} |")
    print("|---" * (4 + len(THRESHOLDS)) + "|")
    print(_statistics_row("prior", result))
    print(_statistics_row("refined, else prior (the node's output)", r["published"]))
    print(_statistics_row("refined frames only", r["refined_only"]))
    print(_statistics_row("their prior", r["prior_on_refined"]))
    failures = {k: v for k, v in r["failures"].items() if v}
    count = result["count"]
    inliers = r["median_inliers"]
    print(
        f"refined {r['refined_count']} of {count} frames ({100 * r['refined_share']:.1f} %); "
        f"not refined: {', '.join(f'{k} {v}' for k, v in failures.items()) or 'none'}; "
        f"median {'-' if inliers is None else f'{inliers:.0f}'} inliers, "
        f"{r['median_refine_ms']:.0f} ms per refinement; map {r['map']} ({r['map_summary']}), "
        f"intrinsics from {r['intrinsics_source']}"
    )
    limits = r.get("prior_limits")
    if limits:
        print(
            f"prior limits {limits['max_prior_distance_m']:.3g} m / "
            f"{limits['max_prior_angle_deg']:.3g} deg (auto, as the node: "
            f"{AUTO_FACTOR:g}x the model's median error {limits['model_median_error']!r}, "
            "at least 1 m / 20 deg)"
        )


def _print_summary(result: dict) -> None:
    keys = ["count", "median_translation_m", "median_rotation_deg", "mean_translation_m"]
    keys += ["mean_rotation_deg"] + [f"share_{name}" for name, _, _ in THRESHOLDS]
    for key in keys:
        value = result[key]
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    for name in ("head", "mc_dropout"):
        if name in result.get("uncertainty", {}):
            _print_calibration(name, result["uncertainty"][name])
    if "refinement" in result:
        print_refinement(result)


def cli(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the summary, returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def report(result: dict) -> None:
        _print_summary(result)
        print(f"written to {Path(args.output) / 'summary.json'}")

    status = run_main(
        parser.prog,
        main,
        args,
        then=report,
        handled=("resize", "crop", "threads", "quiet"),
        resize_shorter_px=args.resize,
        crop_hw=args.crop,
        num_threads=args.threads,
        progress=not args.quiet,
    )
    if status:
        parser.exit(status)  # a usage-style exit, as argparse's own errors
    return status


if __name__ == "__main__":
    sys.exit(cli())
