"""INT8 quantisation: the output is still a valid model file, outputs stay close, files and
arguments are checked, the CLI."""

from __future__ import annotations

import csv
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
    EXIT_BUDGET,
    FLOAT_LAYERS_KEY,
    FLOAT_NODES_KEY,
    QUANTIZATION_KEY,
    AccuracyBudgetError,
    CalibrationImages,
    _session,
    benchmark_pair,
    build_parser,
    cli,
    default_output_path,
    load_calibration,
    main,
    output_differences,
    regression_tail_nodes,
)
from posenet_train.quantize_search import sensitivity_paths

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


def quantize(model, output=None, **kwargs) -> dict:
    """``main`` without the ground-truth check (the fixture's dataset path is in its metadata);
    the accuracy tests below pass their own dataset."""
    return main(model, output, **{"threads": 1, "use_model_dataset": False, **kwargs})


@pytest.fixture(scope="module")
def quantized(exported) -> dict:
    return quantize(exported["model"], method="minmax")


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
    again = quantize(exported["model"])
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
    result = quantize(exported["model"], output, **kwargs)
    ops = {n.op_type for n in onnx.load(str(output)).graph.node}
    assert op_type in ops
    assert np.isfinite(result["differences"]["position_max_m"])


def test_benchmark_reports_both_latencies(exported, tmp_path):
    result = quantize(exported["model"], tmp_path / "b.onnx", benchmark=True, runs=2)
    latency = result["latency_ms"]
    assert latency["fp32"] > 0 and latency["int8"] > 0 and latency["threads"] == 1
    assert latency["speedup"] == pytest.approx(latency["fp32"] / latency["int8"])


def test_min_speedup_refuses_a_slow_file(exported, tmp_path):
    output = tmp_path / "slow.int8.onnx"
    with pytest.raises(AccuracyBudgetError, match="less than --min-speedup 100"):
        quantize(exported["model"], output, method="minmax", min_speedup=100.0, runs=2)
    assert list(tmp_path.iterdir()) == []


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
    argv += ["--no-dataset"]
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


# ---------------------------------------------------- accuracy, sensitivity, mixed precision


def _write_ground_truth(folder: Path, records, position_m, quat_wxyz) -> Path:
    """Rewrite dataset_test.txt of ``folder`` with the given camera-to-world poses."""
    from posenet_core.geometry import world_camera_to_cambridge

    header = "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"
    lines = []
    for record, p, q in zip(records, position_m, quat_wxyz, strict=True):
        centre, q_wc = world_camera_to_cambridge(p, q)
        name = Path(record.image_path).relative_to(folder.resolve()).as_posix()
        lines.append(f"{name} " + " ".join(f"{v:.9f}" for v in (*centre, *q_wc)) + "\n")
    (folder / "dataset_test.txt").write_text(header + "".join(lines))
    return folder


@pytest.fixture(scope="module")
def ground_truth(exported, tmp_path_factory) -> dict:
    """A dataset whose ground truth makes the fully quantised (MinMax) model exactly 50 % worse
    in translation than FP32 and leaves rotation within 1 %, whatever the untrained weights do.

    Each image's true position lies at distance r from the FP32 prediction, on the side away
    from the INT8 prediction: FP32 error r, INT8 error r + |INT8 - FP32|, r = 2 x the median
    |INT8 - FP32|. The true rotation is the FP32 one turned by 30 degrees, far more than INT8
    moves it. A model with every layer in FP32 is back at +0 %.
    """
    from posenet_core.geometry import quat_multiply
    from posenet_train.datasets import load_split

    folder = write_tiny_cambridge(tmp_path_factory.mktemp("gt") / "scene", n_train=2, n_test=8)
    records = load_split(str(folder), "test")
    full = quantize(
        exported["model"], folder.parent / "full.onnx", method="minmax", mixed_precision=False
    )
    (fp32_p, fp32_q), _ = predict_onnx(exported["model"], records, num_threads=1)
    (int8_p, _), _ = predict_onnx(full["output"], records, num_threads=1)
    delta = int8_p - fp32_p
    distance = np.linalg.norm(delta, axis=1)
    assert distance.min() > 1e-4, "INT8 must move every test image's position"
    r = 2.0 * float(np.median(distance))
    true_p = fp32_p - r * delta / distance[:, None]
    turn = np.array([np.cos(np.radians(15)), np.sin(np.radians(15)), 0.0, 0.0])  # 30 deg about x
    true_q = np.stack([quat_multiply(q, turn) for q in fp32_q])
    _write_ground_truth(folder, records, true_p, true_q)
    return {"dataset": folder, "r": r}


