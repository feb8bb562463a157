"""Train a pose regressor on a dataset split and write checkpoints, a CSV log and TensorBoard logs.

Example (EfficientNet-Lite0 with ImageNet weights, the defaults' network)::

    python -m posenet_train.train --dataset ../shared/datasets/middlebury_dino --output runs/dino

The network input follows the dataset's camera unless ``--resize``/``--crop`` are given
(:mod:`posenet_train.input_geometry`): the whole frame at shorter side 128, the long side by the
aspect ratio (dino's 640x480 -> 128x168, a 960x320 camera -> 128x384), or a square crop when the
set holds both portrait and landscape images. A crop that does not fit an image is refused
before training, naming the ``--resize`` that would fit.

The schedule is counted in optimizer steps, not epochs: unless ``--batch-size`` is given, the
batch is the largest (4..16) that makes at least ``--min-steps-per-epoch`` (8) steps per epoch,
and unless ``--epochs`` is given the run lasts enough epochs for ``--steps`` (2500) optimizer
steps, and at least ``--min-epochs`` (30). 273 training images train at batch 16 for 148 epochs,
39 at batch 4 for 278 epochs (rather than 150 steps of one 32-image batch per epoch), 4800 at
batch 16 for 30 epochs. The derived schedule is printed at the start.

Training images are augmented by a random turn of the camera about its centre
(:mod:`posenet_train.view_jitter`; ``--view-jitter`` pan/tilt as a fraction of the field of view,
with the dataset's intrinsics, and ``--roll-jitter-deg``): the image is warped by the rotation's
homography and the label turned with it, exactly. Off by default (it helps a narrow-FOV object
set and costs a wide forward drive its rotation accuracy: BENCHMARKS.md); with
``--frozen-blocks`` any jitter means the trunk's output is computed every step instead of cached.
Validation and evaluation never see it.

What ends up in ``--output``:

* ``last.pt`` after every epoch and ``best.pt`` whenever the validation score improves (both
  written atomically; see :mod:`posenet_train.checkpoint`). The validation score is
  ``median_translation_m / position_scale + radians(median_rotation_deg)`` on the test split
  (position_scale: the RMS spread of the training camera centres), so both errors count in
  comparable units;
* ``log.csv``: one row per epoch (epoch, step, lr, loss parts, learned weights, validation
  medians and score, times);
* ``tensorboard/``: per-step losses and lr, per-epoch validation (``tensorboard --logdir``);
* ``config.json``: the options of the run.

An existing run is not overwritten: pass ``--resume`` (or ``--resume auto``) to continue it from
``last.pt`` or ``--overwrite`` to start again. A resumed run continues exactly: weights,
optimizer, scheduler, learned loss weights, the global step and the torch / numpy / Python RNG
states of every rank are restored, and each epoch's shuffling and worker seeds derive from
``(seed, epoch, rank)``; resuming after epoch k gives the same weights as not stopping. On resume,
the run's saved options apply; options given again must match them, except ``--epochs`` (to
train longer), ``--val-every``, ``--workers``, ``--threads``, ``--max-steps``, ``--device`` and
``--channels-last``.

Quantisation-aware fine-tuning (``--qat-from RUN/last.pt``, issue 18): a new run from that
checkpoint's weights with INT8 simulated (:mod:`posenet_train.qat`), for an INT8 file that keeps
the accuracy. Options not given are the source run's (dataset, input, loss, augmentation,
``--frozen-blocks``), except the schedule: ``QAT_STEPS`` optimizer steps at ``QAT_LR_FACTOR``
times its learning rate. Batch norm stays frozen; the validation medians are those of the
simulated INT8 model. Export and quantise its ``last.pt`` as usual (``quantize --reference`` with
the source's FP32 file); its weights in FP32 are worse than the source's.

Multi-process data-parallel training: ``torchrun --nproc_per_node=N -m posenet_train.train ...``
(one process per GPU, NCCL; or gloo on CPU). Every rank reads the dataset, a DistributedSampler
splits each epoch between them, gradients are averaged, and only rank 0 validates and writes
files. ``--batch-size`` is per process.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from posenet_core.cli import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run_main,
)
from posenet_core.metrics import pose_errors
from posenet_train import input_geometry
from posenet_train.checkpoint import load_checkpoint, save_checkpoint
from posenet_train.data import PoseDataset, position_stats, seed_worker
from posenet_train.datasets import load_split, parse_dataset_spec
from posenet_train.errors import CheckpointError, PoseNetTrainError
from posenet_train.evaluate import summarize
from posenet_train.losses import LOSS_NAMES, NORMS, build_loss, multi_head_loss
from posenet_train.models import MODEL_NAMES, PoseNetModel, build_model, default_pretrained
from posenet_train.view_jitter import (
    MAX_ROLL_DEG,
    MAX_VIEW_FRACTION,
    ViewJitter,
    check_jitter,
)

__all__ = [
    "AUTO_BATCH_MAX",
    "AUTO_BATCH_MIN",
    "DEFAULTS",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "QAT_LR_FACTOR",
    "QAT_STEPS",
    "VALIDATIONS_PER_RUN",
    "build_parser",
    "cli",
    "describe_schedule",
    "main",
    "steps_per_epoch",
]

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("step", "cosine", "none")

#: Defaults of the options that describe a run (None in main() means "this default", or the
#: resumed run's value).
DEFAULTS: dict[str, Any] = {
    "model": "posenet-efficientnet-lite0",
    "pretrained": "auto",
    "batch_size": None,  # derived: see _resolve_schedule
    "lr": 3e-4,
    "optimizer": "adam",
    "momentum": 0.9,
    "weight_decay": 0.0,
    "lr_schedule": "cosine",
    "lr_step_size": 50,
    "lr_gamma": 0.1,
    "loss": "posenet",
    "beta": 1.0,
    "loss_norm": None,
    "color_jitter": 0.0,
    "max_shift": None,
    # Off by default: it helps a narrow-FOV object set (dino40) and costs a wide forward drive
    # its rotation accuracy (BENCHMARKS.md, "A label-exact view augmentation").
    "view_jitter": 0.0,
    "roll_jitter_deg": 0.0,
    "resize": None,  # derived from the dataset's image sizes: see _resolve_input_geometry
    "crop": None,
    "seed": 0,
    "freeze_backbone_epochs": 0,
    "frozen_blocks": 0,
    "channels_last": False,
    "model_kwargs": {},
    "epochs": None,  # derived: see _resolve_schedule
    "steps": 2500,
    "min_steps_per_epoch": 8,
    "min_epochs": 30,
    "val_every": None,  # derived: about VALIDATIONS_PER_RUN validations
    "workers": 0,
    "threads": None,
    "max_steps": None,
    "device": "auto",
    "qat_from": None,
}
#: Quantisation-aware fine-tuning (``--qat-from``): a short, slow run from trained weights. What
#: is not given comes from the source run, except these. ``--frozen-blocks`` too is the source's:
#: on the demo model (14 blocks frozen) training every block drifted (simulated INT8 2.03 deg,
#: 1.95 deg at a third of the lr) where keeping them frozen gave 1.80 deg (FP32: 1.73 deg).
QAT_STEPS = 500
QAT_LR_FACTOR = 0.1
QAT_MIN_EPOCHS = 1
#: The options a quantisation-aware run takes from its source run unless given.
_QAT_FROM_SOURCE = (
    "dataset",
    "model",
    "model_kwargs",
    "batch_size",
    "optimizer",
    "momentum",
    "weight_decay",
    "lr_schedule",
    "lr_step_size",
    "lr_gamma",
    "loss",
    "beta",
    "loss_norm",
    "color_jitter",
    "max_shift",
    "view_jitter",
    "roll_jitter_deg",
    "resize",
    "crop",
    "seed",
    "frozen_blocks",
)
#: Options a quantisation-aware run must share with its source (the weights were trained so).
_QAT_SAME_AS_SOURCE = ("model", "model_kwargs", "resize", "crop")
#: Options of one invocation, never taken from a resumed run.
_PER_INVOCATION = ("workers", "threads", "max_steps", "device", "channels_last")
#: Options that may differ when a run is resumed (None: keep the run's value).
_RESUME_OVERRIDABLE = ("epochs", "steps", "val_every", *_PER_INVOCATION)
#: The batch size the schedule derives is at most this (what the dino recipe was measured
#: with) and at least this (smaller batches make batch-norm statistics too noisy).
AUTO_BATCH_MAX = 16
AUTO_BATCH_MIN = 4
#: Validations in a run whose --val-every is not given (a 300-epoch run of a small set must not
#: spend its time validating every epoch).
VALIDATIONS_PER_RUN = 30
_OUTPUT_FILES = ("last.pt", "best.pt", "log.csv", "config.json")
_CSV_FIELDS = (
    "epoch",
    "step",
    "lr",
    "loss",
    "loss_position",
    "loss_orientation",
    "s_x",
    "s_q",
    "val_median_translation_m",
    "val_median_rotation_deg",
    "val_score",
    "epoch_time_s",
    "elapsed_s",
)


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def _init_distributed(device_name: str) -> _Dist:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Dist()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return _Dist(rank, world_size, local_rank, initialised_here=True)
    return _Dist(rank, world_size, local_rank)


def _resolve_device(device_name: str, ddp: _Dist) -> torch.device:
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PoseNetTrainError(f"--device {device_name}: CUDA is not available here")
        if ddp.active:
            return torch.device("cuda", ddp.local_rank)
    return torch.device(device_name)


def _derive_seed(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _rng_state(device: torch.device) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _parse_crop(value: int | str | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, str):
        parts = value.replace("x", ",").split(",")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            numbers = []
    elif isinstance(value, int):
        numbers = [value, value]
    else:
        numbers = [int(v) for v in value]
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) != 2 or min(numbers) <= 0:
        raise PoseNetTrainError(f"crop must be N or H,W with positive integers, got {value!r}")
    return numbers[0], numbers[1]


def _check_options(cfg: dict[str, Any]) -> None:
    """Raise PoseNetTrainError naming the first invalid option."""
    if cfg["model"] not in MODEL_NAMES:
        raise PoseNetTrainError(
            f"unknown model {cfg['model']!r}; expected one of {', '.join(MODEL_NAMES)}"
        )
    choices = {
        "optimizer": OPTIMIZERS,
        "lr_schedule": LR_SCHEDULES,
        "loss": LOSS_NAMES,
        "loss_norm": (None, *NORMS),
    }
    for key, allowed in choices.items():
        if cfg[key] not in allowed:
            raise PoseNetTrainError(
                f"{key} {cfg[key]!r} is not allowed; expected one of "
                f"{', '.join(str(a) for a in allowed if a is not None)}"
            )
    positive = ("lr", "lr_step_size", "resize", "beta")
    for key in positive:
        if cfg[key] is None and key == "resize":
            continue  # derived from the data
        if not cfg[key] > 0:
            raise PoseNetTrainError(f"{key} must be > 0, got {cfg[key]!r}")
    # None: derived from the data (_resolve_schedule).
    for key in ("epochs", "batch_size", "steps", "min_steps_per_epoch", "min_epochs"):
        value = cfg[key]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value <= 0
        ):
            raise PoseNetTrainError(f"{key} must be a positive integer, got {value!r}")
    non_negative = (
        "momentum",
        "weight_decay",
        "val_every",
        "workers",
        "freeze_backbone_epochs",
        "frozen_blocks",
    )
    for key in non_negative:
        if cfg[key] is not None and cfg[key] < 0:
            raise PoseNetTrainError(f"{key} must be >= 0, got {cfg[key]!r}")
    if not 0.0 < cfg["lr_gamma"] <= 1.0:
        raise PoseNetTrainError(f"lr_gamma must be in (0, 1], got {cfg['lr_gamma']!r}")
    if not 0.0 <= cfg["color_jitter"] < 1.0:
        raise PoseNetTrainError(f"color_jitter must be in [0, 1), got {cfg['color_jitter']!r}")
    if cfg["resize"] is not None and cfg["crop"] is not None and cfg["resize"] < min(cfg["crop"]):
        raise PoseNetTrainError(
            f"resize {cfg['resize']} must be >= the crop's shorter side "
            f"{cfg['crop'][0]},{cfg['crop'][1]} (the centre crop is cut from the image resized "
            "to that shorter side)"
        )
    if cfg["max_shift"] is not None and cfg["max_shift"] < 0:
        raise PoseNetTrainError(f"max_shift must be >= 0, got {cfg['max_shift']!r}")
    check_jitter(float(cfg["view_jitter"]), float(cfg["roll_jitter_deg"]))
    if cfg["max_steps"] is not None and cfg["max_steps"] <= 0:
        raise PoseNetTrainError(f"max_steps must be > 0, got {cfg['max_steps']!r}")
    if cfg["threads"] is not None and cfg["threads"] <= 0:
        raise PoseNetTrainError(f"threads must be > 0, got {cfg['threads']!r}")


def _check_schedule_request(requested: dict[str, Any]) -> None:
    """Refuse options that would each decide the same number (the user gave both)."""
    pairs = (
        ("epochs", "steps", "--epochs sets the length directly; --steps derives it"),
        ("epochs", "min_epochs", "--min-epochs bounds only a length derived from --steps"),
        (
            "batch_size",
            "min_steps_per_epoch",
            "--min-steps-per-epoch only bounds a derived batch size",
        ),
    )
    for first, second, why in pairs:
        if requested.get(first) is not None and requested.get(second) is not None:
            raise PoseNetTrainError(
                f"give {first} or {second}, not both ({why}): got {first}={requested[first]!r}"
                f" and {second}={requested[second]!r}"
            )


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of ``images`` (per process) at ``batch_size``: the trainer
    drops the last incomplete batch unless the set is smaller than one batch."""
    return images // batch_size if images >= batch_size else 1


