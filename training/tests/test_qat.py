"""Quantisation-aware fine-tuning: the simulated INT8 is ONNX Runtime's, checkpoints stay plain,
``train --qat-from`` runs and refuses what cannot work, ``quantize --reference`` judges against
the source's FP32 file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from posenet_train import qat
from posenet_train.checkpoint import load_checkpoint, model_from_checkpoint, save_model_checkpoint
from posenet_train.errors import CheckpointError, ModelError, PoseNetTrainError
from posenet_train.export import QAT_KEY
from posenet_train.export import main as export_main
from posenet_train.models import build_model
from posenet_train.quantize import QUANTIZATION_KEY
from posenet_train.quantize import main as quantize_main
from posenet_train.train import QAT_LR_FACTOR, cli
from posenet_train.train import main as train_main

sys.path.insert(0, str(Path(__file__).parent))
from tiny_scene import CROP, RESIZE, train_tiny  # noqa: E402


@pytest.mark.parametrize(
    ("weight", "expected"),
    [
        # one channel: max |w| = 1.27 -> scale 0.01; values round to the grid, the max is exact
        ([[0.004, -0.016, 1.27]], [[0.0, -0.02, 1.27]]),
        # channels are independent: a tiny channel keeps its own fine grid
        ([[1.0, 0.5], [0.001, -0.0005]], [[1.0, 0.5039370], [0.001, -0.0005039]]),
        # an all-zero channel stays zero (no division by a zero scale)
        ([[0.0, 0.0], [2.0, -1.0]], [[0.0, 0.0], [2.0, -1.0078740]]),  # -63.5 -> -64 (even)
    ],
)
def test_weights_round_per_output_channel(weight, expected):
    result = qat.fake_quantize_weight(torch.tensor(weight))
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_weight_rounding_passes_gradients_straight_through():
    weight = torch.tensor([[0.3, -0.7, 1.1]], requires_grad=True)
    qat.fake_quantize_weight(weight).sum().backward()
    assert torch.equal(weight.grad, torch.ones_like(weight))


@pytest.mark.parametrize(
    ("low", "high", "scale", "zero"),
    [
        (0.0, 6.0, 6.0 / 255, 0),  # after ReLU6
        (-1.0, 1.0, 2.0 / 255, 128),  # 127.5 rounds to even
        (1.0, 2.0, 2.0 / 255, 0),  # widened to hold 0, as ONNX Runtime does
        (-3.0, -1.0, 3.0 / 255, 255),
        (0.0, 0.0, 1.0, 0),  # a constant zero input
    ],
)
def test_activation_parameters_are_onnxruntimes(low, high, scale, zero):
    got_scale, got_zero = qat.activation_qparams(low, high)
    assert got_scale == pytest.approx(scale) and got_zero == zero


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> dict:
    """A trained posenet-tiny run, its model file and its fully quantised INT8 file."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("qat")
    dataset, _ = train_tiny(root, epochs=2, lr=3e-3, model_kwargs={"width": 8})
    last = root / "run" / "last.pt"
    exported = export_main(last, root / "model" / "tiny.onnx", calibration_images=8)
    full = quantize_main(
        exported["model"],
        root / "model" / "tiny.full.int8.onnx",
        threads=1,
        use_model_dataset=False,
        method="minmax",
        mixed_precision=False,
    )
    return {"dataset": dataset, "last": last, **exported, "int8": full["output"]}


def _onnx_outputs(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    from posenet_core.contract import ORT_DISABLED_OPTIMIZERS

    session = ort.InferenceSession(
        str(path), providers=["CPUExecutionProvider"], disabled_optimizers=ORT_DISABLED_OPTIMIZERS
    )
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def test_the_simulation_is_close_to_onnxruntimes_int8(source):
    """What fine-tuning sees is what the INT8 file does: the simulated model's outputs lie much
    nearer ONNX Runtime's INT8 outputs than FP32 does."""
    images = np.load(source["calibration"])
    fp32, int8 = _onnx_outputs(source["model"], images), _onnx_outputs(source["int8"], images)
    model, _ = model_from_checkpoint(source["last"])
    model.eval()
    fake_quant = qat.attach(model, torch.from_numpy(images[:1]))
    assert len(fake_quant.batch_norms) >= 3  # the tiny model's conv -> batch-norm pairs
    fake_quant.calibrate(images)
    with torch.no_grad():
        simulated = model(torch.from_numpy(images))[0].numpy()
        with fake_quant.disabled():
            float_torch = model(torch.from_numpy(images))[0].numpy()
    np.testing.assert_allclose(float_torch, fp32, atol=1e-4)
    int8_change = np.median(np.linalg.norm(int8 - fp32, axis=1))
    assert int8_change > 1e-4, "the fixture's INT8 file must differ from FP32"
    assert np.median(np.linalg.norm(simulated - int8, axis=1)) < 0.35 * int8_change


def test_checkpoint_keys_stay_plain_and_remove_restores_the_float_model():
    model = build_model("posenet-tiny", width=8)
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    example = torch.rand(1, 3, CROP, CROP)
    fake_quant = qat.attach(model, example)
    assert set(model.state_dict()) == set(plain)
    # the pose regressors (<= 8 outputs) stay float, like quantize's regression tail
    assert not any(name.endswith(("fc_xyz", "fc_wpqr")) for name in fake_quant.layers)
    with pytest.raises(PoseNetTrainError, match="calibrate"):
        model.eval()(example)
    fake_quant.remove()
    assert set(model.state_dict()) == set(plain)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in plain.items())


