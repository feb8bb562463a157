"""Training: outputs, exact resumption, options, multi-process (torchrun + gloo), bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from posenet_train.checkpoint import load_checkpoint, model_from_checkpoint
from posenet_train.data import position_stats
from posenet_train.datasets import load_split
from posenet_train.errors import CheckpointError, DatasetError, PoseNetTrainError
from posenet_train.train import build_parser, cli, main

sys.path.insert(0, str(Path(__file__).parent))
from tiny_scene import CROP, RESIZE, TINY_TRAIN, write_tiny_cambridge  # noqa: E402

# posenet-tiny at 32x32: a training step takes milliseconds; dropout and colour jitter keep the
# random streams busy so resumption has something to get wrong. The step lr schedule: these
# runs change --epochs on resume, which a cosine schedule (the default) does not follow.
TINY = {
    **TINY_TRAIN,
    "color_jitter": 0.3,
    "lr": 1e-3,
    "lr_schedule": "step",
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_tiny_cambridge(tmp_path_factory.mktemp("tiny") / "scene")


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_run_writes_checkpoints_logs_and_tensorboard(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--dataset", str(dataset), "--output", str(out), "--model", "posenet-tiny"]
    argv += ["--epochs", "2", "--batch-size", "4", "--resize", str(RESIZE), "--crop", str(CROP)]
    argv += ["--threads", "1", "--no-progress", "--lr-schedule", "cosine", "--seed", "3"]
    argv += ["--model-arg", "aux_heads=True", "--model-arg", "dropout=0.0"]
    assert cli(argv) == 0
    assert "trained 2 epochs" in capsys.readouterr().out
    for name in ("last.pt", "best.pt", "log.csv", "config.json"):
        assert (out / name).is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())
    rows = _rows(out / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[-1]["step"] == "6"  # 12 images, batch 4
    assert float(rows[-1]["val_median_translation_m"]) > 0
    assert float(rows[0]["lr"]) > float(rows[1]["lr"])  # cosine
    ckpt = load_checkpoint(out / "last.pt")
    extra = ckpt["extra"]
    assert ckpt["epoch"] == 2 and extra["global_step"] == 6
    assert extra["resize_shorter"] == RESIZE and extra["crop_hw"] == [CROP, CROP]
    assert extra["dataset"] == str(dataset)
    assert extra["val"] == extra["last_val"] and extra["val"]["count"] == 4
    assert extra["config"]["seed"] == 3 and len(extra["rng"]) == 1
    assert ckpt["model_args"]["aux_heads"] is True and ckpt["model_args"]["dropout"] == 0.0
    config = json.loads((out / "config.json").read_text())
    assert config["model_args"]["name"] == "posenet-tiny"
    # Position normalisation comes from the training split.
    mean, scale = position_stats(load_split(dataset, "train"))
    model, _ = model_from_checkpoint(out / "last.pt")
    assert np.allclose(model.position_mean.numpy(), mean, atol=1e-6)
    assert float(model.position_scale) == pytest.approx(scale, rel=1e-6)


def test_resume_continues_exactly(dataset, tmp_path):
    straight = main(dataset, tmp_path / "a", epochs=2, **TINY)
    main(dataset, tmp_path / "b", epochs=1, **TINY)
    resumed = main(None, tmp_path / "b", epochs=2, resume="auto", threads=1, progress=False)
    assert resumed["epochs_done"] == 2 and resumed["global_step"] == straight["global_step"]
    a, b = load_checkpoint(straight["last"]), load_checkpoint(resumed["last"])
    for key, value in a["model_state"].items():
        assert torch.allclose(value.double(), b["model_state"][key].double(), atol=1e-6), key
    assert a["extra"]["last_val"] == pytest.approx(b["extra"]["last_val"])
    assert len(_rows(tmp_path / "b" / "log.csv")) == 2


def test_learned_loss_weights_train_and_are_saved(dataset, tmp_path):
    result = main(
        dataset,
        tmp_path / "run",
        epochs=1,
        loss="learned",
        lr=0.05,
        **{k: v for k, v in TINY.items() if k != "lr"},
    )
    loss_state = load_checkpoint(result["last"])["loss_state"]
    assert set(loss_state) == {"s_x", "s_q"}
    assert loss_state["s_q"].item() != pytest.approx(-3.0)
    row = _rows(tmp_path / "run" / "log.csv")[0]
    assert float(row["s_q"]) == pytest.approx(loss_state["s_q"].item())


def test_existing_run_needs_resume_or_overwrite(dataset, tmp_path):
    out = tmp_path / "run"
    main(dataset, out, epochs=1, max_steps=1, **TINY)
    with pytest.raises(PoseNetTrainError, match="already holds a training run"):
        main(dataset, out, epochs=1, **TINY)
    result = main(dataset, out, epochs=1, max_steps=2, overwrite=True, **TINY)
    assert result["global_step"] == 2
    assert len(_rows(out / "log.csv")) == 1
    with pytest.raises(PoseNetTrainError, match="contradict"):
        main(dataset, out, resume="auto", overwrite=True, **TINY)


@pytest.mark.parametrize(
    ("option", "value"), [("crop", 24), ("model", "posenet-googlenet"), ("loss", "learned")]
)
def test_resume_rejects_changed_options(dataset, tmp_path, option, value):
    out = tmp_path / "run"
    main(dataset, out, epochs=1, max_steps=1, **TINY)
    with pytest.raises(CheckpointError, match=f"cannot resume .*{option}"):
        main(dataset, out, epochs=2, resume="auto", **{**TINY, option: value})


def test_resume_accepts_repeated_options_and_a_relative_dataset(dataset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.chdir(dataset.parent)
    main(dataset.name, out, epochs=1, max_steps=1, pretrained="none", **TINY)
    assert load_checkpoint(out / "last.pt")["extra"]["dataset"] == str(dataset)
    result = main(dataset, out, epochs=2, resume="auto", pretrained="auto", **TINY)
    assert result["epochs_done"] == 2


def test_resume_auto_without_checkpoint_starts_a_new_run(dataset, tmp_path):
    result = main(dataset, tmp_path / "new", epochs=1, max_steps=1, resume="auto", **TINY)
    assert result["epochs_done"] == 1


def test_max_steps_and_no_validation(dataset, tmp_path):
    result = main(dataset, tmp_path / "run", epochs=5, max_steps=4, val_every=0, **TINY)
    assert result["global_step"] == 4 and result["epochs_done"] == 2
    assert result["best"] is None and not (tmp_path / "run" / "best.pt").exists()
    assert load_checkpoint(result["last"])["extra"]["val"] is None


def test_freeze_backbone_epochs_train_only_the_heads(dataset, tmp_path):
    torch.manual_seed(0)
    result = main(dataset, tmp_path / "run", epochs=1, freeze_backbone_epochs=1, **TINY)
    state = load_checkpoint(result["last"])["model_state"]
    # Rebuild the initial weights: the run seeds torch with its seed before building the model.
    from posenet_train.models import build_model

    torch.manual_seed(0)
    initial = build_model("posenet-tiny").state_dict()
    assert torch.equal(state["backbone.stage1.0.weight"], initial["backbone.stage1.0.weight"])
    assert torch.equal(
        state["backbone.stage1.1.running_mean"], initial["backbone.stage1.1.running_mean"]
    )
    assert not torch.equal(
        state["heads.0.regressor.fc.weight"], initial["heads.0.regressor.fc.weight"]
    )


def test_frozen_blocks_are_cached_when_crops_are_fixed(dataset, tmp_path, monkeypatch, capsys):
    """Caching the frozen trunk changes nothing but the time: same weights as computing it every
    step, and the frozen stage keeps its initial weights and statistics."""
    import posenet_train.train as train_module
    from posenet_train.models import build_model

    options = {**TINY, "color_jitter": 0.0, "max_shift": 0, "model_kwargs": {"dropout": 0.0}}
    options["progress"] = True
    cached = main(dataset, tmp_path / "cached", epochs=2, frozen_blocks=1, **options)
    assert "frozen trunk (1 blocks) cached for" in capsys.readouterr().err
    monkeypatch.setattr(train_module, "_can_cache_trunk", lambda cfg: False)
    direct = main(dataset, tmp_path / "direct", epochs=2, frozen_blocks=1, **options)
    assert "(not cached)" in capsys.readouterr().err

    a = load_checkpoint(cached["last"])["model_state"]
    b = load_checkpoint(direct["last"])["model_state"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    torch.manual_seed(0)
    initial = build_model("posenet-tiny", dropout=0.0).state_dict()
    for key in ("backbone.stage1.0.weight", "backbone.stage1.1.running_mean"):
        assert torch.equal(a[key], initial[key]), key
    assert not torch.equal(a["backbone.stage2.0.weight"], initial["backbone.stage2.0.weight"])
    assert load_checkpoint(cached["last"])["extra"]["config"]["frozen_blocks"] == 1


@pytest.mark.parametrize("frozen_blocks", [0, 1])
def test_channels_last_trains_the_same_model(dataset, tmp_path, frozen_blocks):
    options = {**TINY, "color_jitter": 0.0, "max_shift": 0, "frozen_blocks": frozen_blocks}
    options["model_kwargs"] = {"dropout": 0.0}
    nchw = main(dataset, tmp_path / "nchw", epochs=2, **options)
    nhwc = main(dataset, tmp_path / "nhwc", epochs=2, channels_last=True, **options)
    a = load_checkpoint(nchw["last"])["model_state"]
    b = load_checkpoint(nhwc["last"])["model_state"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_frozen_blocks_resume_exactly(dataset, tmp_path):
    options = {**TINY, "color_jitter": 0.0, "max_shift": 0, "frozen_blocks": 1}
    straight = main(dataset, tmp_path / "straight", epochs=2, **options)
    main(dataset, tmp_path / "resumed", epochs=1, **options)
    resumed = main(dataset, tmp_path / "resumed", epochs=2, resume="auto", **options)
    a = load_checkpoint(straight["last"])["model_state"]
    b = load_checkpoint(resumed["last"])["model_state"]
    assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize(
    "argv",
    [
        ["--frozen-blocks", "-1"],
        ["--frozen-blocks", "two"],
        ["--epochs", "0"],
        ["--epochs", "two"],
        ["--batch-size", "-4"],
        ["--model", "resnet-50"],
        ["--optimizer", "rmsprop"],
        ["--lr-schedule", "linear"],
        ["--loss", "huber"],
        ["--crop", "0"],
        ["--crop", "32,x"],
        ["--lr", "-1"],
        ["--lr", "nan"],
        ["--beta", "0"],
        ["--workers", "-1"],
        ["--unknown-flag"],
        ["--model-arg", "dropout"],
        ["--model-arg", "2x=1"],
        # the schedule
        ["--steps", "0"],
        ["--steps", "many"],
        ["--steps", "-5"],
        ["--min-steps-per-epoch", "0"],
        ["--min-steps-per-epoch", "1.5"],
        ["--min-epochs", "-1"],
        ["--min-epochs", ""],
    ],
)
def test_bad_cli_arguments_exit_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--output", str(tmp_path), *argv])
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_output_is_required(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--dataset", "x"])
    assert info.value.code == 2


def test_negative_max_shift_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--dataset", "x", "--output", "y", "--max-shift", "-1"])
    assert info.value.code == 2
    assert "--max-shift: must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--dataset", "{missing}"], "dataset folder not found"),
        (["--dataset", "{dataset}", "--resize", "16"], "must be >= the crop's shorter side"),
        (["--dataset", "{dataset}", "--color-jitter", "1.5"], "color_jitter"),
        (["--dataset", "{dataset}", "--lr-gamma", "2"], "lr_gamma"),
        (["--resume", "{missing}/last.pt"], "does not exist"),
        ([], "--dataset is required"),
        (["--dataset", "{dataset}", "--model-arg", "colour=1"], "takes no argument(s) colour"),
        (["--dataset", "{dataset}", "--model-arg", "pretrained=x"], "--pretrained"),
        (["--dataset", "{dataset}", "--frozen-blocks", "2"], "can keep 0..1 backbone blocks"),
    ],
)
def test_bad_options_are_reported_by_the_cli(dataset, tmp_path, capsys, args, pattern):
    missing = tmp_path / "missing"
    argv = [a.format(dataset=dataset, missing=missing) for a in args]
    argv += ["--output", str(tmp_path / "run"), "--model", "posenet-tiny", "--crop", str(CROP)]
    argv += ["--no-progress", "--threads", "1"]
    if "--resize" not in argv:
        argv += ["--resize", str(RESIZE)]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "posenet-train: error:" in err and pattern in err


def test_diverging_loss_stops_with_a_clear_error(dataset, tmp_path, monkeypatch):
    import posenet_train.train as train_module

    real = train_module.multi_head_loss

    def nan_loss(*args, **kwargs):
        out = real(*args, **kwargs)
        return out._replace(total=out.total * float("nan"))

    monkeypatch.setattr(train_module, "multi_head_loss", nan_loss)
    with pytest.raises(PoseNetTrainError, match="loss became nan at step 1"):
        main(dataset, tmp_path / "run", epochs=1, **TINY)


def test_malformed_dataset_line_is_a_dataset_error(tmp_path):
    scene = write_tiny_cambridge(tmp_path / "scene", n_train=4, n_test=2)
    train_file = scene / "dataset_train.txt"
    train_file.write_text(train_file.read_text() + "seq1/frame00000.png 1 2 3 not numbers\n")
    with pytest.raises(DatasetError, match="dataset_train.txt"):
        main(scene, tmp_path / "run", epochs=1, **TINY)


def test_torchrun_two_processes_gloo(dataset, tmp_path):
    """DDP on the CPU: torchrun starts 2 ranks, gloo averages gradients, rank 0 writes."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", "-m", "posenet_train.train"]
    command += ["--dataset", str(dataset), "--output", str(out), "--model", "posenet-tiny"]
    command += ["--epochs", "2", "--batch-size", "3", "--resize", str(RESIZE)]
    command += ["--crop", str(CROP), "--threads", "1", "--no-progress", "--device", "cpu"]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("trained 2 epochs") == 1  # only rank 0 reports
    ckpt = load_checkpoint(out / "last.pt")
    # 12 images over 2 ranks = 6 per rank = 2 steps of 3 per epoch.
    assert ckpt["extra"]["global_step"] == 4
    assert len(ckpt["extra"]["rng"]) == 2  # every rank's random state, for resumption
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert [r["epoch"] for r in _rows(out / "log.csv")] == ["1", "2"]


