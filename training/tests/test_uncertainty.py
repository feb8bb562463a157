"""Per-image uncertainty in the trainer: the uncertainty heads, the Gaussian NLL loss, training
and export of a format 2 model file, calibration measurement and MC dropout."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from posenet_train.checkpoint import model_from_checkpoint
from posenet_train.datasets import load_split
from posenet_train.errors import PoseNetTrainError
from posenet_train.evaluate import (
    IDEAL_SHARES,
    calibration_report,
    chi3_cdf,
    cli,
    compare_uncertainties,
    main,
    mc_dropout_predict,
    plot_uncertainty,
    pose_error_vectors,
    predict,
    predict_onnx,
    read_onnx_contract,
    spearman,
)
from posenet_train.export import main as export_main
from posenet_train.losses import (
    GaussianNLLLoss,
    build_loss,
    multi_head_loss,
    rotation_error_vector,
)
from posenet_train.models import build_model
from posenet_train.models.heads import INITIAL_LOG_VARIANCE
from posenet_train.train import main as train_main

sys.path.insert(0, str(Path(__file__).parent))
from tiny_scene import CROP, RESIZE, train_tiny, write_tiny_cambridge  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
torch.set_num_threads(2)


def quat_z(angle_rad: float) -> list[float]:
    return [math.cos(angle_rad / 2), 0.0, 0.0, math.sin(angle_rad / 2)]


# --- models -------------------------------------------------------------------------------------

MODEL_CASES = [
    ("posenet-tiny", {}, 32, 1),
    ("posenet-tiny", {"aux_heads": True, "lstm_hidden": 8}, 32, 3),
    ("posenet-efficientnet-lite0", {"pretrained": None}, 64, 1),
]


@pytest.mark.parametrize(("name", "kwargs", "size", "heads"), MODEL_CASES)
def test_uncertainty_heads_output_log_variances(name, kwargs, size, heads):
    torch.manual_seed(0)
    model = build_model(name, uncertainty=True, **kwargs)
    assert model.uncertainty and model.constructor_args["uncertainty"] is True
    model.set_position_stats([1.0, 2.0, 3.0], 4.0)
    x = torch.rand(2, 3, size, size)
    model.train()
    outputs = model(x)
    assert len(outputs) == heads
    for output in outputs:
        assert [tuple(t.shape) for t in output] == [(2, 3), (2, 4), (2, 6)]
    model.eval()
    with torch.no_grad():
        position, quat, log_variance = model(x)
    # The layer starts at zero weights: every image gets INITIAL_LOG_VARIANCE, the position
    # part moved from normalised units^2 to metres^2 (scale 4 m -> + 2 ln 4).
    expected = torch.tensor(INITIAL_LOG_VARIANCE) + torch.tensor([2 * math.log(4.0)] * 3 + [0] * 3)
    torch.testing.assert_close(log_variance, expected.expand(2, 6))
    rebuilt = build_model(**model.constructor_args)
    assert rebuilt.uncertainty and set(rebuilt.state_dict()) == set(model.state_dict())


def test_models_without_uncertainty_keep_two_outputs():
    model = build_model("posenet-tiny").eval()
    assert not model.uncertainty
    assert len(model(torch.rand(1, 3, 32, 32))) == 2


# --- losses -------------------------------------------------------------------------------------


def test_rotation_error_vector_convention_and_sign_invariance():
    pred = torch.tensor([quat_z(0.2), [0.5, 0.5, 0.5, 0.5]])
    left = torch.tensor(quat_z(0.3))
    w1, v1 = left[0], left[1:]
    # gt = left * pred (rotate by 0.3 rad about the world z axis, on the left).
    gt = torch.stack(
        [
            torch.cat(
                [
                    (w1 * p[0] - v1 @ p[1:]).view(1),
                    w1 * p[1:] + p[0] * v1 + torch.cross(v1, p[1:], dim=0),
                ]
            )
            for p in pred
        ]
    )
    expected = torch.tensor([[0.0, 0.0, 0.3]] * 2)
    for g, p in ((gt, pred), (-gt, pred), (gt, -pred)):
        torch.testing.assert_close(rotation_error_vector(p, g), expected, atol=1e-6, rtol=0)
    x = pred.clone().requires_grad_()
    rotation_error_vector(x, pred.clone()).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_gaussian_nll_known_value_and_minimum():
    n = 4
    pred_p, gt_p = torch.zeros(n, 3), torch.full((n, 3), 0.5)
    q = torch.tensor([quat_z(0.0)] * n)
    gt_q = torch.tensor([quat_z(0.1)] * n)
    loss = GaussianNLLLoss()
    log_variance = torch.zeros(n, 6)
    out = loss(pred_p, q, gt_p, gt_q, 2.0, log_variance=log_variance)
    # Position: e = 0.25 (normalised), s = 0 - 2 ln 2; rotation: e_z = 0.1, s = 0.
    s_p = -2 * math.log(2.0)
    expected = 3 * 0.5 * (0.25**2 * math.exp(-s_p) + s_p) + 0.5 * 0.1**2
    assert float(out.total) == pytest.approx(expected, rel=1e-5)
    # The optimum variance is the squared error: moving away from it costs.
    best = torch.tensor([[math.log(0.25**2 * 4)] * 3 + [math.log(0.01)] * 3] * n)
    at_best = float(loss(pred_p, q, gt_p, gt_q, 2.0, log_variance=best).total)
    # (Only where there is an error: rotations about x and y are exact here.)
    for delta in (-0.5, 0.5):
        moved = best + torch.tensor([delta] * 3 + [0.0, 0.0, delta])
        assert float(loss(pred_p, q, gt_p, gt_q, 2.0, log_variance=moved).total) > at_best


def test_gaussian_nll_position_is_scale_independent():
    torch.manual_seed(1)
    p, g = torch.randn(3, 3), torch.randn(3, 3)
    q = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    lv = torch.randn(3, 6)
    loss = GaussianNLLLoss()
    small = loss(p, q, g, q, 1.0, log_variance=lv).total
    shift = torch.tensor([2 * math.log(10.0)] * 3 + [0.0] * 3)
    large = loss(10 * p, q, 10 * g, q, 10.0, log_variance=lv + shift).total
    torch.testing.assert_close(small, large)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: build_loss("nll", norm="l1"), "no residual norm"),
        (
            lambda: GaussianNLLLoss()(
                torch.zeros(2, 3), torch.ones(2, 4), torch.zeros(2, 3), torch.ones(2, 4)
            ),
            "uncertainty=True",
        ),
        (
            lambda: GaussianNLLLoss()(
                torch.zeros(2, 3),
                torch.ones(2, 4),
                torch.zeros(2, 3),
                torch.ones(2, 4),
                log_variance=torch.zeros(2, 5),
            ),
            r"\[2, 6\]",
        ),
    ],
)
def test_gaussian_nll_errors(call, message):
    with pytest.raises(PoseNetTrainError, match=message):
        call()


def test_multi_head_loss_passes_each_heads_log_variance():
    q = torch.tensor([quat_z(0.0)] * 2)
    gt_p = torch.zeros(2, 3)
    heads = [
        (torch.ones(2, 3), q, torch.zeros(2, 6)),
        (torch.ones(2, 3), q, torch.full((2, 6), 1.0)),
    ]
    loss = build_loss("nll")
    total = multi_head_loss(loss, heads, gt_p, q, (0.5, 1.0)).total
    parts = [loss(h[0], h[1], gt_p, q, log_variance=h[2]).total for h in heads]
    torch.testing.assert_close(total, 0.5 * parts[0] + parts[1])


# --- training and export ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, best.pt) of a 2-epoch posenet-tiny run with an uncertainty head."""
    return train_tiny(
        tmp_path_factory.mktemp("uncertainty"),
        model_kwargs={"uncertainty": True, "dropout": 0.3},
        loss="nll",
        epochs=2,
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss": "nll"}, "uncertainty head.*--model-arg uncertainty=True"),
        ({"model_kwargs": {"uncertainty": True}}, "untrained.*--loss nll"),
        ({"model_kwargs": {"uncertainty": True}, "loss": "learned"}, "--loss nll"),
    ],
)
def test_loss_and_head_must_go_together(tmp_path, kwargs, message):
    dataset = write_tiny_cambridge(tmp_path / "scene", n_train=4, n_test=2)
    with pytest.raises(PoseNetTrainError, match=message):
        train_main(
            dataset,
            tmp_path / "run",
            model="posenet-tiny",
            epochs=1,
            resize=RESIZE,
            crop=CROP,
            progress=False,
            **kwargs,
        )