@pytest.mark.parametrize("images", [np.zeros((0, 3, 8, 8)), np.zeros((3, 8, 8))])
def test_calibration_refuses_empty_or_malformed_images(images):
    model = build_model("posenet-tiny", width=8)
    fake_quant = qat.attach(model, torch.rand(1, 3, CROP, CROP))
    with pytest.raises(PoseNetTrainError, match=r"\[N,3,H,W\]"):
        fake_quant.calibrate(images)


def test_qat_run_fine_tunes_the_source_and_exports_as_usual(source, tmp_path, capsys):
    out = tmp_path / "qat"
    argv = ["--qat-from", str(source["last"]), "--output", str(out), "--steps", "6"]
    assert cli([*argv, "--threads", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "quantisation-aware fine-tuning of" in err and "batch norm frozen" in err
    config = json.loads((out / "config.json").read_text())
    saved = load_checkpoint(source["last"])["extra"]["config"]
    assert config["qat_from"] == str(source["last"].resolve())
    assert config["lr"] == pytest.approx(saved["lr"] * QAT_LR_FACTOR)
    assert config["dataset"] == saved["dataset"] and config["crop"] == saved["crop"]
    assert config["frozen_blocks"] == saved["frozen_blocks"] and config["steps"] == 6
    before = load_checkpoint(source["last"])["model_state"]
    after = load_checkpoint(out / "last.pt")["model_state"]
    assert set(before) == set(after)  # plain keys: export reads it like any checkpoint
    changed = [k for k in before if before[k].dtype.is_floating_point]
    assert any(not torch.equal(before[k], after[k]) for k in changed)
    # batch-norm statistics are frozen while fine-tuning
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    exported = export_main(out / "last.pt", tmp_path / "qat.onnx", calibration_images=8)
    assert exported["max_abs_diff"] is not None
    assert exported["metadata"][QAT_KEY] == str(source["last"].resolve())
    assert "fine-tuned for INT8" in capsys.readouterr().out
    result = quantize_main(exported["model"], threads=1, use_model_dataset=False)
    assert "Pass --reference" in capsys.readouterr().err
    # the ranges the weights were tuned for, not a comparison of methods
    assert result["method"] == "minmax" and [r["method"] for r in result["methods"]] == ["minmax"]


def test_qat_run_resumes_exactly(source, tmp_path):
    # the step schedule: a cosine one is planned for the first invocation's --epochs
    options = {"qat_from": source["last"], "threads": 1, "progress": False, "epochs": 2}
    options["lr_schedule"] = "step"
    straight = train_main(None, tmp_path / "a", **options)
    train_main(None, tmp_path / "b", **{**options, "epochs": 1})
    resumed = train_main(None, tmp_path / "b", epochs=2, resume="auto", threads=1, progress=False)
    a = load_checkpoint(straight["last"])["model_state"]
    b = load_checkpoint(resumed["last"])["model_state"]
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_qat_refuses_another_geometry_or_a_bare_checkpoint(source, tmp_path):
    with pytest.raises(PoseNetTrainError, match=r"trained with crop=.*leave it out"):
        train_main(None, tmp_path / "a", qat_from=source["last"], crop=24, resize=RESIZE)
    bare = tmp_path / "bare.pt"
    model, _ = model_from_checkpoint(source["last"])
    save_model_checkpoint(bare, model, extra={})
    with pytest.raises(CheckpointError, match="records no training options"):
        train_main(None, tmp_path / "b", qat_from=bare)


def test_cli_reports_a_missing_source(tmp_path, capsys):
    argv = ["--qat-from", str(tmp_path / "none.pt"), "--output", str(tmp_path / "run")]
    assert cli([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "posenet-train: error:" in err and "none.pt" in err


def test_quantize_judges_against_the_reference(source, tmp_path):
    result = quantize_main(
        source["model"],
        tmp_path / "a.int8.onnx",
        threads=1,
        use_model_dataset=False,
        method="minmax",
        mixed_precision=False,
        reference=source["model"],
    )
    described = json.loads(
        {p.key: p.value for p in onnx.load(str(result["output"])).metadata_props}[QUANTIZATION_KEY]
    )
    assert described["reference_model"] == "tiny.onnx"


def test_quantize_refuses_a_reference_with_another_input(source, tmp_path):
    other = train_tiny(tmp_path, crop=24, model_kwargs={"width": 8})[1]
    other_file = export_main(other, tmp_path / "other.onnx", calibration_images=0)["model"]
    for reference, words in ((other_file, "does not take the input"), (tmp_path, "existing")):
        with pytest.raises(ModelError, match=words):
            quantize_main(
                source["model"],
                tmp_path / "b.int8.onnx",
                threads=1,
                use_model_dataset=False,
                reference=reference,
            )


@pytest.mark.parametrize(("given", "expected"), [(None, 1), (0, 0)])
def test_qat_keeps_the_source_frozen_blocks_unless_told(tmp_path, given, expected):
    train_tiny(tmp_path, frozen_blocks=1, max_shift=0, model_kwargs={"width": 8})
    options = {"qat_from": tmp_path / "run" / "last.pt", "steps": 3, "threads": 1}
    if given is not None:
        options["frozen_blocks"] = given
    result = train_main(None, tmp_path / "qat", progress=False, **options)
    config = json.loads((result["output"] / "config.json").read_text())
    assert config["frozen_blocks"] == expected and result["global_step"] == 3