# ----------------------------------------------------------------------------------------------
# Schedules in optimizer steps (issue 15)


@pytest.mark.parametrize(
    ("images", "given", "expected"),
    [
        # (batch, steps per epoch, epochs, validate every)
        (273, {}, (16, 17, 148, 5)),  # middlebury_dino: the measured recipe's batch and length
        (100, {}, (12, 8, 313, 11)),
        (40, {}, (5, 8, 313, 11)),
        (39, {}, (4, 9, 278, 10)),  # issue 15's 39 images: 9 steps per epoch, not 1
        (3, {}, (3, 1, 2500, 84)),  # fewer images than the smallest derived batch
        (4800, {}, (16, 300, 30, 1)),  # a large set: the epoch floor decides
        (39, {"batch_size": 32, "epochs": 150}, (32, 1, 150, 5)),  # both given: as before
        (39, {"epochs": 150}, (4, 9, 150, 5)),
        (39, {"batch_size": 8}, (8, 4, 625, 21)),
        (273, {"steps": 500}, (16, 17, 30, 1)),
        (273, {"min_steps_per_epoch": 34}, (8, 34, 74, 3)),
        (273, {"min_epochs": 200}, (16, 17, 200, 7)),
        (273, {"val_every": 0}, (16, 17, 148, 0)),
    ],
)
def test_schedule_is_derived_from_steps(images, given, expected):
    from posenet_train.train import DEFAULTS, _resolve_schedule

    cfg = {**DEFAULTS, **given}
    schedule = _resolve_schedule(cfg, images)
    batch, per_epoch, epochs, val_every = expected
    assert (schedule["batch_size"], schedule["steps_per_epoch"]) == (batch, per_epoch)
    assert (schedule["epochs"], schedule["val_every"]) == (epochs, val_every)
    assert schedule["total_steps"] == per_epoch * epochs
    assert (cfg["batch_size"], cfg["epochs"], cfg["val_every"]) == (batch, epochs, val_every)
    assert ("batch_size" in schedule["derived"]) == ("batch_size" not in given)
    assert ("epochs" in schedule["derived"]) == ("epochs" not in given)