def test_training_with_nll_moves_the_log_variances(trained):
    _, best = trained
    model, ckpt = model_from_checkpoint(best)
    assert ckpt["model_args"]["uncertainty"] is True
    weight = model.heads[-1].regressor.fc_log_variance.weight
    assert float(weight.detach().abs().sum()) > 0.0  # it started at zero: the loss trained it


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    _, best = trained
    out = tmp_path_factory.mktemp("model") / "uncertain.onnx"
    return export_main(best, out, calibration_images=0)["model"]


def test_export_writes_format_2_with_the_log_variance_output(exported, trained):
    proto = onnx.load(str(exported))
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert metadata["posenet.format"] == "2"
    assert metadata["posenet.uncertainty_output"] == "log_variance"
    assert [o.name for o in proto.graph.output] == ["position", "orientation", "log_variance"]
    dims = proto.graph.output[2].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 6
    # ONNX Runtime gives what PyTorch gives, log-variances in metres^2 included, shifted by
    # the recalibration the export recorded.
    model, _ = model_from_checkpoint(trained[1])
    scales = json.loads(metadata["posenet_train.uncertainty_calibration"])["variance_scale"]
    images = np.random.default_rng(0).random((3, 3, CROP, CROP), dtype=np.float32)
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": images})
    with torch.no_grad():
        want = [t.numpy() for t in model(torch.from_numpy(images))]
    want[2] = want[2] + np.log([scales["position"]] * 3 + [scales["rotation"]] * 3)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_exported_file_passes_the_node_validator(exported):
    sys.path.insert(0, str(REPO_ROOT))
    model_file = pytest.importorskip("posenet_ros.model_file")
    info = model_file.load_model_info(str(exported))
    assert info.format_version == "2" and info.uncertainty_output == "log_variance"