def _resolve_schedule(cfg: dict[str, Any], images: int) -> dict[str, Any]:
    """Fill in a derived batch size and number of epochs; return the schedule.

    Batch size (when not given): the largest that still makes ``min_steps_per_epoch`` steps per
    epoch, within ``AUTO_BATCH_MIN..AUTO_BATCH_MAX``: 273 images train at batch 16 (17 steps per
    epoch), 39 at batch 4 (9 steps), instead of one step of 32 per epoch. Epochs (when not
    given): enough for ``steps`` optimizer steps, and at least ``min_epochs`` passes over a large
    set. ``images`` is the training images per process.
    """
    if images < 1:
        raise PoseNetTrainError("the training split holds no images")
    derived = []
    if cfg["batch_size"] is None:
        per_epoch = cfg["min_steps_per_epoch"] or DEFAULTS["min_steps_per_epoch"]
        cfg["batch_size"] = int(
            min(AUTO_BATCH_MAX, max(AUTO_BATCH_MIN, images // per_epoch), images)
        )
        derived.append("batch_size")
    per_epoch = steps_per_epoch(images, cfg["batch_size"])
    if cfg["epochs"] is None:
        steps = cfg["steps"] or DEFAULTS["steps"]
        min_epochs = cfg["min_epochs"] or DEFAULTS["min_epochs"]
        cfg["epochs"] = int(max(min_epochs, math.ceil(steps / per_epoch)))
        derived.append("epochs")
    if cfg["val_every"] is None:
        cfg["val_every"] = max(1, math.ceil(cfg["epochs"] / VALIDATIONS_PER_RUN))
        derived.append("val_every")
    return {
        "images": int(images),
        "batch_size": int(cfg["batch_size"]),
        "steps_per_epoch": int(per_epoch),
        "epochs": int(cfg["epochs"]),
        "total_steps": int(per_epoch * cfg["epochs"]),
        "val_every": int(cfg["val_every"]),
        "derived": derived,
    }


def describe_schedule(schedule: dict[str, Any], cfg: dict[str, Any]) -> str:
    """One line that says what the run will do and where each number came from."""
    batch_note = (
        f" (derived: >= {cfg['min_steps_per_epoch'] or DEFAULTS['min_steps_per_epoch']} steps"
        f" per epoch, {AUTO_BATCH_MIN}..{AUTO_BATCH_MAX})"
        if "batch_size" in schedule["derived"]
        else " (given)"
    )
    if "epochs" in schedule["derived"]:
        epochs_note = (
            f" (derived: {cfg['steps'] or DEFAULTS['steps']} steps, at least"
            f" {cfg['min_epochs'] or DEFAULTS['min_epochs']} epochs)"
        )
    else:
        epochs_note = " (given)"
    return (
        f"schedule: {schedule['images']} training images, batch {schedule['batch_size']}"
        f"{batch_note}, {schedule['steps_per_epoch']} steps per epoch, {schedule['epochs']}"
        f" epochs{epochs_note} = {schedule['total_steps']} optimizer steps; validation every"
        f" {schedule['val_every']} epochs"
    )


def _resolve_input_geometry(
    cfg: dict[str, Any], train_records: list, val_records: list
) -> str | None:
    """Fill in ``resize`` and ``crop`` from the dataset's image sizes where not given, and check
    that the crop fits every image; return the line that says what was chosen (None when both
    were given and fit).

    Neither given: :func:`posenet_train.input_geometry.choose_input_geometry` (the whole frame
    at shorter side 128; both orientations: a square crop). Only ``resize``: the whole frame at
    that shorter side. Only ``crop``: the smallest resize that fits it in every image. A crop
    that does not fit raises PoseNetTrainError naming the ``--resize`` that would.
    """
    records = list(train_records) + list(val_records)
    sizes = {input_geometry.image_size_hw(r.image_path) for r in records}
    given_resize, given_crop = cfg["resize"], cfg["crop"]
    note = None
    if given_crop is None:
        chosen = input_geometry.choose_input_geometry(
            sizes, short_side=given_resize or input_geometry.DEFAULT_SHORT_SIDE
        )
        cfg["crop"] = chosen.crop_hw
        cfg["resize"] = given_resize or chosen.resize
        note = (
            f"input: resize {cfg['resize']}, crop {cfg['crop'][0]}x{cfg['crop'][1]} (derived:"
            f" {chosen.reason}); --resize/--crop set it by hand"
        )
    elif given_resize is None:
        fits = input_geometry.resize_that_fits(sizes, given_crop)
        cfg["resize"] = fits if fits is not None else max(given_crop)
        note = (
            f"input: resize {cfg['resize']} (derived: the smallest that fits crop "
            f"{given_crop[0]}x{given_crop[1]} in every image), crop {given_crop[0]}x"
            f"{given_crop[1]}"
        )
    input_geometry.check_fits(sizes, cfg["resize"], cfg["crop"])
    return note


def _build_optimizer(
    cfg: dict[str, Any], model: torch.nn.Module, loss_fn: torch.nn.Module
) -> torch.optim.Optimizer:
    groups = [{"params": list(model.parameters()), "weight_decay": cfg["weight_decay"]}]
    loss_params = list(loss_fn.parameters())
    if loss_params:
        # The learned log-variances must not be pulled towards 0 by weight decay.
        groups.append({"params": loss_params, "weight_decay": 0.0})
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(groups, lr=cfg["lr"])
    return torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"])


def _build_scheduler(cfg: dict[str, Any], optimizer: torch.optim.Optimizer) -> Any | None:
    if cfg["lr_schedule"] == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=cfg["lr_step_size"], gamma=cfg["lr_gamma"]
        )
    if cfg["lr_schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["epochs"])
    return None


def _validation_score(summary: dict, position_scale: float) -> float:
    return summary["median_translation_m"] / position_scale + math.radians(
        summary["median_rotation_deg"]
    )


def _validate(
    model: PoseNetModel, dataset: PoseDataset, batch_size: int, device: torch.device
) -> dict:
    """Median/mean errors of the model on the (centre-cropped) validation set."""
    model.eval()
    positions, quats = [], []
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            images = torch.stack([item[0] for item in items]).to(device)
            position_m, quat_wxyz = model(images)[:2]  # an uncertainty head adds log-variances
            positions.append(position_m.double().cpu().numpy())
            quats.append(quat_wxyz.double().cpu().numpy())
    gt_position = dataset.positions_m.double().numpy()
    gt_quat = dataset.quats_wxyz.double().numpy()
    t_err, r_err = pose_errors(
        np.concatenate(positions), np.concatenate(quats), gt_position, gt_quat
    )
    return summarize(t_err, r_err)


def _prepare_output(output: Path, resume: str | None, overwrite: bool) -> Path | None:
    """Check what ``output`` holds; return the checkpoint to resume from (or None)."""
    last = output / "last.pt"
    if resume is not None and overwrite:
        raise PoseNetTrainError("--resume and --overwrite contradict each other; pick one")
    if resume == "auto":
        return last if last.is_file() else None
    if resume is not None:
        path = Path(resume)
        if not path.is_file():
            raise CheckpointError(f"checkpoint to resume {path} does not exist")
        return path
    existing = [name for name in _OUTPUT_FILES if (output / name).exists()]
    if existing and not overwrite:
        raise PoseNetTrainError(
            f"{output} already holds a training run ({', '.join(existing)}); pass --resume to "
            "continue it or --overwrite to start again"
        )
    return None


def _clear_output(output: Path) -> None:
    for name in _OUTPUT_FILES:
        (output / name).unlink(missing_ok=True)
    shutil.rmtree(output / "tensorboard", ignore_errors=True)


def _absolute_dataset(dataset: str | Path) -> str:
    """The dataset spec with its path made absolute (checkpoints outlive the working folder)."""
    fmt, folder = parse_dataset_spec(str(dataset))
    folder_text = str(folder.resolve())
    return f"{fmt}:{folder_text}" if fmt else folder_text


def _merge_resumed_config(
    requested: dict[str, Any], saved: dict[str, Any], path: Path
) -> dict[str, Any]:
    """The resumed run's options, with the overridable ones (and explicit equal ones) applied."""
    cfg = dict(saved)
    for key, value in requested.items():
        if key in _PER_INVOCATION:
            cfg[key] = DEFAULTS[key] if value is None else value
            continue
        if key in _RESUME_OVERRIDABLE:
            if value is not None:
                cfg[key] = value
            continue
        if key == "pretrained":
            value = {"auto": None, "none": "none"}.get(value, value)
        if value is None:
            continue
        saved_value = saved.get(key)
        if key == "pretrained" and saved_value is None:
            saved_value = "none"
        if key == "crop":
            saved_value = tuple(saved_value) if saved_value is not None else None
        if key == "dataset":
            same = _absolute_dataset(value) == _absolute_dataset(saved_value)
        else:
            same = value == saved_value
        if not same:
            raise CheckpointError(
                f"cannot resume {path} with {key}={value!r}: the run was started with "
                f"{key}={saved_value!r} (only {', '.join(_RESUME_OVERRIDABLE)} may change)"
            )
    return cfg


def main(
    dataset: str | Path | None,
    output: str | Path,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    optimizer: str | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    lr_schedule: str | None = None,
    lr_step_size: int | None = None,
    lr_gamma: float | None = None,
    loss: str | None = None,
    beta: float | None = None,
    loss_norm: str | None = None,
    color_jitter: float | None = None,
    max_shift: int | None = None,
    view_jitter: float | None = None,
    roll_jitter_deg: float | None = None,
    resize: int | None = None,
    crop: int | str | Sequence[int] | None = None,
    seed: int | None = None,
    workers: int | None = None,
    val_every: int | None = None,
    threads: int | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    max_steps: int | None = None,
    freeze_backbone_epochs: int | None = None,
    frozen_blocks: int | None = None,
    channels_last: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    device: str | None = None,
    steps: int | None = None,
    min_steps_per_epoch: int | None = None,
    min_epochs: int | None = None,
    qat_from: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a model; see the module docstring. Returns a summary dict.

    Options left at None take :data:`DEFAULTS` for a new run, or the resumed run's values.
    The schedule is counted in optimizer steps: unless ``batch_size`` is given it is the largest
    (4..16) that makes ``min_steps_per_epoch`` steps per epoch on this training set, and unless
    ``epochs`` is given they are enough for ``steps`` optimizer steps and at least
    ``min_epochs`` (giving both of a pair is an error); the derived schedule is printed at the
    start and recorded in the checkpoint (``extra["schedule"]``). On resume ``steps`` (like
    ``epochs``) may grow the run.
    ``pretrained``: "auto" (the model's default: "imagenet" for EfficientNet-Lite0, none for
    GoogLeNet), "none", "imagenet" or a weights file. ``resume``: a checkpoint path or "auto"
    (``output/last.pt`` if it exists, else a new run). ``val_every``: validate on the test
    split every N epochs and after the last (0: never; then best.pt is not written; None: about
    ``VALIDATIONS_PER_RUN`` times in the run).
    ``max_steps``: stop after this many optimizer steps (smoke tests; the partial epoch counts
    as finished). ``model_kwargs``: extra constructor arguments of the model (e.g.
    ``{"dropout": 0.2}``), recorded in the checkpoint's ``model_args``.
    ``qat_from``: a checkpoint to fine-tune with INT8 simulated (:mod:`posenet_train.qat`): a
    new run whose options not given are the source run's, but ``QAT_STEPS`` steps at
    ``QAT_LR_FACTOR`` times its learning rate; the model and input geometry must be the source's.

    Returns ``{"output", "last", "best", "epochs_done", "global_step", "best_val", "last_val"}``.
    Raises PoseNetTrainError (or a subclass) for bad options, data or checkpoints.
    """
    output = Path(output)
    ddp = _init_distributed(device or "auto")
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_threads = torch.get_num_threads()
    try:
        requested = {
            "dataset": None if dataset is None else str(dataset),
            "model": model,
            "pretrained": pretrained,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "optimizer": optimizer,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "lr_schedule": lr_schedule,
            "lr_step_size": lr_step_size,
            "lr_gamma": lr_gamma,
            "loss": loss,
            "beta": beta,
            "loss_norm": loss_norm,
            "color_jitter": color_jitter,
            "max_shift": max_shift,
            "view_jitter": view_jitter,
            "roll_jitter_deg": roll_jitter_deg,
            "resize": resize,
            "crop": None if crop is None else _parse_crop(crop),
            "seed": seed,
            "workers": workers,
            "val_every": val_every,
            "threads": threads,
            "max_steps": max_steps,
            "freeze_backbone_epochs": freeze_backbone_epochs,
            "frozen_blocks": frozen_blocks,
            "channels_last": bool(channels_last),
            "model_kwargs": None if model_kwargs is None else dict(model_kwargs),
            "device": device,
            "steps": steps,
            "min_steps_per_epoch": min_steps_per_epoch,
            "min_epochs": min_epochs,
            "qat_from": None if qat_from is None else str(Path(qat_from).resolve()),
        }
        return _train(requested, output, resume, overwrite, progress, ddp)
    finally:
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)
        torch.set_num_threads(previous_threads)
        if ddp.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def _qat_config(requested: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The options of a new quantisation-aware run and its source checkpoint."""
    source_path = Path(requested["qat_from"])
    source = load_checkpoint(source_path)
    saved = source["extra"].get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"--qat-from {source_path}: the checkpoint records no training options (write it "
            "with posenet_train.train)"
        )
    saved = {**saved, "model_kwargs": dict(saved.get("model_kwargs") or {})}
    saved["crop"] = None if saved.get("crop") is None else tuple(saved["crop"])
    cfg = {k: (DEFAULTS.get(k) if v is None else v) for k, v in requested.items()}
    for key in _QAT_FROM_SOURCE:
        if requested.get(key) is None and saved.get(key) is not None:
            cfg[key] = saved[key]
    cfg["crop"] = None if cfg["crop"] is None else _parse_crop(cfg["crop"])
    for key in _QAT_SAME_AS_SOURCE:
        if requested.get(key) is not None and cfg[key] != saved.get(key):
            raise PoseNetTrainError(
                f"--qat-from {source_path} was trained with {key}={saved.get(key)!r}; a "
                f"quantisation-aware run fine-tunes those weights, so {key}={cfg[key]!r} is "
                "not allowed (leave it out)"
            )
    if requested["dataset"] is not None:
        cfg["dataset"] = _absolute_dataset(requested["dataset"])
    cfg["pretrained"] = None  # the weights are the source's
    cfg["freeze_backbone_epochs"] = 0
    if requested["lr"] is None:
        cfg["lr"] = float(saved.get("lr", DEFAULTS["lr"])) * QAT_LR_FACTOR
    if requested["epochs"] is None:
        cfg["epochs"] = None
        cfg["steps"] = QAT_STEPS if requested["steps"] is None else requested["steps"]
        if requested["min_epochs"] is None:
            cfg["min_epochs"] = QAT_MIN_EPOCHS
    else:
        cfg["steps"] = cfg["min_epochs"] = None
    if cfg["batch_size"] is not None:
        cfg["min_steps_per_epoch"] = None
    return cfg, source


def _train(
    requested: dict[str, Any],
    output: Path,
    resume: str | Path | None,
    overwrite: bool,
    progress: bool,
    ddp: _Dist,
) -> dict[str, Any]:
    _check_schedule_request(requested)
    qat_source = None
    resume_path = _prepare_output(output, None if resume is None else str(resume), overwrite)
    ckpt = load_checkpoint(resume_path) if resume_path is not None else None
    saved = None
    if ckpt is not None:
        saved = ckpt["extra"].get("config")
        if not isinstance(saved, dict):
            raise CheckpointError(f"{resume_path} records no training options; cannot resume")
        cfg = _merge_resumed_config(requested, saved, resume_path)
        # Runs from before these options existed.
        cfg.setdefault("frozen_blocks", 0)
        cfg.setdefault("view_jitter", 0.0)  # runs from before the view augmentation had none
        cfg.setdefault("roll_jitter_deg", 0.0)
        for key in ("steps", "min_steps_per_epoch", "min_epochs", "qat_from"):
            cfg.setdefault(key, None)
        cfg["crop"] = tuple(cfg["crop"])
        if requested["steps"] is not None and requested["epochs"] is None:
            cfg["epochs"] = None  # derive from the new step budget, at the run's batch size
    elif requested["qat_from"] is not None:
        cfg, qat_source = _qat_config(requested)
    else:
        if requested["dataset"] is None:
            raise PoseNetTrainError("--dataset is required for a new run")
        cfg = {k: (DEFAULTS.get(k) if v is None else v) for k, v in requested.items()}
        cfg["dataset"] = _absolute_dataset(cfg["dataset"])
        cfg["crop"] = None if cfg["crop"] is None else _parse_crop(cfg["crop"])
        cfg["model_kwargs"] = dict(cfg["model_kwargs"])
        if cfg["pretrained"] in ("auto", None) and cfg["model"] in MODEL_NAMES:
            cfg["pretrained"] = default_pretrained(cfg["model"])
        if cfg["pretrained"] == "none":
            cfg["pretrained"] = None
        # Record only the schedule options that decide something in this run.
        if requested["epochs"] is not None:
            cfg["steps"] = cfg["min_epochs"] = None
        if requested["batch_size"] is not None:
            cfg["min_steps_per_epoch"] = None
    cfg["view_jitter"] = float(cfg["view_jitter"])
    cfg["roll_jitter_deg"] = float(cfg["roll_jitter_deg"])
    _check_options(cfg)

    if cfg["threads"] is not None:
        torch.set_num_threads(cfg["threads"])
    # cuBLAS reads this when CUDA first uses it; deterministic algorithms need it on GPUs.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = _resolve_device(cfg["device"], ddp)

    if ddp.is_main:
        output.mkdir(parents=True, exist_ok=True)
        if overwrite:
            _clear_output(output)
    if ddp.active:
        dist.barrier()

    # Data.
    train_records = load_split(cfg["dataset"], "train")
    val_records = load_split(cfg["dataset"], "test") if cfg["val_every"] != 0 else []
    geometry_note = _resolve_input_geometry(cfg, train_records, val_records)
    if ddp.is_main and geometry_note:
        print(geometry_note, file=sys.stderr, flush=True)
    schedule = _resolve_schedule(cfg, math.ceil(len(train_records) / ddp.world_size))
    if ddp.is_main:
        print(describe_schedule(schedule, cfg), file=sys.stderr, flush=True)
    if (
        saved is not None
        and cfg["lr_schedule"] == "cosine"
        and cfg["epochs"] != saved["epochs"]
        and ddp.is_main
    ):
        print(
            f"warning: the cosine schedule of {resume_path} was planned for "
            f"{saved['epochs']} epochs and continues unchanged (past its end the lr rises "
            "again); prefer a new run, or the step schedule, to train longer",
            file=sys.stderr,
        )
    if cfg["val_every"] == 0:
        val_records = []
    jitter = ViewJitter(float(cfg["view_jitter"]), float(cfg["roll_jitter_deg"]))
    intrinsics, jitter_note = _view_jitter_camera(cfg["dataset"], train_records, jitter)
    if ddp.is_main:
        print(jitter_note, file=sys.stderr, flush=True)
    train_set = PoseDataset(
        train_records,
        resize_shorter=cfg["resize"],
        crop_hw=cfg["crop"],
        train=True,
        color_jitter=cfg["color_jitter"],
        max_shift_px=cfg["max_shift"],
        view_jitter=jitter,
        intrinsics=intrinsics,
    )
    val_set = None
    if val_records and ddp.is_main:
        val_set = PoseDataset(
            val_records, resize_shorter=cfg["resize"], crop_hw=cfg["crop"], train=False
        )

    # Model, loss, optimizer, scheduler.
    _seed_all(cfg["seed"])
    # A resumed run, or a quantisation-aware one, starts from a checkpoint's weights.
    start_from, start_path = (
        (ckpt, resume_path) if ckpt is not None else (qat_source, cfg["qat_from"])
    )
    if start_from is not None:
        model_args = dict(start_from["model_args"])
        net = build_model(**{**model_args, "pretrained": None})
        try:
            net.load_state_dict(start_from["model_state"])
        except RuntimeError as exc:
            raise CheckpointError(f"{start_path}: weights do not fit the model: {exc}") from exc
    else:
        if "pretrained" in cfg["model_kwargs"]:
            raise PoseNetTrainError("set pretrained weights with --pretrained, not --model-arg")
        net = build_model(cfg["model"], pretrained=cfg["pretrained"], **cfg["model_kwargs"])
        model_args = dict(net.constructor_args)
        mean, scale = position_stats(train_records)
        net.set_position_stats(mean, scale)
    net.set_frozen_blocks(int(cfg["frozen_blocks"]))
    net.to(device)
    memory_format = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    net.to(memory_format=memory_format)
    position_scale = float(net.position_scale)
    loss_fn = build_loss(cfg["loss"], beta=cfg["beta"], norm=cfg["loss_norm"]).to(device)
    if loss_fn.needs_log_variance and not net.uncertainty:
        raise PoseNetTrainError(
            f"--loss {cfg['loss']} trains the model's uncertainty head, and {net.name} has none: "
            "add --model-arg uncertainty=True"
        )
    if net.uncertainty and not loss_fn.needs_log_variance:
        raise PoseNetTrainError(
            f"the model has an uncertainty head (uncertainty=True) that --loss {cfg['loss']} "
            "would leave untrained (its exported variances would mean nothing): use --loss nll"
        )
    if qat_source is not None and qat_source.get("loss_state"):
        try:
            loss_fn.load_state_dict(qat_source["loss_state"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(
                f"{cfg['qat_from']}: its learned loss weights do not fit --loss "
                f"{cfg['loss']}: {exc}"
            ) from exc
    fake_quant, calibration_BCHW = None, None
    if cfg["qat_from"] is not None:
        fake_quant, calibration_BCHW = _attach_fake_quant(net, cfg, train_records, device)
        if ddp.is_main:
            print(
                f"quantisation-aware fine-tuning of {cfg['qat_from']}: {fake_quant.describe()}; "
                f"activation ranges from {len(calibration_BCHW)} training images, recomputed "
                "every epoch; validation medians are those of the simulated INT8 model",
                file=sys.stderr,
                flush=True,
            )
    optimizer = _build_optimizer(cfg, net, loss_fn)
    scheduler = _build_scheduler(cfg, optimizer)

    start_epoch, global_step, best_score, best_val, last_val = 0, 0, math.inf, None, None
    if ckpt is not None:
        try:
            optimizer.load_state_dict(ckpt["optimizer_state"])
            if scheduler is not None and ckpt.get("scheduler_state") is not None:
                scheduler.load_state_dict(ckpt["scheduler_state"])
            if ckpt.get("loss_state"):
                loss_fn.load_state_dict(ckpt["loss_state"])
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{resume_path}: cannot restore the training state: {exc}"
            ) from exc
        extra = ckpt["extra"]
        start_epoch = int(ckpt["epoch"])
        global_step = int(extra.get("global_step", 0))
        best_score = float(extra.get("best_score", math.inf))
        best_val, last_val = extra.get("best_val"), extra.get("last_val")
    # Dropout / augmentation streams differ per rank; resumption restores the saved ones.
    _seed_all(_derive_seed(cfg["seed"], 1, ddp.rank))
    rng_states = ckpt["extra"].get("rng") if ckpt is not None else None
    if rng_states:
        if len(rng_states) == ddp.world_size:
            _set_rng_state(rng_states[ddp.rank], device)
        elif ddp.is_main:
            print(
                f"warning: {resume_path} holds RNG states of {len(rng_states)} processes, this "
                f"run has {ddp.world_size}: continuing with fresh random streams",
                file=sys.stderr,
            )

    train_model: torch.nn.Module = net
    if _can_cache_trunk(cfg):
        train_set = _cache_trunk(
            net, train_set, cfg["batch_size"], device, ddp.is_main and progress, ddp.is_main
        )
        train_model = _FromTrunk(net)
    elif cfg["frozen_blocks"] and cfg["qat_from"] is not None and ddp.is_main:
        print(
            "the frozen trunk's output is computed every step (not cached): quantisation-aware "
            "training simulates INT8 in it",
            file=sys.stderr,
        )
    elif cfg["frozen_blocks"] and ddp.is_main:
        print(
            f"the frozen trunk's output is computed every step (not cached): the training crops "
            f"vary (--max-shift {cfg['max_shift']}, --color-jitter {cfg['color_jitter']}, "
            f"--view-jitter {cfg['view_jitter']}, --roll-jitter-deg {cfg['roll_jitter_deg']}); "
            "--max-shift 0 without the jitters makes them fixed",
            file=sys.stderr,
        )
    if ddp.active:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg["freeze_backbone_epochs"] > 0,
        )

    generator = torch.Generator()
    if ddp.active:
        sampler: Any = DistributedSampler(
            train_set, num_replicas=ddp.world_size, rank=ddp.rank, shuffle=True, seed=cfg["seed"]
        )
        per_rank = len(sampler)
    else:
        sampler = RandomSampler(train_set, generator=generator)
        per_rank = len(train_set)
    drop_last = per_rank >= cfg["batch_size"]  # no 1-image batch at the end of every epoch
    loader = DataLoader(
        train_set,
        batch_size=cfg["batch_size"],
        sampler=sampler,
        num_workers=cfg["workers"],
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=seed_worker if cfg["workers"] > 0 else None,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * cfg["epochs"]
    if cfg["max_steps"] is not None:
        total_steps = min(total_steps, cfg["max_steps"])

    csv_path = output / "log.csv"
    writer = None
    if ddp.is_main:
        config_json = {
            **cfg,
            "crop": list(cfg["crop"]),
            "model_args": model_args,
            "world_size": ddp.world_size,
            "schedule": schedule,
        }
        (output / "config.json").write_text(json.dumps(config_json, indent=2) + "\n")
        if not csv_path.exists():
            with csv_path.open("w", newline="") as handle:
                csv.writer(handle).writerow(_CSV_FIELDS)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(
            log_dir=str(output / "tensorboard"), purge_step=global_step if ckpt else None
        )

    bar = None
    if ddp.is_main and progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=min(global_step, total_steps), unit="step")
    epochs_done = start_epoch
    t_start = time.monotonic()
    try:
        for epoch in range(start_epoch, cfg["epochs"]):
            if cfg["max_steps"] is not None and global_step >= cfg["max_steps"]:
                break
            t_epoch = time.monotonic()
            net.set_backbone_frozen(epoch < cfg["freeze_backbone_epochs"])
            if fake_quant is not None:
                fake_quant.calibrate(calibration_BCHW, cfg["batch_size"])
            train_model.train()
            if fake_quant is not None:
                fake_quant.freeze_batchnorm()
            generator.manual_seed(_derive_seed(cfg["seed"], 2, epoch, ddp.rank))
            if ddp.active:
                sampler.set_epoch(epoch)
            sums = torch.zeros(4, dtype=torch.float64, device=device)
            lr_now = optimizer.param_groups[0]["lr"]
            for images, gt_position, gt_quat in loader:
                images = images.to(device, non_blocking=True).contiguous(
                    memory_format=memory_format
                )
                gt_position = gt_position.to(device, non_blocking=True)
                gt_quat = gt_quat.to(device, non_blocking=True)
                outputs = train_model(images)
                parts = multi_head_loss(
                    loss_fn, outputs, gt_position, gt_quat, net.head_weights, position_scale
                )
                if not torch.isfinite(parts.total.detach()):
                    raise PoseNetTrainError(
                        f"the loss became {parts.total.detach().item()} at step {global_step + 1} "
                        f"(epoch {epoch + 1}); lower --lr (now {lr_now:g}) or check the data"
                    )
                optimizer.zero_grad(set_to_none=True)
                parts.total.backward()
                optimizer.step()
                global_step += 1
                n = images.shape[0]
                values = torch.stack([parts.total, parts.position, parts.orientation]).detach()
                sums[:3] += values.double() * n
                sums[3] += n
                if ddp.is_main:
                    total, pos, ori = (float(v) for v in values)
                    writer.add_scalar("train/loss", total, global_step)
                    writer.add_scalar("train/loss_position", pos, global_step)
                    writer.add_scalar("train/loss_orientation", ori, global_step)
                    writer.add_scalar("train/lr", lr_now, global_step)
                    if bar is not None:
                        bar.set_description(f"epoch {epoch + 1}/{cfg['epochs']}")
                        bar.set_postfix(loss=f"{float(sums[0] / sums[3]):.4f}", refresh=False)
                        bar.update(1)
                if cfg["max_steps"] is not None and global_step >= cfg["max_steps"]:
                    break
            if scheduler is not None:
                scheduler.step()
            if ddp.active:
                dist.all_reduce(sums)
            mean_loss = (sums[:3] / sums[3].clamp(min=1)).tolist()
            epochs_done = epoch + 1

            last_epoch = epochs_done == cfg["epochs"] or (
                cfg["max_steps"] is not None and global_step >= cfg["max_steps"]
            )
            validate = cfg["val_every"] > 0 and (epochs_done % cfg["val_every"] == 0 or last_epoch)
            val_summary, score, improved = None, None, False
            if validate and val_set is not None:
                val_summary = _validate(net, val_set, cfg["batch_size"], device)
                score = _validation_score(val_summary, position_scale)
                last_val = val_summary
                if score < best_score:
                    best_score, best_val, improved = score, val_summary, True

            rng_all = [_rng_state(device)]
            if ddp.active:
                rng_all = [None] * ddp.world_size
                dist.all_gather_object(rng_all, _rng_state(device))
            if ddp.is_main:
                extra = {
                    "config": {**cfg, "crop": list(cfg["crop"])},
                    "dataset": str(cfg["dataset"]),
                    "resize_shorter": int(cfg["resize"]),
                    "crop_hw": [int(cfg["crop"][0]), int(cfg["crop"][1])],
                    "global_step": global_step,
                    "best_score": best_score,
                    "best_val": best_val,
                    "last_val": last_val,
                    "val": val_summary,
                    "rng": rng_all,
                    "schedule": schedule,
                }
                state = {
                    "model": net,
                    "optimizer": optimizer,
                    "scheduler": scheduler,
                    "epoch": epochs_done,
                    "model_args": model_args,
                    "extra": extra,
                    "loss": loss_fn if list(loss_fn.parameters()) else None,
                }
                save_checkpoint(output / "last.pt", **state)
                if improved:
                    save_checkpoint(output / "best.pt", **state)
                _log_epoch(
                    writer,
                    csv_path,
                    epochs_done,
                    global_step,
                    lr_now,
                    mean_loss,
                    loss_fn,
                    val_summary,
                    score,
                    time.monotonic() - t_epoch,
                    time.monotonic() - t_start,
                )
                if bar is not None and val_summary is not None:
                    bar.write(
                        f"epoch {epochs_done}: loss {mean_loss[0]:.4f}, validation median "
                        f"{val_summary['median_translation_m']:.3f} m, "
                        f"{val_summary['median_rotation_deg']:.2f} deg"
                    )
            if ddp.active:
                dist.barrier()
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    best_path = output / "best.pt"
    return {
        "output": output,
        "last": output / "last.pt",
        "best": best_path if best_path.exists() else None,
        "epochs_done": epochs_done,
        "global_step": global_step,
        "best_val": best_val,
        "last_val": last_val,
    }


def _attach_fake_quant(
    net: PoseNetModel, cfg: dict[str, Any], train_records: Sequence[Any], device: torch.device
) -> tuple[Any, torch.Tensor]:
    """Simulated INT8 on ``net`` and its calibration images: the training images the export's
    calibration set holds (spread evenly, no augmentation), so the ranges match quantize's."""
    from posenet_train import qat
    from posenet_train.export import CALIBRATION_IMAGES, preprocess_images, spread_records

    chosen = spread_records(train_records, CALIBRATION_IMAGES)
    images = torch.from_numpy(preprocess_images(chosen, int(cfg["resize"]), tuple(cfg["crop"])))
    fake_quant = qat.attach(net, images[:1].to(device))
    return fake_quant, images


def _can_cache_trunk(cfg: dict[str, Any]) -> bool:
    """Whether every training sample is one fixed crop, so the frozen trunk's output can be
    computed once: blocks frozen, centre crops only (max shift 0), no colour or view jitter."""
    return (
        cfg["frozen_blocks"] > 0
        and cfg.get("qat_from") is None  # the simulated INT8 trunk is not the float one
        and cfg["max_shift"] == 0
        and cfg["color_jitter"] == 0.0
        and cfg["view_jitter"] == 0.0
        and cfg["roll_jitter_deg"] == 0.0
    )


def _find_camera(dataset: str, records: Sequence[Any]) -> tuple[Any, str] | None:
    """The dataset's intrinsics and where they came from, or None: the dataset's own
    (:func:`posenet_core.datasets.find_intrinsics`), else those of the set a
    ``posenet_train.subset`` folder was cut from (its subset.json names the source)."""
    from posenet_core.datasets import find_intrinsics

    def image_size() -> tuple[int, int]:
        height, width = input_geometry.image_size_hw(records[0].image_path)
        return width, height

    found = find_intrinsics(dataset, image_size)
    if found is not None:
        return found
    _, folder = parse_dataset_spec(dataset)
    subset_file = Path(folder) / "subset.json"
    if subset_file.is_file():
        try:
            source = json.loads(subset_file.read_text(encoding="utf-8")).get("source")
        except (OSError, ValueError):
            return None
        if source and Path(source).is_dir():
            found = find_intrinsics(source, image_size)
            if found is not None:
                return found[0], f"{found[1]} of {source} (subset.json's source)"
    return None


def _view_jitter_camera(
    dataset: str, records: Sequence[Any], jitter: ViewJitter
) -> tuple[Any, str]:
    """``(intrinsics or None, the line printed at the start)`` for the view augmentation."""
    if not jitter.active:
        return None, "view jitter: off"
    found = _find_camera(dataset, records) if jitter.view_fraction > 0.0 else None
    head = f"view jitter (training only): roll up to +-{jitter.roll_deg:g} deg"
    if jitter.view_fraction == 0.0:
        return None, head + ", no pan/tilt (--view-jitter 0), border replicate"
    if found is None:
        return None, (
            head + f"; pan/tilt up to +-{jitter.view_fraction:g} of the field of view needs the "
            "camera's intrinsics and none were found (intrinsics.json, dino_par.txt, a COLMAP "
            "model): roll only, about the image centre"
        )
    intr, where = found
    fov_x = math.degrees(2.0 * math.atan2(intr.width / 2.0, intr.fx))
    fov_y = math.degrees(2.0 * math.atan2(intr.height / 2.0, intr.fy))
    return intr, (
        head + f", pan/tilt up to +-{jitter.view_fraction:g} of the field of view "
        f"({fov_x:.1f} x {fov_y:.1f} deg, {intr.width}x{intr.height}, from {where}: "
        f"+-{jitter.view_fraction * fov_x:.2f} / +-{jitter.view_fraction * fov_y:.2f} deg); "
        "images of another size or orientation only roll; border replicate"
    )


class _TrunkDataset(Dataset):
    """``(trunk features, position_m, quat_wxyz)`` per training image, held in memory."""

    def __init__(
        self, features: torch.Tensor, positions_m: torch.Tensor, quats_wxyz: torch.Tensor
    ) -> None:
        self.features, self.positions_m, self.quats_wxyz = features, positions_m, quats_wxyz

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.features[index], self.positions_m[index], self.quats_wxyz[index]


class _FromTrunk(torch.nn.Module):
    """The model seen from cached trunk features (what DistributedDataParallel wraps)."""

    def __init__(self, net: PoseNetModel) -> None:
        super().__init__()
        self.net = net

    def forward(self, trunk_BCHW: torch.Tensor) -> Any:
        return self.net.forward_from_trunk(trunk_BCHW)


def _cache_trunk(
    net: PoseNetModel,
    train_set: PoseDataset,
    batch_size: int,
    device: torch.device,
    progress: bool,
    report: bool,
) -> _TrunkDataset:
    """Run the frozen trunk once over the training images' fixed crops (what a random crop with
    max shift 0 cuts: the centre crop). Draws no random numbers, so the run's random streams
    are the same with and without the cache."""
    count = len(train_set)
    chunks = []
    starts = range(0, count, batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="caching the frozen trunk", unit="batch", leave=False)
    for start in starts:
        crops = [
            train_set.center_crop_image(i) for i in range(start, min(count, start + batch_size))
        ]
        chunks.append(net.trunk_features(torch.stack(crops).to(device)).cpu())
    features = torch.cat(chunks)
    if report:
        print(
            f"frozen trunk ({net.frozen_blocks} blocks) cached for {count} training images: "
            f"{features.numel() * features.element_size() / 2**20:.1f} MiB",
            file=sys.stderr,
        )
    return _TrunkDataset(features, train_set.positions_m, train_set.quats_wxyz)


def _log_epoch(
    writer: Any,
    csv_path: Path,
    epoch: int,
    step: int,
    lr: float,
    mean_loss: list[float],
    loss_fn: torch.nn.Module,
    val: dict | None,
    score: float | None,
    epoch_time_s: float,
    elapsed_s: float,
) -> None:
    s_x = loss_fn.s_x.detach().item() if hasattr(loss_fn, "s_x") else None
    s_q = loss_fn.s_q.detach().item() if hasattr(loss_fn, "s_q") else None
    row = {
        "epoch": epoch,
        "step": step,
        "lr": lr,
        "loss": mean_loss[0],
        "loss_position": mean_loss[1],
        "loss_orientation": mean_loss[2],
        "s_x": s_x,
        "s_q": s_q,
        "val_median_translation_m": val["median_translation_m"] if val else None,
        "val_median_rotation_deg": val["median_rotation_deg"] if val else None,
        "val_score": score,
        "epoch_time_s": round(epoch_time_s, 3),
        "elapsed_s": round(elapsed_s, 3),
    }
    with csv_path.open("a", newline="") as handle:
        csv.writer(handle).writerow(["" if row[k] is None else row[k] for k in _CSV_FIELDS])
    writer.add_scalar("epoch/loss", mean_loss[0], step)
    if s_x is not None:
        writer.add_scalar("epoch/s_x", s_x, step)
        writer.add_scalar("epoch/s_q", s_q, step)
    if val is not None:
        writer.add_scalar("val/median_translation_m", val["median_translation_m"], step)
        writer.add_scalar("val/median_rotation_deg", val["median_rotation_deg"], step)
        writer.add_scalar("val/score", score, step)
    writer.flush()


# ---------------------------------------------------------------------------------------- CLI


def _model_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()  # a bare word is a string
    return key.strip(), parsed


def _crop_arg(text: str) -> tuple[int, int]:
    try:
        return _parse_crop(text)
    except PoseNetTrainError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``posenet-train`` argument parser."""
    d = DEFAULTS
    p = argparse.ArgumentParser(
        prog="posenet-train",
        description="Train a PoseNet-style camera relocalizer on a posed image dataset.",
    )
    p.add_argument(
        "--dataset",
        help="dataset folder or FORMAT:PATH (required for a new run; with --qat-from, the "
        "source run's)",
    )
    p.add_argument(
        "--output", required=True, help="run folder: checkpoints, log.csv, tensorboard/"
    )
    p.add_argument("--model", choices=MODEL_NAMES, help=f"network (default {d['model']})")
    p.add_argument(
        "--model-arg",
        action="append",
        type=_model_arg,
        metavar="KEY=VALUE",
        help="extra model constructor argument, repeatable, VALUE a Python literal (e.g. "
        "dropout=0.2, aux_heads=False, lstm_hidden=128); see posenet_train.models",
    )
    p.add_argument(
        "--pretrained",
        help="backbone weights: auto (the model's default), none, imagenet, or a weights file",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        help="epochs to train in total (default: derived from --steps and --min-epochs)",
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        help=f"optimizer steps to train for when --epochs is not given: the run lasts enough "
        f"whole epochs for them, at least --min-epochs ({d['steps']})",
    )
    p.add_argument(
        "--min-epochs",
        type=positive_int,
        help=f"with --steps, at least this many epochs on a large set ({d['min_epochs']})",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"images per step and process (default: the largest, {AUTO_BATCH_MIN} to "
        f"{AUTO_BATCH_MAX}, that makes --min-steps-per-epoch steps per epoch)",
    )
    p.add_argument(
        "--min-steps-per-epoch",
        type=positive_int,
        help=f"steps per epoch the derived batch size aims for ({d['min_steps_per_epoch']}); a "
        "small set then still takes many steps instead of one large batch per epoch",
    )
    p.add_argument("--lr", type=positive_float, help=f"learning rate ({d['lr']})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help=f"optimizer ({d['optimizer']})")
    p.add_argument("--momentum", type=non_negative_float, help=f"SGD momentum ({d['momentum']})")
    p.add_argument(
        "--weight-decay", type=non_negative_float, help=f"L2 weight decay ({d['weight_decay']})"
    )
    p.add_argument(
        "--lr-schedule", choices=LR_SCHEDULES, help=f"per-epoch lr schedule ({d['lr_schedule']})"
    )
    p.add_argument(
        "--lr-step-size",
        type=positive_int,
        help=f"epochs between lr drops, step schedule ({d['lr_step_size']})",
    )
    p.add_argument(
        "--lr-gamma",
        type=positive_float,
        help=f"lr factor per drop, step schedule ({d['lr_gamma']})",
    )
    p.add_argument(
        "--loss",
        choices=LOSS_NAMES,
        help="posenet: |dx| + beta |dq|; learned: Kendall 2017 weighting; nll: Gaussian "
        "negative log-likelihood with per-image variances, for models built with "
        f"--model-arg uncertainty=True ({d['loss']})",
    )
    p.add_argument(
        "--beta",
        type=positive_float,
        help=f"orientation weight of the posenet loss, positions normalised ({d['beta']})",
    )
    p.add_argument(
        "--loss-norm",
        choices=NORMS,
        help="residual norm (default: l2 for posenet, l1 for learned)",
    )
    p.add_argument(
        "--color-jitter",
        type=non_negative_float,
        help="brightness/contrast/saturation jitter strength in [0, 1) (0)",
    )
    p.add_argument(
        "--max-shift",
        type=non_negative_int,
        metavar="PX",
        help="training crops: at most PX pixels from the centre crop (default: anywhere in the "
        "resized image, as in the PoseNet paper; large shifts act as orientation label noise)",
    )
    p.add_argument(
        "--view-jitter",
        type=non_negative_float,
        metavar="FRACTION",
        help="training only: turn the camera about its centre by a random pan and tilt up to "
        "FRACTION of the field of view (needs the dataset's intrinsics), warping the image and "
        f"rotating the label exactly; in [0, {MAX_VIEW_FRACTION}] (default 0: off; 0.1 with "
        "--roll-jitter-deg 10 helped a 40-image object set, and cost a wide-camera drive its "
        "rotation accuracy; any jitter stops --frozen-blocks caching the trunk's output)",
    )
    p.add_argument(
        "--roll-jitter-deg",
        type=non_negative_float,
        metavar="DEG",
        help="training only: random roll about the optical axis up to DEG degrees, image and "
        f"label together; in [0, {MAX_ROLL_DEG:g}] (default 0: off)",
    )
    p.add_argument(
        "--resize",
        type=positive_int,
        help="shorter image side before cropping, pixels (default: derived from the data, with"
        " --crop the smallest that fits it in every image, else 128)",
    )
    p.add_argument(
        "--crop",
        type=_crop_arg,
        help="network input size N or H,W: random crops in training, centre crop for "
        "validation (default: derived from the dataset's image sizes - the whole frame at"
        " shorter side 128, long side by the camera's aspect ratio; a square crop when the set"
        " holds both portrait and landscape images)",
    )
    p.add_argument("--seed", type=int, help=f"random seed ({d['seed']})")
    p.add_argument("--workers", type=non_negative_int, help="DataLoader worker processes (0)")
    p.add_argument(
        "--val-every",
        type=non_negative_int,
        help="validate on the test split every N epochs and after the last; 0: never (default: "
        f"about {VALIDATIONS_PER_RUN} times per run)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        help="torch CPU threads per process (default: torch's choice)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        help="continue a run from a checkpoint path, or with 'auto' (the value when none is "
        "given) from OUTPUT/last.pt if it exists",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an existing run in --output and start again",
    )
    p.add_argument(
        "--max-steps",
        type=positive_int,
        help="stop after this many optimizer steps (smoke tests)",
    )
    p.add_argument(
        "--freeze-backbone-epochs",
        type=non_negative_int,
        help="train only the heads for the first N epochs (0)",
    )
    p.add_argument(
        "--frozen-blocks",
        type=non_negative_int,
        help="keep the backbone's stem and first N blocks at their pretrained weights for the "
        "whole run (0; posenet-efficientnet-lite0: up to 16, 11 keeps everything before the "
        "last two stages). With --max-shift 0 and no --color-jitter their output is computed "
        "once per training image and cached, so an epoch costs a fraction of a full one",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="train with NHWC tensors (same model, different memory layout): about 1.8x "
        "faster per step for EfficientNet-Lite0 on CPU (oneDNN)",
    )
    p.add_argument(
        "--qat-from",
        metavar="CHECKPOINT",
        help="quantisation-aware fine-tuning: a new run from this checkpoint's weights with INT8"
        " simulated (posenet_train.qat), for an INT8 file that keeps the accuracy; options not "
        f"given are the source run's, but {QAT_STEPS} steps (--steps) at {QAT_LR_FACTOR:g}x its"
        " --lr. Then export and quantize its last.pt as usual (quantize --reference "
        "SOURCE.onnx compares with the source's FP32 file)",
    )
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _print_result(result: dict) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        best = result["best_val"]
        line = (
            f"trained {result['epochs_done']} epochs ({result['global_step']} steps); "
            f"{result['last']}"
        )
        if best:
            line += (
                f"; best validation median {best['median_translation_m']:.3f} m, "
                f"{best['median_rotation_deg']:.2f} deg ({result['best']})"
            )
        print(line)


def cli(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``posenet-train`` / ``python -m posenet_train.train``."""
    args = build_parser().parse_args(argv)
    return run_main(
        "posenet-train",
        main,
        args,
        then=_print_result,
        handled=("model_arg", "no_progress"),
        model_kwargs=dict(args.model_arg) if args.model_arg else None,
        progress=not args.no_progress,
    )


if __name__ == "__main__":
    sys.exit(cli())
