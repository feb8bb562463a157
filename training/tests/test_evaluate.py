"""Tests of posenet_train.evaluate: errors, summary, predict (single/dense), ONNX path, the
nearest-neighbour baseline, outputs and the command line."""

from __future__ import annotations

import json
import math
import sys
import types
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from posenet_core.datasets import PoseRecord, write_cambridge
from posenet_core.geometry import average_quaternions
from posenet_core.images import read_rgb
from posenet_core.metrics import THRESHOLDS, pose_errors
from posenet_core.plots import plot_error_cdfs
from posenet_core.preprocess import crop, resize_shorter
from posenet_train import evaluate
from posenet_train.datasets import load_split
from posenet_train.errors import ModelError, PoseNetTrainError
from posenet_train.evaluate import (
    cli,
    global_descriptor,
    main,
    nearest_neighbour_baseline,
    plot_trajectory,
    predict,
    predict_onnx,
    read_onnx_contract,
    summarize,
)
from posenet_train.preprocess import dense_crop_offsets


class MeanColourModel(nn.Module):
    """Stand-in obeying the models' eval-mode contract (image_BCHW 0..1 -> position, quat).

    position_m = mean (R, G, B) of the crop; orientation = rotation about z by the mean red
    value (radians) times ``gain``. Deterministic and cheap, with outputs that depend on the crop.
    """

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = gain

    def forward(self, image_bchw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        position = image_bchw.mean(dim=(2, 3))
        half = 0.5 * self.gain * position[:, 0]
        zeros = torch.zeros_like(half)
        quat = torch.stack([torch.cos(half), zeros, zeros, torch.sin(half)], dim=1)
        return position, quat


def expected_pose(crop_rgb: np.ndarray, gain: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    position = (crop_rgb.astype(np.float64) / 255.0).mean(axis=(0, 1))
    half = 0.5 * gain * position[0]
    return position, np.array([math.cos(half), 0.0, 0.0, math.sin(half)])


def make_dataset(folder: Path, train: int = 6, test: int = 3, size_hw=(36, 48)) -> Path:
    """A Cambridge-format folder with random images and poses."""
    rng = np.random.default_rng(42)
    splits: dict[str, list[PoseRecord]] = {"train": [], "test": []}
    for split, count in (("train", train), ("test", test)):
        for i in range(count):
            rgb = rng.integers(0, 256, size=(*size_hw, 3), dtype=np.uint8)
            path = folder / "images" / f"{split}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            quat = rng.normal(size=4)
            splits[split].append(PoseRecord(path, rng.normal(size=3), quat / np.linalg.norm(quat)))
        write_cambridge(folder, split, splits[split])
    return folder


# ------------------------------------------------------------------------- errors, summary


def test_summarize_statistics_and_thresholds() -> None:
    # Frames chosen on and around each threshold (a frame counts when both errors are <=).
    t = np.array([0.05, 0.05, 0.25, 0.5, 5.0, 0.01, 6.0, 0.3])
    r = np.array([5.0, 5.1, 2.0, 5.0, 10.0, 1.0, 1.0, 20.0])
    summary = summarize(t, r)
    assert summary["count"] == 8
    assert summary["median_translation_m"] == pytest.approx(np.median(t))
    assert summary["mean_translation_m"] == pytest.approx(t.mean())
    assert summary["median_rotation_deg"] == pytest.approx(np.median(r))
    assert summary["mean_rotation_deg"] == pytest.approx(r.mean())
    expected = {"5cm_5deg": 2 / 8, "25cm_2deg": 2 / 8, "50cm_5deg": 4 / 8, "5m_10deg": 6 / 8}
    assert [name for name, _, _ in THRESHOLDS] == list(expected)
    for name, share in expected.items():
        assert summary[f"share_{name}"] == pytest.approx(share), name
    with pytest.raises(PoseNetTrainError, match="non-zero number"):
        summarize(np.array([]), np.array([]))
    with pytest.raises(PoseNetTrainError, match="same"):
        summarize(np.zeros(2), np.zeros(3))


# --------------------------------------------------------------------------------- predict


def test_predict_single_crop_matches_node_preprocessing(tmp_path: Path) -> None:
    records = load_split(make_dataset(tmp_path), "test")
    position, quat = predict(
        MeanColourModel(), records, batch_size=2, resize_shorter_px=30, crop_hw=(24, 28)
    )
    assert position.shape == (3, 3) and quat.shape == (3, 4)
    for i, record in enumerate(records):
        resized = resize_shorter(read_rgb(record.image_path), 30)
        expected_p, expected_q = expected_pose(crop(resized, 3, 6, (24, 28)))
        np.testing.assert_allclose(position[i], expected_p, atol=1e-6)
        np.testing.assert_allclose(quat[i], expected_q, atol=1e-6)


def test_dense_of_identical_crops_equals_single_crop(tmp_path: Path) -> None:
    # A uniform image: all 128 crops are the same, so dense must equal the single centre crop.
    path = tmp_path / "flat.png"
    cv2.imwrite(str(path), np.full((40, 60, 3), (30, 90, 200), np.uint8))
    records = [PoseRecord(path, np.zeros(3), [1.0, 0.0, 0.0, 0.0])]
    model = MeanColourModel(gain=3.0)
    single = predict(model, records, resize_shorter_px=32, crop_hw=(24, 24))
    dense = predict(
        model, records, dense=True, batch_size=50, resize_shorter_px=32, crop_hw=(24, 24)
    )
    np.testing.assert_allclose(dense[0], single[0], atol=1e-6)
    np.testing.assert_allclose(dense[1], single[1], atol=1e-6)


def test_dense_averages_positions_and_quaternions(tmp_path: Path) -> None:
    records = load_split(make_dataset(tmp_path, train=1, test=2), "test")
    model = MeanColourModel(gain=6.0)
    position, quat = predict(
        model, records, dense=True, batch_size=40, resize_shorter_px=30, crop_hw=(24, 24)
    )
    for i, record in enumerate(records):
        resized = resize_shorter(read_rgb(record.image_path), 30)
        offsets = dense_crop_offsets(resized.shape[:2], (24, 24))
        poses = [expected_pose(crop(resized, int(t), int(s), (24, 24)), 6.0) for t, s in offsets]
        np.testing.assert_allclose(position[i], np.mean([p for p, _ in poses], axis=0), atol=1e-6)
        np.testing.assert_allclose(
            quat[i], average_quaternions(np.array([q for _, q in poses])), atol=1e-6
        )


def test_predict_rejects_bad_model_output(tmp_path: Path) -> None:
    records = load_split(make_dataset(tmp_path, train=1, test=1), "test")

    class NaNModel(MeanColourModel):
        def forward(self, image_bchw):
            position, quat = super().forward(image_bchw)
            return position * float("nan"), quat

    class OneOutput(nn.Module):
        def forward(self, image_bchw):
            return image_bchw.mean(dim=(2, 3))

    with pytest.raises(ModelError, match="non-finite"):
        predict(NaNModel(), records, resize_shorter_px=30, crop_hw=(24, 24))
    with pytest.raises(ModelError, match="must return"):
        predict(OneOutput(), records, resize_shorter_px=30, crop_hw=(24, 24))


# -------------------------------------------------------------------------------------- ONNX


def export_onnx(path: Path, metadata: dict[str, str], fixed_batch: bool = False) -> Path:
    onnx = pytest.importorskip("onnx")
    dynamic = (
        None
        if fixed_batch
        else {"image": {0: "batch"}, "position": {0: "batch"}, "orientation": {0: "batch"}}
    )
    with warnings.catch_warnings():
        # The legacy exporter (export.py's choice, for TensorRT) warns that it is deprecated.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            MeanColourModel(gain=2.0),
            (torch.rand(1, 3, 24, 24),),
            str(path),
            input_names=["image"],
            output_names=["position", "orientation"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


CONTRACT = {
    "posenet.format": "1",
    "posenet.input": "image",
    "posenet.outputs": "position,orientation",
    "posenet.input_size": "24,24",
    "posenet.resize": "30",
    "posenet.scene_frame": "map",
}


@pytest.mark.parametrize("fixed_batch", [False, True])
def test_onnx_gives_the_same_numbers_as_the_torch_model(tmp_path: Path, fixed_batch: bool) -> None:
    records = load_split(make_dataset(tmp_path / "data"), "test")
    model_path = export_onnx(tmp_path / "model.onnx", CONTRACT, fixed_batch=fixed_batch)
    for dense in (False, True):
        (position, quat), contract = predict_onnx(model_path, records, dense=dense, batch_size=2)
        assert contract.input_hw == (24, 24) and contract.resize_shorter == 30
        reference = predict(
            MeanColourModel(gain=2.0), records, dense=dense, resize_shorter_px=30, crop_hw=(24, 24)
        )
        np.testing.assert_allclose(position, reference[0], atol=1e-5)
        np.testing.assert_allclose(quat, reference[1], atol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"posenet.resize": None}, "lacks posenet.resize"),
        ({"posenet.format": "3"}, "posenet.format '3' is not supported"),
        ({"posenet.input": " "}, "posenet.input is empty"),
        ({"posenet.outputs": "position"}, "must be two different"),
        ({"posenet.outputs": "a,a"}, "must be two different"),
        ({"posenet.input_size": "24"}, "must be 'H,W'"),
        ({"posenet.input_size": "24,-1"}, "must be 'H,W'"),
        ({"posenet.resize": "20"}, r"posenet.resize '20' must be .* >= min\(H, W\) = 24"),
        ({"posenet.resize": "abc"}, "posenet.resize 'abc'"),
    ],
)
def test_read_onnx_contract_rejects_bad_metadata(change, message) -> None:
    metadata = {k: v for k, v in {**CONTRACT, **change}.items() if v is not None}
    with pytest.raises(ModelError, match=message):
        read_onnx_contract(metadata, "m.onnx")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"posenet.input": "pixels"}, "posenet.input names 'pixels'"),
        ({"posenet.outputs": "position,quat"}, "posenet.outputs names 'quat'"),
    ],
)
def test_onnx_metadata_must_match_the_graph(tmp_path: Path, change, message) -> None:
    records = load_split(make_dataset(tmp_path / "data", train=1, test=1), "test")
    model_path = export_onnx(tmp_path / "model.onnx", {**CONTRACT, **change})
    with pytest.raises(ModelError, match=message):
        predict_onnx(model_path, records)