@pytest.mark.parametrize(
    "metadata, expected",
    [
        ({"posenet.format": "2", "posenet.uncertainty_output": " lv "}, "lv"),
        ({"posenet.format": "2"}, None),
        ({"posenet.format": "1", "posenet.uncertainty_output": "lv"}, None),
    ],
)
def test_read_onnx_contract_uncertainty(metadata, expected):
    base = {
        "posenet.input": "image",
        "posenet.outputs": "position,orientation",
        "posenet.input_size": "32,32",
        "posenet.resize": "40",
    }
    assert read_onnx_contract({**base, **metadata}).uncertainty_output == expected


@pytest.mark.parametrize("value", ["", "position", "a,b"])
def test_read_onnx_contract_rejects_bad_uncertainty_key(value):
    metadata = {
        "posenet.format": "2",
        "posenet.input": "image",
        "posenet.outputs": "position,orientation",
        "posenet.input_size": "32,32",
        "posenet.resize": "40",
        "posenet.uncertainty_output": value,
    }
    with pytest.raises(PoseNetTrainError, match="posenet.uncertainty_output"):
        read_onnx_contract(metadata, "m.onnx")


# --- calibration --------------------------------------------------------------------------------


def test_chi3_cdf_gives_the_issues_ideal_shares():
    assert [round(chi3_cdf(k * k), 3) for k in (1, 2, 3)] == [0.199, 0.739, 0.971]
    assert IDEAL_SHARES["per_axis"] == [0.6827, 0.9545, 0.9973]