@pytest.fixture
def checked(exported, ground_truth):
    """quantize(output, **options) of the exported model, checked against ``ground_truth``."""

    def run(output, **options) -> dict:
        return quantize(exported["model"], output, dataset=str(ground_truth["dataset"]), **options)

    return run


def test_accuracy_against_ground_truth(ground_truth, tmp_path, checked):
    output = tmp_path / "ok.int8.onnx"
    result = checked(output, method="minmax", max_error_increase=0.6)
    accuracy = result["accuracy"]
    assert accuracy["images"] == 8 and accuracy["split"] == "test"
    assert accuracy["fp32"]["median_translation_m"] == pytest.approx(ground_truth["r"], rel=1e-3)
    assert accuracy["increase_translation"] == pytest.approx(0.5, abs=0.02)
    assert abs(accuracy["increase_rotation"]) < 0.01
    assert accuracy["fp32"]["median_rotation_deg"] == pytest.approx(30.0, abs=0.01)
    described = json.loads(_metadata(output)[QUANTIZATION_KEY])
    assert described["accuracy"]["increase_translation"] == pytest.approx(0.5, abs=0.02)
    assert described["within_budget"] is True and described["float_layers"] == []
    assert json.loads(_metadata(output)[FLOAT_LAYERS_KEY]) == []


def test_refuses_a_file_over_the_budget(exported, ground_truth, tmp_path, capsys, checked):
    output = tmp_path / "refused.int8.onnx"
    with pytest.raises(AccuracyBudgetError, match="was not written"):
        checked(output, method="minmax", mixed_precision=False, max_error_increase=0.1)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file
    argv = ["--model", str(exported["model"]), "--output", str(output), "--threads", "1"]
    argv += ["--dataset", str(ground_truth["dataset"]), "--method", "minmax"]
    assert cli(argv + ["--no-mixed-precision"]) == EXIT_BUDGET
    err = capsys.readouterr().err
    assert "refused" in err and "--max-error-increase 0.05" in err and "+50" in err
    assert not output.exists()


def test_warns_and_writes_with_on_excess_warn(tmp_path, capsys, checked):
    output = tmp_path / "warned.int8.onnx"
    checked(output, method="minmax", mixed_precision=False, on_excess="warn")
    assert "WARNING" in capsys.readouterr().err and output.is_file()
    assert json.loads(_metadata(output)[QUANTIZATION_KEY])["within_budget"] is False
    # An existing file that misses the budget: an error, the file left alone.
    before = output.stat().st_mtime_ns
    with pytest.raises(AccuracyBudgetError, match="left as it was"):
        checked(output)
    assert output.stat().st_mtime_ns == before


def test_mixed_precision_meets_the_budget(tmp_path, checked):
    output = tmp_path / "mixed.int8.onnx"
    result = checked(output, method="minmax", max_error_increase=0.25, max_float_mac_share=1.0)
    assert result["accuracy"]["increase_translation"] <= 0.25
    float_layers = result["float_layers"]
    assert float_layers, "full INT8 is +50 %: some layer must stay in FP32"
    steps = result["search"]
    assert [step["layer"] for step in steps if step["kept"]] == float_layers
    assert steps[-1]["met"] and steps[-1]["kept"] and not any(s["met"] for s in steps[:-1])
    ranked = [row["layer"] for row in result["sensitivity"]]
    tried = [step["layer"] for step in steps]
    assert tried == ranked[: len(tried)]  # tried most sensitive first
    increases = [max(s["increase_translation"], s["increase_rotation"]) for s in steps]
    kept = [i for i, step in zip(increases, steps, strict=True) if step["kept"]]
    assert kept == sorted(kept, reverse=True) and kept[0] < 0.5  # each kept layer helped
    metadata = _metadata(output)
    assert json.loads(metadata[FLOAT_LAYERS_KEY]) == float_layers
    float_nodes = set(json.loads(metadata[FLOAT_NODES_KEY]))
    assert set(float_layers) <= float_nodes
    proto = onnx.load(str(output))
    assert set(regression_tail_nodes(proto)) <= float_nodes
    # The float layers really are float: their weights are no DequantizeLinear output.
    producers = {out: node for node in proto.graph.node for out in node.output}
    for node in proto.graph.node:
        if node.name in float_layers and node.op_type in ("Conv", "Gemm"):
            weight = producers.get(node.input[1])
            assert weight is None or weight.op_type != "DequantizeLinear", node.name
    csv_path, json_path = sensitivity_paths(output)
    assert csv_path.is_file() and json.loads(json_path.read_text())["search"]