def test_derived_schedule_is_shown_recorded_and_resumes_exactly(dataset, tmp_path, capsys):
    """Bare defaults on 12 images: batch and epochs come from the step budget, the run says so,
    the checkpoint records it, and an interrupted run of the (cosine) default resumes exactly."""
    options = {k: v for k, v in TINY.items() if k not in ("batch_size", "lr_schedule")}
    options.update(steps=6, min_epochs=1, min_steps_per_epoch=3)
    straight = main(dataset, tmp_path / "a", **options)
    err = capsys.readouterr().err
    assert "schedule: 12 training images, batch 4 (derived: >= 3 steps per epoch" in err
    assert "3 steps per epoch, 2 epochs (derived: 6 steps, at least 1 epochs)" in err
    assert straight["epochs_done"] == 2 and straight["global_step"] == 6
    extra = load_checkpoint(straight["last"])["extra"]
    assert extra["schedule"]["derived"] == ["batch_size", "epochs", "val_every"]
    assert extra["config"]["batch_size"] == 4 and extra["config"]["epochs"] == 2
    assert extra["config"]["lr_schedule"] == "cosine"
    assert json.loads((tmp_path / "a" / "config.json").read_text())["schedule"]["epochs"] == 2

    main(dataset, tmp_path / "b", max_steps=3, **options)  # stopped after the first epoch
    resumed = main(None, tmp_path / "b", resume="auto", threads=1, progress=False)
    assert resumed["epochs_done"] == 2 and resumed["global_step"] == 6
    a, b = load_checkpoint(straight["last"]), load_checkpoint(resumed["last"])
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key

    # A larger step budget on resume trains longer at the run's batch size.
    longer = main(None, tmp_path / "b", resume="auto", steps=9, threads=1, progress=False)
    assert longer["epochs_done"] == 3 and longer["global_step"] == 9