@pytest.mark.parametrize("inflate, expected_scale", [(1.0, 1.0), (4.0, 0.25)])
def test_calibration_of_gaussian_errors(inflate, expected_scale):
    rng = np.random.default_rng(0)
    n = 20000
    sigma = np.exp(rng.uniform(np.log(0.01), np.log(1.0), size=(n, 6)))
    errors = rng.normal(size=(n, 6)) * sigma
    report = calibration_report(errors, inflate * sigma**2)
    for block in ("position", "rotation"):
        r = report[block]
        if inflate == 1.0:
            np.testing.assert_allclose(
                r["share_within_sigma_mahalanobis"], IDEAL_SHARES["mahalanobis_3d"], atol=0.015
            )
            np.testing.assert_allclose(
                r["share_within_sigma_per_axis"], IDEAL_SHARES["per_axis"], atol=0.01
            )
        else:  # variances 4x too large (under-confident): too many frames inside 1 sigma
            assert r["share_within_sigma_mahalanobis"][0] > 0.5
        assert r["variance_scale_median"] == pytest.approx(expected_scale, rel=0.05)
        assert r["variance_scale_mean"] == pytest.approx(expected_scale, rel=0.05)
        assert r["spearman_sigma_vs_error"] > 0.5  # sigma spans two decades
    assert report["rotation"]["unit"] == "deg"
    assert report["position"]["median_sigma"] == pytest.approx(
        np.median(np.sqrt(inflate * (sigma[:, :3] ** 2).mean(axis=1))), rel=1e-9
    )


def test_calibration_with_full_covariances_uses_the_correlations():
    rng = np.random.default_rng(1)
    n = 5000
    L = np.array([[0.3, 0, 0], [0.25, 0.05, 0], [0, 0, 0.1]])
    cov3 = L @ L.T
    covariance = np.zeros((n, 6, 6))
    covariance[:, :3, :3] = cov3
    covariance[:, 3:, 3:] = np.eye(3) * 0.01
    errors = np.concatenate([rng.normal(size=(n, 3)) @ L.T, rng.normal(size=(n, 3)) * 0.1], axis=1)
    report = calibration_report(errors, covariance)
    np.testing.assert_allclose(
        report["position"]["share_within_sigma_mahalanobis"],
        IDEAL_SHARES["mahalanobis_3d"],
        atol=0.02,
    )
    # Constant sigma: no correlation to measure.
    assert report["position"]["spearman_sigma_vs_error"] is None


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
        ([1, 2, 3, 4], [1, 3, 2, 4], 0.8),
        ([1, 1, 2, 3], [1, 1, 2, 3], 1.0),
        ([1, 1, 1], [1, 2, 3], None),
        ([1, 2], [1, 2], None),
    ],
)
def test_spearman(a, b, expected):
    result = spearman(np.array(a, float), np.array(b, float))
    assert result == (pytest.approx(expected) if expected is not None else None)


def test_pose_error_vectors_convention():
    errors = pose_error_vectors([[1.0, 2.0, 3.0]], [quat_z(0.1)], [[1.5, 2.0, 2.0]], [quat_z(0.4)])
    np.testing.assert_allclose(errors, [[0.5, 0.0, -1.0, 0.0, 0.0, 0.3]], atol=1e-12)