def test_onnx_missing_and_corrupt_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        predict_onnx(tmp_path / "nope.onnx", [])
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot be loaded"):
        predict_onnx(tmp_path / "bad.onnx", [])


# ------------------------------------------------------------------------------ nn baseline


def test_global_descriptor() -> None:
    rng = np.random.default_rng(0)
    descriptor = global_descriptor(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8))
    assert descriptor.shape == (32 * 24,)
    assert abs(descriptor.mean()) < 1e-12 and np.linalg.norm(descriptor) == pytest.approx(1.0)
    assert not global_descriptor(np.full((48, 64, 3), 7, np.uint8)).any()


def test_nn_baseline_returns_the_pose_of_a_training_image_used_as_query(tmp_path: Path) -> None:
    train = load_split(make_dataset(tmp_path, train=8, test=1), "train")
    queries = []
    for index in (5, 2):
        # Same pixels, different file and (wrong) pose: the baseline must find train[index].
        copy = tmp_path / f"query{index}.png"
        copy.write_bytes(train[index].image_path.read_bytes())
        queries.append(PoseRecord(copy, np.zeros(3), [1.0, 0.0, 0.0, 0.0]))
    position, quat, found = nearest_neighbour_baseline(train, queries)
    assert found.tolist() == [5, 2]
    np.testing.assert_array_equal(position, [train[5].position_m, train[2].position_m])
    np.testing.assert_array_equal(quat, [train[5].quat_wxyz, train[2].quat_wxyz])
    with pytest.raises(PoseNetTrainError, match="needs train and query"):
        nearest_neighbour_baseline(train, [])