def test_explicit_batch_and_epochs_record_no_step_budget(dataset, tmp_path):
    result = main(dataset, tmp_path / "run", epochs=1, **TINY)
    config = load_checkpoint(result["last"])["extra"]["config"]
    assert config["batch_size"] == 4 and config["epochs"] == 1
    assert config["steps"] is None and config["min_epochs"] is None
    assert config["min_steps_per_epoch"] is None


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"epochs": 2, "steps": 10}, "give epochs or steps, not both"),
        ({"epochs": 2, "min_epochs": 5}, "give epochs or min_epochs, not both"),
        ({"batch_size": 4, "min_steps_per_epoch": 2}, "batch_size or min_steps_per_epoch"),
        ({"steps": 0}, "steps must be a positive integer, got 0"),
        ({"steps": 2.5}, "steps must be a positive integer, got 2.5"),
        ({"min_steps_per_epoch": -1}, "min_steps_per_epoch must be a positive integer"),
        ({"min_epochs": True}, "min_epochs must be a positive integer"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"epochs": -3}, "epochs must be a positive integer"),
    ],
)
def test_bad_schedule_options_are_refused(dataset, tmp_path, kwargs, pattern):
    options = {k: v for k, v in TINY.items() if k != "batch_size"}
    with pytest.raises(PoseNetTrainError, match=pattern):
        main(dataset, tmp_path / "run", **{**options, **kwargs})
    assert not (tmp_path / "run" / "last.pt").exists()


def test_cli_refuses_contradicting_schedule_flags(dataset, tmp_path, capsys):
    argv = ["--dataset", str(dataset), "--output", str(tmp_path / "run")]
    argv += ["--model", "posenet-tiny", "--resize", str(RESIZE), "--crop", str(CROP)]
    argv += ["--epochs", "2", "--steps", "10"]
    assert cli(argv) == 2
    assert "give epochs or steps, not both" in capsys.readouterr().err