def test_analyse_writes_the_sorted_table_and_no_model(tmp_path, capsys, checked):
    output = tmp_path / "a.int8.onnx"
    result = checked(output, analyse=True)
    assert result["output"] is None and not output.exists()
    rows = result["sensitivity"]
    layers = {row["layer"] for row in rows}
    assert {"/stage1/stage1.0/Conv", "/heads.0/regressor/fc/Gemm"} <= layers
    assert not any("fc_xyz" in name or "fc_wpqr" in name for name in layers)  # tail stays float
    deviations = [row["deviation"] for row in rows]
    assert deviations == sorted(deviations, reverse=True)
    assert [row["rank"] for row in rows] == list(range(1, len(rows) + 1))
    assert sum(row["mac_share"] for row in rows) == pytest.approx(1.0)
    assert all("increase_translation" in row for row in rows)
    assert {row["method"] for row in result["methods"]} == {"minmax", "entropy", "percentile"}
    out = capsys.readouterr().out
    assert "<- chosen" in out and "/stage1/stage1.0/Conv" in out
    csv_path, json_path = sensitivity_paths(output)
    with csv_path.open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["layer"] for row in table] == [row["layer"] for row in rows]
    report = json.loads(json_path.read_text())
    assert report["calibration_method"] == result["method"]
    assert len(report["methods"]) == 3 and len(report["sensitivity"]) == len(rows)
    # Blocks: the tiny model's four stages and its head.
    blocks = checked(output, analyse=True, granularity="block")
    assert {row["layer"] for row in blocks["sensitivity"]} == {
        "/stage1", "/stage2", "/stage3", "/stage4", "/heads.0"
    }  # fmt: skip


def test_choices_on_another_split(tmp_path, checked):
    """--select-split train: method and layers chosen on train, the budget checked on test."""
    output = tmp_path / "s.int8.onnx"
    result = checked(output, select_split="train", analyse=True, method="minmax")
    report = json.loads(sensitivity_paths(output)[1].read_text())
    assert report["analysis_images"]["split"] == "train"
    assert report["analysis_images"]["images"] == 2 and result["output"] is None
    result = checked(output, select_split="train", max_error_increase=1.0)
    assert result["accuracy"]["split"] == "test" and result["accuracy"]["images"] == 8
    assert result["accuracy"]["increase_translation"] == pytest.approx(0.5, abs=0.02) or (
        result["method"] != "minmax"
    )


def test_analyse_without_ground_truth_uses_the_fp32_difference(exported, tmp_path):
    result = quantize(exported["model"], tmp_path / "n.onnx", analyse=True, method="minmax")
    rows = result["sensitivity"]
    assert rows and all("increase_translation" not in row for row in rows)
    assert all(np.isfinite(row["deviation"]) for row in rows)


def test_keep_float_by_name(exported, tmp_path):
    output = tmp_path / "keep.int8.onnx"
    layer = "/stage1/stage1.0/Conv"
    result = quantize(exported["model"], output, method="minmax", keep_float=[layer])
    assert result["float_layers"] == [layer]
    metadata = _metadata(output)
    assert json.loads(metadata[FLOAT_LAYERS_KEY]) == [layer]
    assert {layer, "/stage1/stage1.2/Relu"} <= set(json.loads(metadata[FLOAT_NODES_KEY]))
    with pytest.raises(PoseNetTrainError, match="neither a layer nor a node"):
        quantize(exported["model"], tmp_path / "x.onnx", keep_float=["/no/such/Conv"])
    assert not (tmp_path / "x.onnx").exists()