# ------------------------------------------------------------------------- outputs and main


def test_plots_are_png(tmp_path: Path) -> None:
    gt = np.random.default_rng(0).normal(size=(10, 3))
    for path in (
        plot_trajectory(gt, gt + 0.1, tmp_path / "t.png", "title"),
        plot_error_cdfs(np.linspace(0, 1, 10), np.linspace(0, 5, 10), tmp_path / "c.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_main_writes_summary_plots_and_reuses(tmp_path: Path, capsys) -> None:
    dataset = make_dataset(tmp_path / "data")
    out = tmp_path / "out"
    summary = main(dataset, out, baseline="nn", progress=False)
    for name in ("summary.json", "predictions.csv", "trajectory.png", "error_cdf.png"):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["count"] == 3 and on_disk["config"]["mode"] == "baseline"
    assert on_disk["database_size"] == 6
    for key in ("median_translation_m", "mean_rotation_deg", "share_5cm_5deg", "share_5m_10deg"):
        assert isinstance(on_disk[key], float)
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("image,gt_x_m")
    # Same configuration: reused (the file is not rewritten).
    mtime = (out / "summary.json").stat().st_mtime_ns
    assert main(dataset, out, baseline="nn", progress=False) == on_disk
    assert (out / "summary.json").stat().st_mtime_ns == mtime
    assert "reusing" in capsys.readouterr().out
    # Another configuration into the same folder needs overwrite.
    with pytest.raises(PoseNetTrainError, match="different configuration"):
        main(dataset, out, baseline="nn", split="train", progress=False)
    redone = main(dataset, out, baseline="nn", split="train", overwrite=True, progress=False)
    # Train images used as queries find themselves: zero error.
    assert redone["median_translation_m"] == 0.0 and redone["share_5cm_5deg"] == 1.0


def test_main_with_checkpoint_uses_model_from_checkpoint(tmp_path: Path, monkeypatch) -> None:
    dataset = make_dataset(tmp_path / "data")
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"stand-in")
    calls = []

    def model_from_checkpoint(path):
        calls.append(Path(path))
        return MeanColourModel(), {"extra": {"resize_shorter": 30, "crop_hw": [24, 24]}}

    fake = types.ModuleType("posenet_train.checkpoint")
    fake.model_from_checkpoint = model_from_checkpoint
    monkeypatch.setitem(sys.modules, "posenet_train.checkpoint", fake)
    summary = main(dataset, tmp_path / "out", checkpoint=checkpoint, progress=False)
    assert calls == [checkpoint]
    assert summary["resize_shorter"] == 30 and summary["crop_hw"] == [24, 24]
    records = load_split(dataset, "test")
    position, quat = predict(MeanColourModel(), records, resize_shorter_px=30, crop_hw=(24, 24))
    expected = summarize(
        *pose_errors(
            position, quat, [r.position_m for r in records], [r.quat_wxyz for r in records]
        )
    )
    assert summary["median_translation_m"] == pytest.approx(expected["median_translation_m"])


def test_main_with_onnx(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "data")
    model_path = export_onnx(tmp_path / "model.onnx", CONTRACT)
    summary = main(dataset, tmp_path / "out", onnx=model_path, dense=True, progress=False)
    assert summary["config"]["dense"] is True and summary["crop_hw"] == [24, 24]
    with pytest.raises(PoseNetTrainError, match="cannot be overridden"):
        main(dataset, tmp_path / "out2", onnx=model_path, resize_shorter_px=40, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of checkpoint, onnx, baseline; got none"),
        ({"baseline": "nn", "onnx": "m.onnx"}, "got onnx, baseline"),
        ({"baseline": "nn", "split": "val"}, "unknown split 'val'"),
        ({"baseline": "knn"}, "unknown baseline 'knn'"),
        ({"baseline": "nn", "dense": True}, "dense evaluation applies"),
        ({"baseline": "nn", "batch_size": 0}, "batch_size must be >= 1"),
        ({"checkpoint": "missing.pt"}, "checkpoint file not found"),
    ],
)
def test_main_rejects_bad_arguments(tmp_path: Path, kwargs, message) -> None:
    with pytest.raises(PoseNetTrainError, match=message):
        main(tmp_path, tmp_path / "out", progress=False, **kwargs)


