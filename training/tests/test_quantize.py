"""INT8 quantisation: the output is still a valid model file, outputs stay close, files and
arguments are checked, the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from posenet_train.checkpoint import save_model_checkpoint
from posenet_train.errors import ModelError, PoseNetTrainError
from posenet_train.evaluate import predict_onnx, read_onnx_contract
from posenet_train.export import main as export_main
from posenet_train.models import build_model
from posenet_train.quantize import (
    QUANTIZATION_KEY,
    CalibrationImages,
    build_parser,
    cli,
    default_output_path,
    load_calibration,
    main,
    output_differences,
    regression_tail_nodes,
)

sys.path.insert(0, str(Path(__file__).parent))
from tiny_scene import CROP, RESIZE, write_tiny_cambridge  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """A posenet-tiny model file and 8 calibration images.

    Untrained, its outputs would hardly depend on the image; the output layers are scaled up so
    poses spread over about a metre and tens of degrees, and INT8 errors can be judged against
    that spread.
    """
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("quantize")
    dataset = write_tiny_cambridge(root / "scene")
    model = build_model("posenet-tiny", width=8)
    with torch.no_grad():
        model.heads[0].regressor.fc_xyz.weight.mul_(300.0)
        model.heads[0].regressor.fc_wpqr.weight.mul_(300.0)
    ckpt = save_model_checkpoint(
        root / "tiny.pt",
        model,
        extra={"resize_shorter": RESIZE, "crop_hw": [CROP, CROP], "dataset": str(dataset)},
    )
    result = export_main(ckpt, root / "model" / "tiny.onnx", calibration_images=8)
    return {**result, "dataset": dataset}


@pytest.fixture(scope="module")
def quantized(exported) -> dict:
    return main(exported["model"], threads=1)


def _metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_output_is_a_valid_model_file(exported, quantized):
    output = quantized["output"]
    assert output == default_output_path(exported["model"])
    assert output.name == "tiny.int8.onnx"
    source, result = _metadata(exported["model"]), _metadata(output)
    assert {k: v for k, v in result.items() if k in source} == source  # every key copied
    description = json.loads(result[QUANTIZATION_KEY])
    assert description["precision"] == "int8" and description["format"] == "qdq"
    assert description["per_channel"] is True and description["calibration_images"] == 8
    assert description["source_model"] == "tiny.onnx"
    proto = onnx.load(str(output))
    assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    # The node's own reader accepts it (the repository root holds posenet_ros).
    model_file = pytest.importorskip("posenet_ros.model_file")
    info = model_file.load_model_info(str(output))
    assert info.input_hw == (CROP, CROP) and info.architecture == "posenet-tiny"


def test_outputs_stay_close(exported, quantized):
    differences = quantized["differences"]
    assert set(differences) == {
        "position_max_m",
        "position_median_m",
        "rotation_max_deg",
        "rotation_median_deg",
    }
    assert all(np.isfinite(v) for v in differences.values())
    # Judge the INT8 error against how much the FP32 outputs vary over the same images.
    session = ort.InferenceSession(str(exported["model"]), providers=["CPUExecutionProvider"])
    position, quat = session.run(None, {"image": np.load(exported["calibration"])})
    position_spread_m = float(np.linalg.norm(position.std(axis=0)))
    unit = quat / np.linalg.norm(quat, axis=1, keepdims=True)
    angles_deg = np.degrees(2 * np.arccos(np.clip(np.abs(unit @ unit[0]), 0, 1)))
    assert position_spread_m > 0.2 and angles_deg.max() > 5.0  # the fixture's outputs do vary
    assert differences["position_median_m"] < 0.25 * position_spread_m
    assert differences["position_max_m"] < 0.5 * position_spread_m
    assert differences["rotation_median_deg"] < 0.25 * float(np.median(angles_deg[1:]))
    assert quantized["latency_ms"] is None and quantized["calibration_images"] == 8


def test_evaluate_reads_the_int8_file(exported, quantized):
    from posenet_train.datasets import load_split

    records = load_split(str(exported["dataset"]), "test")
    (position, quat), contract = predict_onnx(quantized["output"], records, num_threads=1)
    assert position.shape == (len(records), 3) and quat.shape == (len(records), 4)
    assert contract.input_hw == (CROP, CROP)


def test_existing_output_is_kept_unless_overwrite(exported, quantized, capsys):
    output = quantized["output"]
    before = output.stat().st_mtime_ns
    again = main(exported["model"], threads=1)
    assert output.stat().st_mtime_ns == before
    assert "exists: kept" in capsys.readouterr().out
    assert again["differences"] == pytest.approx(quantized["differences"])


@pytest.mark.parametrize(
    "kwargs, op_type",
    [
        ({"quant_format": "qoperator"}, "QLinearConv"),
        ({"per_channel": False, "method": "percentile"}, "QuantizeLinear"),
    ],
)
def test_formats_and_methods(exported, tmp_path, kwargs, op_type):
    output = tmp_path / "variant.onnx"
    result = main(exported["model"], output, threads=1, **kwargs)
    ops = {n.op_type for n in onnx.load(str(output)).graph.node}
    assert op_type in ops
    assert np.isfinite(result["differences"]["position_max_m"])


def test_benchmark_reports_both_latencies(exported, tmp_path):
    result = main(exported["model"], tmp_path / "b.onnx", threads=1, benchmark=True, runs=2)
    latency = result["latency_ms"]
    assert latency["fp32"] > 0 and latency["int8"] > 0 and latency["threads"] == 1
    assert latency["speedup"] == pytest.approx(latency["fp32"] / latency["int8"])


def test_calibration_reader():
    images = np.zeros((3, 3, 4, 4), np.float32)
    reader = CalibrationImages(images, "image")
    feeds = [reader.get_next() for _ in range(4)]
    assert [f["image"].shape for f in feeds[:3]] == [(1, 3, 4, 4)] * 3 and feeds[3] is None
    reader.rewind()
    assert reader.get_next() is not None and len(reader) == 3


def test_output_differences_table():
    ref = (np.array([[0.0, 0, 0], [1, 1, 1]]), np.array([[1.0, 0, 0, 0], [1, 0, 0, 0]]))
    cand = (np.array([[0.0, 0, 0.1], [1, 1, 1]]), np.array([[-1.0, 0, 0, 0], [0, 0, 0, 1]]))
    d = output_differences(ref, cand)
    assert d["position_max_m"] == pytest.approx(0.1)
    assert d["position_median_m"] == pytest.approx(0.05)
    assert d["rotation_max_deg"] == pytest.approx(180.0)
    assert d["rotation_median_deg"] == pytest.approx(90.0)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros((2, 3, CROP, CROP), np.float64), ["float64", "float32"]),
        (np.zeros((2, CROP, CROP, 3), np.float32), ["[N,3,"]),
        (np.zeros((0, 3, CROP, CROP), np.float32), ["no image"]),
        (np.full((1, 3, CROP, CROP), np.inf, np.float32), ["NaN or infinite"]),
        (np.full((1, 3, CROP, CROP), 255, np.float32), ["0..1"]),
    ],
)
def test_malformed_calibration(tmp_path, array, words):
    path = tmp_path / "c.npy"
    np.save(path, array)
    with pytest.raises(ModelError) as excinfo:
        load_calibration(path, (CROP, CROP))
    for word in words:
        assert word in str(excinfo.value)


def test_calibration_missing_or_not_npy(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_calibration(tmp_path / "none.npy", (CROP, CROP))
    (tmp_path / "t.npy").write_text("text")
    with pytest.raises(ModelError, match="not a readable .npy"):
        load_calibration(tmp_path / "t.npy", (CROP, CROP))


def test_bad_arguments_and_files(exported, tmp_path):
    model = exported["model"]
    cases = [
        (dict(model=tmp_path / "none.onnx"), "must be an existing .onnx"),
        (dict(model=exported["calibration"]), "must be an existing .onnx"),
        (dict(model=model, output=tmp_path / "x.bin"), "must be a .onnx file"),
        (dict(model=model, output=model), "would overwrite the model file"),
        (dict(model=model, quant_format="int4"), "qdq, qoperator"),
        (dict(model=model, method="mse"), "minmax, entropy, percentile"),
        (dict(model=model, threads=0), "threads"),
        (dict(model=model, runs=True), "runs"),
        (dict(model=model, calibration=tmp_path / "none.npy"), "not found"),
    ]
    for kwargs, words in cases:
        with pytest.raises(PoseNetTrainError, match=words):
            main(**{"output": tmp_path / "o.onnx", **kwargs})
    assert not (tmp_path / "o.onnx").exists()


def test_model_without_contract_metadata(exported, tmp_path):
    proto = onnx.load(str(exported["model"]))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ModelError, match="metadata lacks"):
        main(bare, calibration=exported["calibration"])
    with pytest.raises(ModelError):
        read_onnx_contract({}, bare)


def test_cli(exported, tmp_path, capsys):
    output = tmp_path / "cli.int8.onnx"
    argv = ["--model", str(exported["model"]), "--output", str(output), "--threads", "1"]
    assert cli(argv + ["--format", "qoperator"]) == 0
    assert output.is_file() and "INT8 vs FP32" in capsys.readouterr().out
    assert cli(["--model", str(tmp_path / "none.onnx")]) == 2
    assert "posenet-quantize: error" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--model", "m.onnx", "--format", "int4"],
        ["--model", "m.onnx", "--method", "mse"],
        ["--model", "m.onnx", "--threads", "0"],
        ["--model", "m.onnx", "--runs", "many"],
        ["--model", "m.onnx", "--bogus"],
    ],
)
def test_cli_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        build_parser().parse_args(argv)
    assert excinfo.value.code == 2
    assert "error" in capsys.readouterr().err


def test_regression_tail_stays_float(exported, quantized):
    """The pose regressors and the de-normalisation after them are excluded from INT8."""
    proto = onnx.load(str(exported["model"]))
    tail = set(regression_tail_nodes(proto))
    producers = {out: node.name for node in proto.graph.node for out in node.output}
    for output in ("position", "orientation"):
        assert producers[output] in tail
    gemms = {n.name for n in proto.graph.node if n.op_type in ("Gemm", "MatMul")}
    assert any(name in tail for name in gemms), "the 3/4-wide regressors are in the tail"
    assert not any(n.op_type == "Conv" for n in proto.graph.node if n.name in tail)
    int8 = onnx.load(str(quantized["output"]))
    int8_producers = {out: node for node in int8.graph.node for out in node.output}
    assert int8_producers["position"].op_type not in ("DequantizeLinear", "QuantizeLinear")
