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

Example::

    python -m posenet_train.evaluate --dataset ../shared/datasets/middlebury_dino \\
        --split test --baseline nn --output runs/dino_nn
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from posenet_train.data import read_rgb
from posenet_train.datasets import SPLITS, PoseRecord, load_split
from posenet_train.errors import ModelError, PoseNetTrainError
from posenet_train.geometry import average_quaternions, quat_normalize, rotation_error_deg
from posenet_train.preprocess import (
    DENSE_CROPS,
    center_crop,
    crop,
    dense_crop_offsets,
    resize_shorter,
)

__all__ = [
    "BASELINES",
    "NN_DESCRIPTOR_WH",
    "THRESHOLDS",
    "OnnxContract",
    "cli",
    "global_descriptor",
    "main",
    "nearest_neighbour_baseline",
    "plot_error_cdfs",
    "plot_trajectory",
    "pose_errors",
    "predict",
    "predict_onnx",
    "predict_with",
    "read_onnx_contract",
    "summarize",
]

# (name, translation threshold m, rotation threshold deg): a frame counts when both errors are
# within (<=) the thresholds.
THRESHOLDS: tuple[tuple[str, float, float], ...] = (
    ("5cm_5deg", 0.05, 5.0),
    ("25cm_2deg", 0.25, 2.0),
    ("50cm_5deg", 0.50, 5.0),
    ("5m_10deg", 5.0, 10.0),
)
BASELINES = ("nn",)
NN_DESCRIPTOR_WH = (32, 24)
DEFAULT_RESIZE = 256
DEFAULT_CROP_HW = (224, 224)
ONNX_FORMAT_VERSIONS = ("1",)
_IMAGE_CHUNK = 32  # images decoded ahead in threads; bounds memory on large datasets

# forward(image_BCHW float32 0..1) -> (position_m [B,3], quat_wxyz [B,4])
Forward = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------- errors and summary