# ------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--baseline", "nn", "--output", "o"], "the following arguments are required: --dataset"),
        (["--dataset", "d", "--baseline", "nn"], "the following arguments are required: --output"),
        (
            ["--dataset", "d", "--output", "o"],
            "one of the arguments --checkpoint --onnx --baseline",
        ),
        (
            ["--dataset", "d", "--output", "o", "--baseline", "nn", "--onnx", "m"],
            "not allowed with",
        ),
        (
            ["--dataset", "d", "--output", "o", "--baseline", "nn", "--split", "val"],
            "invalid choice: 'val'",
        ),
        (["--dataset", "d", "--output", "o", "--baseline", "knn"], "invalid choice: 'knn'"),
        (["--dataset", "d", "--output", "o", "--onnx", "m", "--crop", "2,x"], "expected 'H,W'"),
        (
            ["--dataset", "d", "--output", "o", "--onnx", "m", "--batch-size", "0"],
            "must be >= 1",
        ),
        (["--dataset", "d", "--output", "o", "--baseline", "nn", "--bogus"], "unrecognized"),
    ],
)
def test_cli_rejects_bad_arguments(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_reports_missing_dataset_and_bad_combinations(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit) as exit_info:
        cli(["--dataset", str(tmp_path / "missing"), "--output", out, "--baseline", "nn"])
    assert exit_info.value.code == 2
    assert "error: dataset folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["--dataset", str(tmp_path), "--output", out, "--baseline", "nn", "--dense"])
    assert "dense evaluation applies" in capsys.readouterr().err


def test_cli_runs_and_every_flag_has_help(tmp_path: Path, capsys) -> None:
    dataset = make_dataset(tmp_path / "data")
    out = tmp_path / "out"
    assert (
        cli(["--dataset", str(dataset), "--output", str(out), "--baseline", "nn", "--quiet"]) == 0
    )
    printed = capsys.readouterr().out
    assert "median_translation_m" in printed and "share_25cm_2deg" in printed
    for action in evaluate.build_parser()._actions:
        assert action.help, action.option_strings
