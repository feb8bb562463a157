"""Checkpoints: round trip, atomic writes, and every way a checkpoint file can be bad."""

from __future__ import annotations

import os
import urllib.error

import pytest
import torch

from posenet_train.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from posenet_train.errors import CheckpointError
from posenet_train.losses import LearnedWeightingLoss
from posenet_train.models import build_model


def _training_state(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("posenet-tiny", aux_heads=True)
    model.set_position_stats([1.0, 2.0, 3.0], 0.25)
    loss = LearnedWeightingLoss()
    optimizer = torch.optim.Adam(list(model.parameters()) + list(loss.parameters()), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    outputs = model(torch.rand(2, 3, 32, 32))
    sum(p.sum() + q.sum() for p, q in outputs).backward()
    optimizer.step()
    scheduler.step()
    return model, loss, optimizer, scheduler


def _save(path, model, loss=None, optimizer=None, scheduler=None, **extra):
    return save_checkpoint(
        path,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        epoch=3,
        model_args=model.constructor_args,
        extra={"resize_shorter": 40, "crop_hw": [32, 32], **extra},
        loss=loss,
    )


def test_round_trip(tmp_path):
    model, loss, optimizer, scheduler = _training_state()
    path = _save(tmp_path / "run" / "last.pt", model, loss, optimizer, scheduler, note="x")
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["epoch"] == 3
    assert ckpt["model_args"] == model.constructor_args
    assert ckpt["extra"]["note"] == "x"
    assert ckpt["loss_state"]["s_q"].item() == pytest.approx(loss.s_q.item())
    assert ckpt["scheduler_state"]["last_epoch"] == 1
    restored_opt = torch.optim.Adam(list(model.parameters()) + list(loss.parameters()))
    restored_opt.load_state_dict(ckpt["optimizer_state"])

    rebuilt, ckpt2 = model_from_checkpoint(path)
    assert not rebuilt.training
    assert ckpt2["epoch"] == 3
    x = torch.rand(3, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        for a, b in zip(model(x), rebuilt(x), strict=True):
            assert torch.equal(a, b)
    assert float(rebuilt.position_scale) == 0.25


def test_file_permissions_follow_the_umask(tmp_path):
    model, *_ = _training_state()
    path = _save(tmp_path / "last.pt", model)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    model, *_ = _training_state()
    path = _save(tmp_path / "last.pt", model)
    before = path.read_bytes()

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="last.pt.*disk full"):
        _save(path, model)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_model_from_checkpoint_never_refetches_pretrained_weights(tmp_path, monkeypatch):
    """A model trained from "imagenet" loads from its checkpoint on a machine without internet."""

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    model = build_model("posenet-googlenet", aux_heads=False)
    args = {**model.constructor_args, "pretrained": "imagenet"}
    path = save_checkpoint(
        tmp_path / "g.pt", model=model, optimizer=None, scheduler=None, epoch=1, model_args=args
    )
    rebuilt, ckpt = model_from_checkpoint(path)
    assert ckpt["model_args"]["pretrained"] == "imagenet"
    assert torch.equal(rebuilt.backbone.conv1.conv.weight, model.backbone.conv1.conv.weight)


def _corrupt(kind: str, path):
    model, *_ = _training_state()
    if kind == "missing":
        return
    if kind == "folder":
        path.mkdir()
        return
    if kind == "empty":
        path.write_bytes(b"")
        return
    if kind == "garbage":
        path.write_bytes(b"\x00\x01 definitely not a checkpoint" * 10)
        return
    _save(path, model)
    if kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "plain_state_dict":
        torch.save(model.state_dict(), path)
    elif kind == "wrong_version":
        ckpt = torch.load(path, weights_only=True)
        torch.save({**ckpt, "version": 99}, path)
    elif kind == "no_model_state":
        ckpt = torch.load(path, weights_only=True)
        del ckpt["model_state"]
        torch.save(ckpt, path)
    elif kind == "pickled_code":
        torch.save({"format": CHECKPOINT_FORMAT, "payload": _Unsafe()}, path)


class _Unsafe:
    """weights_only loading must refuse arbitrary objects."""


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("missing", "does not exist"),
        ("folder", "is a folder"),
        ("empty", "corrupt"),
        ("garbage", "corrupt"),
        ("truncated", "corrupt"),
        ("pickled_code", "corrupt"),
        ("plain_state_dict", "not a posenet_train checkpoint"),
        ("wrong_version", "version 99"),
        ("no_model_state", "lacks model_state"),
    ],
)
def test_bad_checkpoint_files(tmp_path, kind, pattern):
    path = tmp_path / "ckpt.pt"
    _corrupt(kind, path)
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError):
        model_from_checkpoint(path)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ({"name": "posenet-tiny", "width": 16}, "do not fit"),
        ({"name": "no-such-model"}, "unknown model name"),
        ({"name": "posenet-tiny", "colour": "red"}, "colour"),
    ],
)
def test_checkpoint_with_mismatched_model_args(tmp_path, args, pattern):
    model, *_ = _training_state()
    path = save_checkpoint(
        tmp_path / "x.pt", model=model, optimizer=None, scheduler=None, epoch=0, model_args=args
    )
    with pytest.raises(CheckpointError, match=pattern):
        model_from_checkpoint(path)