def pose_errors(
    pred_position_m: np.ndarray,
    pred_quat_wxyz: np.ndarray,
    gt_position_m: np.ndarray,
    gt_quat_wxyz: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame ``(translation_error_m (N,), rotation_error_deg (N,))``.

    Translation: Euclidean distance of the camera centres. Rotation: angle of the relative
    rotation, sign-invariant (q and -q give 0 degrees).
    """
    pred_p = np.asarray(pred_position_m, dtype=np.float64).reshape(-1, 3)
    gt_p = np.asarray(gt_position_m, dtype=np.float64).reshape(-1, 3)
    pred_q = np.asarray(pred_quat_wxyz, dtype=np.float64).reshape(-1, 4)
    gt_q = np.asarray(gt_quat_wxyz, dtype=np.float64).reshape(-1, 4)
    if not len(pred_p) == len(gt_p) == len(pred_q) == len(gt_q):
        raise PoseNetTrainError(
            f"prediction/ground-truth counts differ: positions {len(pred_p)} vs {len(gt_p)},"
            f" quaternions {len(pred_q)} vs {len(gt_q)}"
        )
    return np.linalg.norm(pred_p - gt_p, axis=1), rotation_error_deg(pred_q, gt_q)


def summarize(translation_error_m: np.ndarray, rotation_error_deg: np.ndarray) -> dict:
    """Summary statistics of per-frame errors.

    Keys: ``count``, ``median_translation_m``, ``mean_translation_m``, ``median_rotation_deg``,
    ``mean_rotation_deg`` and, for each of :data:`THRESHOLDS`, ``share_<name>`` (e.g.
    ``share_5cm_5deg``): the fraction (0..1) of frames with both errors within the thresholds.
    """
    t = np.asarray(translation_error_m, dtype=np.float64).reshape(-1)
    r = np.asarray(rotation_error_deg, dtype=np.float64).reshape(-1)
    if len(t) != len(r) or len(t) == 0:
        raise PoseNetTrainError(
            f"need the same non-zero number of translation and rotation errors, got {len(t)}"
            f" and {len(r)}"
        )
    summary: dict = {
        "count": len(t),
        "median_translation_m": float(np.median(t)),
        "mean_translation_m": float(np.mean(t)),
        "median_rotation_deg": float(np.median(r)),
        "mean_rotation_deg": float(np.mean(r)),
    }
    for name, max_m, max_deg in THRESHOLDS:
        summary[f"share_{name}"] = float(np.mean((t <= max_m) & (r <= max_deg)))
    return summary


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
    # Division by 255 in float32, as posenet_ros.preprocess.to_input_tensor does.
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
) -> tuple[np.ndarray, np.ndarray]:
    """Predict every record's pose with ``forward`` (the runtime-independent part of predict).

    Single crop: resize the shorter side then centre-crop (the node's algorithm). Dense: 128
    uniformly spaced crops of the resized image, positions averaged, quaternions averaged by the
    eigenvector method. Returns ``(position_m (N,3), quat_wxyz (N,4))`` float64, unit w >= 0.
    """
    if batch_size < 1:
        raise PoseNetTrainError(f"batch_size must be >= 1, got {batch_size}")
    if not records:
        raise PoseNetTrainError("no images to predict")
    crop_hw = (int(crop_hw[0]), int(crop_hw[1]))
    positions: list[np.ndarray] = []
    quats: list[np.ndarray] = []

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        position, quat = forward(batch)
        position = np.asarray(position, dtype=np.float64).reshape(len(batch), 3)
        quat = np.asarray(quat, dtype=np.float64).reshape(len(batch), 4)
        if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quat))):
            raise ModelError("the model predicted a non-finite pose (NaN or inf)")
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
    return np.concatenate(positions), quat_all


def predict(
    model: torch.nn.Module,
    records: Sequence[PoseRecord],
    *,
    dense: bool = False,
    batch_size: int = 32,
    resize_shorter_px: int = DEFAULT_RESIZE,
    crop_hw: tuple[int, int] = DEFAULT_CROP_HW,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Predict poses with a PyTorch model obeying the eval-mode contract.

    The model is put in eval mode; ``model(image_BCHW)`` must return ``(position_m [B,3],
    quat_wxyz [B,4])``. Returns ``(position_m (N,3), quat_wxyz (N,4))`` numpy float64.
    """
    model.eval()
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")

    def forward(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            output = model(torch.from_numpy(batch).to(device))
        if not isinstance(output, (tuple, list)) or len(output) != 2:
            raise ModelError(
                "in eval mode the model must return (position_m [N,3], quat_wxyz [N,4]),"
                f" got {type(output).__name__}"
            )
        return output[0].float().cpu().numpy(), output[1].float().cpu().numpy()

    return predict_with(
        forward,
        records,
        dense=dense,
        batch_size=batch_size,
        resize_shorter_px=resize_shorter_px,
        crop_hw=crop_hw,
        progress=progress,
    )


# ----------------------------------------------------------------------------------- ONNX


@dataclass(frozen=True)
class OnnxContract:
    """What evaluation needs from a model file's ``posenet.*`` metadata."""

    input_name: str
    position_output: str
    orientation_output: str
    input_hw: tuple[int, int]
    resize_shorter: int


def _positive_int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def read_onnx_contract(metadata: dict[str, str], path: str | Path = "<memory>") -> OnnxContract:
    """Parse the ``posenet.*`` metadata with the node's rules; ModelError names key and value."""
    required = ("posenet.format", "posenet.input", "posenet.outputs", "posenet.input_size")
    missing = [key for key in (*required, "posenet.resize") if key not in metadata]
    if missing:
        raise ModelError(
            f"{path}: model file metadata lacks {', '.join(missing)}; export the model with"
            " `python -m posenet_train.export`"
        )
    version = metadata["posenet.format"].strip()
    if version not in ONNX_FORMAT_VERSIONS:
        raise ModelError(
            f"{path}: posenet.format {version!r} is not supported; expected one of"
            f" {', '.join(ONNX_FORMAT_VERSIONS)}"
        )
    input_name = metadata["posenet.input"].strip()
    if not input_name:
        raise ModelError(f"{path}: posenet.input is empty; expected the input tensor's name")
    outputs = [name.strip() for name in metadata["posenet.outputs"].split(",")]
    if len(outputs) != 2 or not all(outputs) or outputs[0] == outputs[1]:
        raise ModelError(
            f"{path}: posenet.outputs {metadata['posenet.outputs']!r} must be two different"
            " comma-separated names 'position,orientation'"
        )
    size = [_positive_int(part) for part in metadata["posenet.input_size"].split(",")]
    if len(size) != 2 or None in size:
        raise ModelError(
            f"{path}: posenet.input_size {metadata['posenet.input_size']!r} must be 'H,W',"
            " two positive integers"
        )
    input_hw = (int(size[0]), int(size[1]))
    resize = _positive_int(metadata["posenet.resize"])
    if resize is None or resize < min(input_hw):
        raise ModelError(
            f"{path}: posenet.resize {metadata['posenet.resize']!r} must be a positive integer"
            f" >= min(H, W) = {min(input_hw)}"
        )
    return OnnxContract(input_name, outputs[0], outputs[1], input_hw, resize)


def predict_onnx(
    model_path: str | Path,
    records: Sequence[PoseRecord],
    *,
    dense: bool = False,
    batch_size: int = 32,
    num_threads: int | None = None,
    progress: bool = False,
) -> tuple[tuple[np.ndarray, np.ndarray], OnnxContract]:
    """Predict poses with an ONNX model file the way the node does (ONNX Runtime, CPU).

    Resize and crop come from the file's metadata. A graph with a fixed batch size gets batches
    of exactly that size (the last one padded). Returns ``((position_m, quat_wxyz), contract)``.
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
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
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
    for name in (contract.position_output, contract.orientation_output):
        if name not in output_names:
            raise ModelError(
                f"{model_path}: posenet.outputs names {name!r}, but the graph's outputs are"
                f" {', '.join(sorted(output_names))}"
            )
    fixed_batch = inputs[contract.input_name].shape[0]
    fixed_batch = fixed_batch if isinstance(fixed_batch, int) and fixed_batch > 0 else None

    def forward(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = len(batch)
        if fixed_batch is not None and count != fixed_batch:
            outs = [
                forward_fixed(batch[i : i + fixed_batch]) for i in range(0, count, fixed_batch)
            ]
            return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
        return run(batch)

    def forward_fixed(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = len(batch)
        if count < fixed_batch:
            padding = np.repeat(batch[-1:], fixed_batch - count, axis=0)
            batch = np.concatenate([batch, padding])
        position, quat = run(batch)
        return position[:count], quat[:count]

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        position, quat = session.run(
            [contract.position_output, contract.orientation_output],
            {contract.input_name: np.ascontiguousarray(batch, dtype=np.float32)},
        )
        return position, quat

    prediction = predict_with(
        forward,
        records,
        dense=dense,
        batch_size=batch_size,
        resize_shorter_px=contract.resize_shorter,
        crop_hw=contract.input_hw,
        progress=progress,
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


# ------------------------------------------------------------------------------------ plots


def plot_trajectory(
    gt_position_m: np.ndarray, pred_position_m: np.ndarray, path: Path, title: str = ""
) -> Path:
    """Top view PNG: ground-truth and predicted centres, a line joining each pair.

    The view plane is spanned by the two principal axes of the ground-truth centres (the top
    view for a ground-level trajectory, whatever the dataset's up axis is).
    """
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure  # Figure renders with Agg; no pyplot, no display

    gt = np.asarray(gt_position_m, dtype=np.float64).reshape(-1, 3)
    pred = np.asarray(pred_position_m, dtype=np.float64).reshape(-1, 3)
    mean = gt.mean(axis=0)
    _, _, vt = np.linalg.svd(gt - mean, full_matrices=True)
    axes = vt[:2].T
    gt_2d, pred_2d = (gt - mean) @ axes, (pred - mean) @ axes
    fig = Figure(figsize=(7, 6), dpi=110)
    ax = fig.subplots()
    ax.add_collection(
        LineCollection(np.stack([gt_2d, pred_2d], axis=1), colors="0.6", linewidths=0.6)
    )
    ax.scatter(gt_2d[:, 0], gt_2d[:, 1], s=9, c="tab:green", label="ground truth", zorder=3)
    ax.scatter(pred_2d[:, 0], pred_2d[:, 1], s=9, c="tab:red", label="prediction", zorder=3)
    ax.set_xlabel("principal axis 1 of ground-truth centres (m)")
    ax.set_ylabel("principal axis 2 (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title or "camera centres, top view")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_error_cdfs(
    translation_error_m: np.ndarray, rotation_error_deg: np.ndarray, path: Path, title: str = ""
) -> Path:
    """PNG with the cumulative distributions of translation and rotation errors."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=110)
    ax_t, ax_r = fig.subplots(1, 2)
    for ax, errors, label in (
        (ax_t, translation_error_m, "translation error (m)"),
        (ax_r, rotation_error_deg, "rotation error (deg)"),
    ):
        values = np.sort(np.asarray(errors, dtype=np.float64).reshape(-1))
        fractions = np.arange(1, len(values) + 1) / len(values)
        ax.step(values, fractions, where="post")
        ax.axvline(float(np.median(values)), color="0.5", linestyle="--", linewidth=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of frames")
        ax.set_ylim(0.0, 1.0)
        ax.set_xlim(left=0.0)
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


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
) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["image", "gt_x_m", "gt_y_m", "gt_z_m", "gt_qw", "gt_qx", "gt_qy", "gt_qz"]
            + ["pred_x_m", "pred_y_m", "pred_z_m", "pred_qw", "pred_qx", "pred_qy", "pred_qz"]
            + ["translation_error_m", "rotation_error_deg"]
        )
        for i, record in enumerate(records):
            writer.writerow(
                [str(record.image_path)]
                + [f"{v:.9g}" for v in (*record.position_m, *record.quat_wxyz)]
                + [f"{v:.9g}" for v in (*position[i], *quat[i])]
                + [f"{t_err[i]:.9g}", f"{r_err[i]:.9g}"]
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
) -> dict:
    """Evaluate one model (or the baseline) on ``split`` of ``dataset``; returns the summary.

    Exactly one of ``checkpoint``, ``onnx``, ``baseline`` ("nn") must be given. ``dense`` works
    with checkpoint and onnx. ``resize_shorter_px`` / ``crop_hw`` apply to checkpoints only
    (default: what the checkpoint records, else 256 / 224x224); an ONNX file carries its own.
    Writes summary.json, predictions.csv, trajectory.png and error_cdf.png into ``output``.
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
    for label, value in (("checkpoint", checkpoint), ("onnx", onnx)):
        if value is not None and not Path(value).is_file():
            raise PoseNetTrainError(f"{label} file not found: {value}")
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
    if checkpoint is not None:
        from posenet_train.checkpoint import model_from_checkpoint

        model, ckpt = model_from_checkpoint(Path(checkpoint))
        ckpt_resize, ckpt_crop = _checkpoint_data_config(ckpt if isinstance(ckpt, dict) else {})
        resize = resize_shorter_px or ckpt_resize or DEFAULT_RESIZE
        crop_size = tuple(crop_hw or ckpt_crop or DEFAULT_CROP_HW)
        position, quat = predict(
            model,
            records,
            dense=dense,
            batch_size=batch_size,
            resize_shorter_px=resize,
            crop_hw=crop_size,
            progress=progress,
        )
        extra = {"resize_shorter": resize, "crop_hw": list(crop_size)}
    elif onnx is not None:
        (position, quat), contract = predict_onnx(
            onnx,
            records,
            dense=dense,
            batch_size=batch_size,
            num_threads=num_threads,
            progress=progress,
        )
        extra = {"resize_shorter": contract.resize_shorter, "crop_hw": list(contract.input_hw)}
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
    _write_predictions_csv(output / "predictions.csv", records, position, quat, t_err, r_err)
    plot_trajectory(
        np.stack([r.position_m for r in records]), position, output / "trajectory.png", title
    )
    plot_error_cdfs(t_err, r_err, output / "error_cdf.png", title)
    result = {
        "config": config,
        **summary,
        **extra,
        "files": {
            "predictions": "predictions.csv",
            "trajectory_plot": "trajectory.png",
            "error_cdf_plot": "error_cdf.png",
        },
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


def _positive_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


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
        "--batch-size", type=_positive_int_arg, default=32, help="images per batch (default 32)"
    )
    parser.add_argument(
        "--resize",
        type=_positive_int_arg,
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
        type=_positive_int_arg,
        default=None,
        help="CPU threads for torch / ONNX Runtime (default: library default)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def cli(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the summary, returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = main(
            args.dataset,
            args.output,
            split=args.split,
            checkpoint=args.checkpoint,
            onnx=args.onnx,
            baseline=args.baseline,
            dense=args.dense,
            overwrite=args.overwrite,
            batch_size=args.batch_size,
            resize_shorter_px=args.resize,
            crop_hw=args.crop,
            num_threads=args.threads,
            progress=not args.quiet,
        )
    except PoseNetTrainError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    keys = ["count", "median_translation_m", "median_rotation_deg", "mean_translation_m"]
    keys += ["mean_rotation_deg"] + [f"share_{name}" for name, _, _ in THRESHOLDS]
    for key in keys:
        value = result[key]
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    print(f"written to {Path(args.output) / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
