"""Training checkpoints: one ``torch.save`` file written atomically, read back with checks.

A checkpoint is a dict:

* ``format``: ``"posenet_train.checkpoint"``, ``version``: 1;
* ``model_args``: ``{"name": ..., **kwargs}`` so ``build_model(**model_args)`` rebuilds the model;
* ``model_state``: the model's state dict (including the normalisation and position buffers);
* ``optimizer_state``, ``scheduler_state``, ``loss_state``: state dicts or None;
* ``epoch``: number of completed epochs;
* ``extra``: what the trainer records besides; :mod:`posenet_train.train` writes
  ``resize_shorter`` (int), ``crop_hw`` ([H, W]), ``dataset`` (str), ``global_step``,
  ``config`` (the training options), ``val`` (the validation summary of exactly these weights,
  from :func:`posenet_train.evaluate.summarize`, or None when this epoch was not validated),
  ``best_val`` / ``last_val`` (the run's best and latest validation summaries), ``best_score``
  and ``rng`` (RNG states per rank for exact resumption).

Files are loaded with ``torch.load(weights_only=True)``: only tensors and plain Python
containers are stored, so loading never executes code from the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from posenet_core.files import replaced_atomically
from posenet_train.errors import CheckpointError, PoseNetTrainError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "atomic_write_bytes",
    "load_checkpoint",
    "model_from_checkpoint",
    "save_checkpoint",
    "save_model_checkpoint",
    "unwrap_model",
]

CHECKPOINT_FORMAT = "posenet_train.checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED_KEYS = ("format", "version", "model_args", "model_state", "epoch")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel / DataParallel wrapper (or the model)."""
    return model.module if hasattr(model, "module") else model


def _atomic_write(path: Path, write) -> None:
    with replaced_atomically(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and
    ``os.replace``: readers see the old file or the new one, never a half-written one."""
    path = Path(path)
    _atomic_write(path, lambda handle: handle.write(data))
    return path


def _first_line(exc: BaseException, limit: int = 300) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else "no details"


def _state(obj: Any) -> dict | None:
    return None if obj is None else obj.state_dict()


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    epoch: int,
    model_args: dict[str, Any],
    extra: dict[str, Any] | None = None,
    loss: nn.Module | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file in the same folder, fsync, os.replace).

    ``model`` may be wrapped in DistributedDataParallel; the inner model's state is saved.
    ``loss`` is the loss module when it has learnable parameters (learned weighting).
    Raises CheckpointError naming the file when it cannot be written.
    """
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_args": dict(model_args),
        "model_state": unwrap_model(model).state_dict(),
        "optimizer_state": _state(optimizer),
        "scheduler_state": _state(scheduler),
        "loss_state": _state(loss),
        "epoch": int(epoch),
        "extra": dict(extra or {}),
    }
    try:
        _atomic_write(path, lambda handle: torch.save(payload, handle))
    except (OSError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc}") from exc
    return path


def save_model_checkpoint(
    path: str | Path, model: nn.Module, *, extra: dict[str, Any] | None = None, epoch: int = 0
) -> Path:
    """A checkpoint of ``model`` alone -- no optimizer, scheduler or loss state -- for a model
    that was not trained here (hand-made, or random weights for a benchmark) but that export and
    evaluation should read like a trained one. ``extra`` as in :func:`save_checkpoint`."""
    return save_checkpoint(
        path,
        model=model,
        optimizer=None,
        scheduler=None,
        epoch=epoch,
        model_args=model.constructor_args,
        extra=extra,
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Raises CheckpointError naming the file when it is missing, unreadable, corrupt or truncated,
    or not a posenet_train checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt zip, truncated pickle, foreign objects, ...
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a posenet_train checkpoint "
            f"(torch.load failed: {type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a posenet_train checkpoint (expected a dict with "
            f"format={CHECKPOINT_FORMAT!r})"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    if ckpt["version"] != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has version {ckpt['version']!r}; this posenet_train reads "
            f"version {CHECKPOINT_VERSION}"
        )
    if not isinstance(ckpt["model_args"], dict) or "name" not in ckpt["model_args"]:
        raise CheckpointError(f"checkpoint {path}: model_args must be a dict with a 'name'")
    ckpt.setdefault("extra", {})
    return ckpt


def model_from_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the checkpoint's model, load its weights, and return ``(model in eval mode,
    checkpoint dict)``.

    Pretrained weights are not fetched again (the checkpoint's weights replace them), so a
    checkpoint of a model trained from "imagenet" or a weights file loads anywhere.
    """
    from posenet_train.models import build_model  # the models import torchvision: load lazily

    ckpt = load_checkpoint(path, map_location)
    args = dict(ckpt["model_args"])
    if "pretrained" in args:
        args["pretrained"] = None
    try:
        model = build_model(**args)
    except PoseNetTrainError as exc:
        raise CheckpointError(f"checkpoint {path}: cannot rebuild its model: {exc}") from exc
    try:
        model.load_state_dict(ckpt["model_state"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit model {args.get('name')!r}: {_first_line(exc)}"
        ) from exc
    model.to(map_location)
    model.eval()
    return model, ckpt