@pytest.mark.parametrize(
    "errors, uncertainty, message",
    [
        (np.zeros((2, 5)), np.ones((2, 6)), r"\(N, 6\)"),
        (np.zeros((0, 6)), np.ones((0, 6)), "N > 0"),
        (np.zeros((2, 6)), np.ones((3, 6)), r"\(2, 6\) variances"),
        (np.zeros((2, 6)), np.full((2, 6), np.nan), "NaN"),
    ],
)
def test_calibration_report_rejects(errors, uncertainty, message):
    with pytest.raises(PoseNetTrainError, match=message):
        calibration_report(errors, uncertainty)


def test_plot_uncertainty_is_a_png(tmp_path):
    rng = np.random.default_rng(2)
    variances = rng.uniform(0.01, 1.0, size=(20, 6))
    path = plot_uncertainty(rng.normal(size=(20, 6)), variances, tmp_path / "u.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- MC dropout ---------------------------------------------------------------------------------


class Wrapped(torch.nn.Module):
    """Hides a PoseNetModel's type, so MC dropout takes its generic full-forward path."""

    def __init__(self, model) -> None:
        super().__init__()
        self.inner = model

    def forward(self, x):
        return self.inner(x)


def test_mc_dropout_head_only_equals_full_forward(trained):
    dataset, best = trained
    model, _ = model_from_checkpoint(best)
    records = load_split(dataset, "test")
    kwargs = {"resize_shorter_px": RESIZE, "crop_hw": (CROP, CROP), "seed": 3, "batch_size": 3}
    fast = mc_dropout_predict(model, records, 8, **kwargs)
    slow = mc_dropout_predict(Wrapped(model), records, 8, **kwargs)
    assert fast.head_only and not slow.head_only
    np.testing.assert_allclose(fast.covariance, slow.covariance, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(fast.position_m, slow.position_m, atol=1e-6)
    assert fast.covariance.shape == (len(records), 6, 6)
    assert np.all(np.linalg.eigvalsh(fast.covariance) > -1e-12)
    assert np.all(np.diagonal(fast.covariance, axis1=1, axis2=2)[:, :3] > 0)
    # The deterministic prediction is predict()'s, dropout off; the model is left in eval mode.
    position, quat, log_variance = predict(
        model, records, resize_shorter_px=RESIZE, crop_hw=(CROP, CROP), with_uncertainty=True
    )
    np.testing.assert_allclose(fast.deterministic_position_m, position, atol=1e-6)
    np.testing.assert_allclose(fast.deterministic_log_variance, log_variance, atol=1e-6)
    assert not model.training and not any(m.training for m in model.modules())
    again = mc_dropout_predict(model, records, 8, **kwargs)
    np.testing.assert_array_equal(again.covariance, fast.covariance)  # seeded


@pytest.mark.parametrize(
    "samples, model_kwargs, message",
    [
        (1, {"dropout": 0.3}, "at least 2 samples"),
        (4, {"dropout": 0.0}, "no active dropout"),
    ],
)
def test_mc_dropout_errors(tmp_path, samples, model_kwargs, message):
    dataset = write_tiny_cambridge(tmp_path / "scene", n_train=2, n_test=2)
    model = build_model("posenet-tiny", **model_kwargs)
    with pytest.raises(PoseNetTrainError, match=message):
        mc_dropout_predict(model, load_split(dataset, "test"), samples, crop_hw=(CROP, CROP))


def test_compare_uncertainties():
    head = np.array([[1.0] * 3 + [0.01] * 3, [4.0] * 3 + [0.04] * 3, [9.0] * 3 + [0.09] * 3])
    mc = np.stack([np.diag(h / 4) for h in head])
    result = compare_uncertainties(head, mc)
    for block in ("position", "rotation"):
        assert result[block]["spearman_head_vs_mc_sigma"] == pytest.approx(1.0)
        assert result[block]["median_ratio_head_over_mc_sigma"] == pytest.approx(2.0)


def test_main_reports_head_and_mc_dropout_calibration(trained, exported, tmp_path, capsys):
    dataset, best = trained
    out = tmp_path / "eval"
    assert (
        cli(
            ["--dataset", str(dataset), "--checkpoint", str(best), "--output", str(out)]
            + ["--mc-dropout", "6", "--quiet"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "uncertainty head position" in printed and "uncertainty mc_dropout rotation" in printed
    summary = json.loads((out / "summary.json").read_text())
    uncertainty = summary["uncertainty"]
    assert set(uncertainty) == {"head", "mc_dropout", "agreement"}
    assert uncertainty["mc_dropout"]["samples"] == 6
    assert uncertainty["mc_dropout"]["backbone_sampled"] is False
    assert summary["config"]["mc_dropout"] == {"samples": 6, "seed": 0}
    for name in ("uncertainty_head.png", "uncertainty_mc_dropout.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    header = (out / "predictions.csv").read_text().splitlines()[0]
    assert header.endswith("std_x_m,std_y_m,std_z_m,std_rx_rad,std_ry_rad,std_rz_rad")
    # A model file exported without recalibration gives the checkpoint's numbers.
    raw = export_main(
        best, tmp_path / "raw.onnx", calibration_images=0, uncertainty_calibration="none"
    )
    raw_metadata = {p.key: p.value for p in onnx.load(str(raw["model"])).metadata_props}
    assert json.loads(raw_metadata["posenet_train.uncertainty_calibration"]) == {"method": "none"}
    onnx_summary = main(dataset, tmp_path / "onnx", onnx=raw["model"], progress=False)
    for block in ("position", "rotation"):
        assert onnx_summary["uncertainty"]["head"][block]["mean_nll"] == pytest.approx(
            uncertainty["head"][block]["mean_nll"], rel=1e-4, abs=1e-4
        )
    (position, quat, log_variance), contract = predict_onnx(
        exported, load_split(dataset, "test"), with_uncertainty=True
    )
    assert contract.uncertainty_output == "log_variance" and log_variance.shape == (4, 6)


def test_export_recalibrates_the_variances_on_the_training_split(trained, exported, tmp_path):
    dataset, _ = trained
    metadata = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    record = json.loads(metadata["posenet_train.uncertainty_calibration"])
    assert record["method"] == "variance_scale_median" and record["split"] == "train"
    assert record["images"] == 12 and set(record["variance_scale"]) == {"position", "rotation"}
    # On the split it was calibrated on, the model file is calibrated by construction.
    summary = main(dataset, tmp_path / "eval", onnx=exported, split="train", progress=False)
    for block in ("position", "rotation"):
        scale = summary["uncertainty"]["head"][block]["variance_scale_median"]
        assert scale == pytest.approx(1.0, rel=1e-3)


def test_export_rejects_an_unknown_uncertainty_calibration(trained, tmp_path):
    with pytest.raises(PoseNetTrainError, match="uncertainty_calibration 'val'"):
        export_main(trained[1], tmp_path / "m.onnx", uncertainty_calibration="val")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mc_dropout": 1}, "0 \\(off\\) or >= 2"),
        ({"mc_dropout": 4, "baseline": "nn"}, "needs a checkpoint"),
        ({"mc_dropout": 4, "dense": True}, "drop dense"),
    ],
)
def test_main_rejects_bad_mc_dropout(trained, tmp_path, kwargs, message):
    dataset, best = trained
    if "baseline" not in kwargs:
        kwargs = {"checkpoint": best, **kwargs}
    with pytest.raises(PoseNetTrainError, match=message):
        main(dataset, tmp_path / "out", progress=False, **kwargs)


@pytest.mark.parametrize("value", ["1", "-3", "x"])
def test_cli_rejects_bad_mc_dropout(value, capsys):
    with pytest.raises(SystemExit) as excinfo:
        cli(["--dataset", "d", "--baseline", "nn", "--output", "o", "--mc-dropout", value])
    assert excinfo.value.code == 2
    assert "--mc-dropout" in capsys.readouterr().err