def test_the_node_runs_the_int8_files_unchanged(exported, quantized, tmp_path):
    """posenet_ros's Relocalizer (ONNX Runtime backend) on a full and a mixed INT8 file gives
    what the trainer's own evaluation of that file gives."""
    pipeline = pytest.importorskip("posenet_ros.pipeline")
    from posenet_train.data import read_rgb
    from posenet_train.datasets import load_split

    records = load_split(str(exported["dataset"]), "test")
    mixed = quantize(
        exported["model"],
        tmp_path / "m.onnx",
        method="minmax",
        keep_float=["/stage2/stage2.0/Conv"],
    )["output"]
    for path in (quantized["output"], mixed):
        relocalizer = pipeline.Relocalizer(str(path), backend="onnxruntime", num_threads=1)
        (position, quat), _ = predict_onnx(path, records[:2], num_threads=1)
        for index, record in enumerate(records[:2]):
            estimate = relocalizer.estimate_rgb(read_rgb(record.image_path))
            np.testing.assert_allclose(estimate.position_m, position[index], atol=1e-5)
            assert abs(abs(float(estimate.quat_wxyz @ quat[index])) - 1.0) < 1e-6


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"max_error_increase": -0.1}, "max_error_increase"),
        ({"max_error_increase": float("nan")}, "max_error_increase"),
        ({"max_float_mac_share": 1.5}, "max_float_mac_share"),
        ({"min_speedup": 0}, "min_speedup"),
        ({"max_float_layers": 0}, "max_float_layers"),
        ({"max_eval_images": True}, "max_eval_images"),
        ({"on_excess": "ignore"}, "refuse, warn"),
        ({"granularity": "op"}, "layer, block"),
        ({"split": "val"}, "train, test"),
        ({"select_split": "all"}, "train, test"),
        ({"dataset": "/no/such/dataset"}, "no/such/dataset"),
    ],
)
def test_bad_accuracy_arguments(exported, tmp_path, kwargs, words):
    with pytest.raises(PoseNetTrainError, match=words):
        main(exported["model"], tmp_path / "o.onnx", threads=1, **kwargs)
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--max-error-increase", "-1"],
        ["--max-error-increase", "five"],
        ["--max-error-increase", "nan"],
        ["--on-excess", "ignore"],
        ["--granularity", "op"],
        ["--method", "kl"],
        ["--max-float-mac-share", "2"],
        ["--min-speedup", "0"],
        ["--max-float-layers", "0"],
        ["--max-eval-images", "-3"],
        ["--split", "val"],
        ["--select-split", "validation"],
    ],
)
def test_cli_rejects_bad_accuracy_arguments(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        build_parser().parse_args(["--model", "m.onnx", *argv])
    assert excinfo.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_analyse(exported, ground_truth, tmp_path, capsys):
    output = tmp_path / "c.int8.onnx"
    argv = ["--model", str(exported["model"]), "--output", str(output), "--threads", "1"]
    argv += ["--dataset", str(ground_truth["dataset"]), "--analyse", "--method", "minmax"]
    assert cli(argv) == 0
    assert not output.exists() and all(p.is_file() for p in sensitivity_paths(output))
    assert "sensitivity table" in capsys.readouterr().out


def test_benchmark_pair_times_both_models(exported, quantized):
    images = np.load(exported["calibration"])
    times = benchmark_pair(
        [exported["model"], quantized["output"]], images, "image", threads=1, runs=3
    )
    assert len(times) == 2 and all(t > 0 for t in times)


def _float_conv_between_qdq(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A QDQ graph whose Conv is kept in float (x -> Q -> DQ -> Conv -> Q -> DQ -> y), its two
    output channels' weights 1e4 apart in size (as a depthwise convolution's can be); returns
    ``(x, y as the file means it: the Conv in float)``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(2, 1, 3, 3)).astype(np.float32)
    weight[0] *= 1e-3
    weight[1] *= 10.0
    x = rng.uniform(0.0, 1.0, size=(1, 1, 6, 6)).astype(np.float32)
    y_scale = 0.5
    initializers = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.zeros(2, np.float32), "b"),
        numpy_helper.from_array(np.array(1.0 / 255.0, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "x_zero"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "y_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
        helper.make_node("Conv", ["xd", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "y_scale", "y_zero"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "y_scale", "y_zero"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "float_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])],
        initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    xd = np.round(x * 255.0) / 255.0
    padded = np.pad(xd[0, 0], 1)
    conv = np.array(
        [
            [
                [np.sum(padded[i : i + 3, j : j + 3] * weight[k, 0]) for j in range(6)]
                for i in range(6)
            ]
            for k in range(2)
        ]
    )
    y = (np.clip(np.round(conv / y_scale) + 128, 0, 255) - 128) * y_scale
    return x, y[None].astype(np.float32)


def _node_session(path: Path):
    from posenet_ros.backends.onnxruntime import make_session

    return make_session(str(path), num_threads=1)


@pytest.mark.parametrize(
    "make_session", [_node_session, lambda path: _session(path, 1)], ids=["node", "quantize"]
)
def test_layers_kept_in_float_run_in_float(tmp_path, make_session):
    """ONNX Runtime's WeightBiasQuantization would quantise the float Conv's weights per tensor:
    the small channel's weights all round to 0. Every session we build keeps them in float."""
    path = tmp_path / "float_conv.onnx"
    x, expected = _float_conv_between_qdq(path)
    (y,) = make_session(path).run(["y"], {"x": x})
    np.testing.assert_allclose(y, expected, atol=1e-6)
    # What the optimiser would have done: proves the test model triggers it.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    plain = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert not np.allclose(plain.run(["y"], {"x": x})[0], expected, atol=1e-6)
