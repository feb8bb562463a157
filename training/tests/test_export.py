"""Export: the model-file contract (ONNX + metadata), ORT equivalence, calibration set, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import posenet_train.export as export_module
from posenet_core.calibration import calibration_paths
from posenet_core.mapfile import split_fingerprint
from posenet_core.preprocess import resize_shorter_and_center_crop
from posenet_train.checkpoint import model_from_checkpoint, save_model_checkpoint
from posenet_train.datasets import load_split
from posenet_train.errors import CheckpointError, DatasetError, ModelError, PoseNetTrainError
from posenet_train.export import build_parser, cli, main
from posenet_train.models import build_model

sys.path.insert(0, str(Path(__file__).parent))
from tiny_scene import CROP, RESIZE, train_tiny  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, best.pt of a 1-epoch posenet-tiny run with validation)."""
    return train_tiny(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> dict:
    _, ckpt = trained
    out = tmp_path_factory.mktemp("model") / "tiny.onnx"
    return main(ckpt, out, scene_frame="world", calibration_images=5)


def test_metadata_exactly_per_contract(exported, trained):
    dataset, ckpt_path = trained
    proto = onnx.load(str(exported["model"]))
    metadata = {p.key: p.value for p in proto.metadata_props}
    val = torch.load(ckpt_path, weights_only=True)["extra"]["val"]
    expected_error = f"{val['median_translation_m']:.3f} m, {val['median_rotation_deg']:.2f} deg"
    assert {k: v for k, v in metadata.items() if k.startswith("posenet.")} == {
        "posenet.format": "1",
        "posenet.input": "image",
        "posenet.outputs": "position,orientation",
        "posenet.input_size": f"{CROP},{CROP}",
        "posenet.resize": str(RESIZE),
        "posenet.scene_frame": "world",
        "posenet.architecture": "posenet-tiny",
        "posenet.dataset": dataset.name,
        "posenet.median_error": expected_error,
        # the training split's, as posenet_train.map records it in the map file
        "posenet.dataset_fingerprint": split_fingerprint(load_split(dataset, "train"), dataset),
    }
    assert metadata["posenet_train.checkpoint"] == "best.pt"


def test_graph_opset_single_file_and_dynamic_batch(exported):
    proto = onnx.load(str(exported["model"]), load_external_data=False)
    onnx.checker.check_model(proto)
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in proto.graph.initializer)
    # No external-data side files: only the model and its calibration set.
    names = sorted(p.name for p in exported["model"].parent.iterdir())
    assert names == ["tiny.onnx", "tiny_calibration.json", "tiny_calibration.npy"]
    (image,) = proto.graph.input
    dims = image.type.tensor_type.shape.dim
    assert image.name == "image" and dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [3, CROP, CROP]
    assert [o.name for o in proto.graph.output] == ["position", "orientation"]
    assert exported["max_abs_diff"] <= 1e-4


def test_onnxruntime_matches_pytorch_on_real_images(exported, trained):
    _, ckpt = trained
    model, _ = model_from_checkpoint(ckpt)
    images = np.load(calibration_paths(exported["model"])[0])[:3]
    session = ort.InferenceSession(str(exported["model"]), providers=["CPUExecutionProvider"])
    position, orientation = session.run(["position", "orientation"], {"image": images})
    with torch.no_grad():
        want_position, want_orientation = model(torch.from_numpy(images))
    assert position.shape == (3, 3) and orientation.shape == (3, 4)
    assert np.abs(position - want_position.numpy()).max() < 1e-5
    assert np.abs(orientation - want_orientation.numpy()).max() < 1e-5
    assert np.allclose(np.linalg.norm(orientation, axis=1), 1.0, atol=1e-5)


def test_calibration_set_is_preprocessed_like_the_node(exported, trained):
    dataset, _ = trained
    npy, meta = calibration_paths(exported["model"])
    assert (exported["calibration"], exported["calibration_json"]) == (npy, meta)
    images = np.load(npy)
    assert images.dtype == np.float32 and images.shape == (5, 3, CROP, CROP)
    assert 0.0 <= images.min() and images.max() <= 1.0
    description = json.loads(meta.read_text())
    assert description["model"] == "tiny.onnx" and description["count"] == 5
    assert description["layout"] == "NCHW" and description["range"] == [0.0, 1.0]
    records = {r.image_path.name: r for r in load_split(dataset, "train")}
    import cv2

    for array, name in zip(images, description["images"], strict=True):
        bgr = cv2.imread(str(dataset / name))
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        crop = resize_shorter_and_center_crop(rgb, RESIZE, (CROP, CROP))
        assert np.array_equal(array, crop.transpose(2, 0, 1).astype(np.float32) / 255.0)
        assert Path(name).name in records


def test_model_file_passes_the_node_validator(exported):
    """Contract test against posenet_ros/model_file.py, the node's reader."""
    sys.path.insert(0, str(REPO_ROOT))
    model_file = pytest.importorskip("posenet_ros.model_file")
    info = model_file.load_model_info(str(exported["model"]))
    assert info.input_name == "image"
    assert (info.position_output, info.orientation_output) == ("position", "orientation")
    assert info.input_hw == (CROP, CROP) and info.resize_shorter == RESIZE
    assert info.scene_frame == "world" and info.architecture == "posenet-tiny"


def test_existing_outputs_are_kept_unless_overwrite(trained, tmp_path, capsys):
    _, ckpt = trained
    out = tmp_path / "m.onnx"
    main(ckpt, out, calibration_images=2)
    stamp = out.stat().st_mtime_ns, calibration_paths(out)[0].stat().st_mtime_ns
    again = main(ckpt, out, calibration_images=2)
    assert again["max_abs_diff"] is None
    assert (out.stat().st_mtime_ns, calibration_paths(out)[0].stat().st_mtime_ns) == stamp
    assert "exists: kept" in capsys.readouterr().out
    replaced = main(ckpt, out, calibration_images=3, overwrite=True)
    assert replaced["max_abs_diff"] is not None
    assert np.load(calibration_paths(out)[0]).shape[0] == 3


def test_mismatch_fails_and_leaves_no_file(trained, tmp_path, monkeypatch):
    _, ckpt = trained
    monkeypatch.setattr(export_module, "_compare_with_onnxruntime", lambda *a: 0.5)
    out = tmp_path / "m.onnx"
    with pytest.raises(ModelError, match=r"differs from PyTorch by 0\.5 > 0\.0001"):
        main(ckpt, out, calibration_images=0)
    assert list(tmp_path.iterdir()) == []


def test_poselstm_heads_export(trained, tmp_path):
    """A hand-made checkpoint with PoseLSTM heads (ONNX LSTM ops) exports and matches."""
    dataset, _ = trained
    model = build_model("posenet-tiny", lstm_hidden=8)
    model.set_position_stats([0.5, 0.5, 0.2], 0.7)
    ckpt = save_model_checkpoint(
        tmp_path / "lstm.pt",
        model,
        extra={"resize_shorter": RESIZE, "crop_hw": [CROP, CROP], "dataset": str(dataset)},
    )
    result = main(ckpt, tmp_path / "lstm.onnx", calibration_images=0)
    assert result["max_abs_diff"] <= 1e-4 and result["calibration"] is None
    assert result["metadata"]["posenet.median_error"] == "unknown"  # never validated
    ops = {n.op_type for n in onnx.load(str(result["model"])).graph.node}
    assert "LSTM" in ops


@pytest.mark.parametrize("crop_hw", [(CROP, CROP), (24, 40), (33, 35)])
def test_efficientnet_exports_same_padding_as_constants(trained, tmp_path, crop_hw):
    """TensorFlow-"SAME" padding depends on the input size; at the file's fixed size it must be
    part of the convolutions, not a Shape -> ... -> Pad chain run on every inference (odd sizes
    pad asymmetrically on both axes), with the same outputs, and the model must pad
    dynamically again afterwards."""
    dataset, _ = trained
    torch.manual_seed(0)
    model = build_model("posenet-efficientnet-lite0", pretrained=None)
    model.set_position_stats([0.5, 0.5, 0.2], 0.7)
    ckpt = save_model_checkpoint(
        tmp_path / "eff.pt",
        model,
        extra={"resize_shorter": RESIZE, "crop_hw": list(crop_hw), "dataset": str(dataset)},
    )
    result = main(ckpt, tmp_path / "eff.onnx", calibration_images=0)
    assert result["max_abs_diff"] <= 1e-4
    graph = onnx.load(str(result["model"])).graph
    ops = [node.op_type for node in graph.node]
    assert {"Pad", "ConstantOfShape", "Gather"}.isdisjoint(ops)
    assert ops.count("Conv") == 49
    assert any(
        list(a.ints)[:2] != list(a.ints)[2:]
        for node in graph.node
        if node.op_type == "Conv"
        for a in node.attribute
        if a.name == "pads"
    ), "the stride-2 convolutions pad asymmetrically"
    # The context restored the library's size-dependent forward.
    reloaded = model_from_checkpoint(ckpt)[0].eval()
    assert not any("forward" in vars(m) for m in reloaded.modules())
    with torch.no_grad():
        position, _ = reloaded(torch.rand(1, 3, 40, 56))
    assert position.shape == (1, 3)


def _pad_conv_model(
    pads: list[int], *, value: float = 0.0, mode: str = "constant", pads_from_input: bool = False
) -> onnx.ModelProto:
    """x [1,2,5,6] -> Pad(pads, value, mode) -> Conv 3x3 (stride 2) -> y, and the Pad's output
    also as a graph output when ``mode`` is "shared" (two consumers)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(3, 2, 3, 3)).astype(np.float32), "w")
    pads_init = numpy_helper.from_array(np.array(pads, dtype=np.int64), "pads")
    value_init = numpy_helper.from_array(np.array(value, dtype=np.float32), "value")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 6])]
    initializers = [weight, value_init]
    if pads_from_input:
        inputs.append(helper.make_tensor_value_info("pads", TensorProto.INT64, [8]))
    else:
        initializers.append(pads_init)
    shared = mode == "shared"
    nodes = [
        helper.make_node(
            "Pad", ["x", "pads", "value"], ["padded"], mode="constant" if shared else mode
        ),
        helper.make_node("Conv", ["padded", "w"], ["y"], strides=[2, 2], pads=[0, 0, 0, 0]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, None, None])]
    if shared:
        outputs.append(
            helper.make_tensor_value_info("padded", TensorProto.FLOAT, [1, 2, None, None])
        )
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("pads", "options", "folded"),
    [
        ([0, 0, 0, 1, 0, 0, 1, 0], {}, 1),  # asymmetric, as TF "SAME" pads a stride-2 conv
        ([0, 0, 1, 1, 0, 0, 1, 1], {}, 1),
        ([0, 0, 2, 0, 0, 0, 0, 3], {}, 1),
        ([0, 0, 1, 1, 0, 0, 1, 1], {"value": 1.0}, 0),  # not zero padding
        ([0, 0, 1, 1, 0, 0, 1, 1], {"mode": "reflect"}, 0),
        ([1, 0, 1, 1, 0, 0, 1, 1], {}, 0),  # pads the batch axis
        ([0, 0, 1, 1, 0, 0, 1, 1], {"mode": "shared"}, 0),  # the padded tensor is read twice
        ([0, 0, 1, 1, 0, 0, 1, 1], {"pads_from_input": True}, 0),  # not a constant
    ],
)
def test_fold_pads_into_convs(pads, options, folded):
    model = _pad_conv_model(pads, **options)
    rng = np.random.default_rng(1)
    feed = {"x": rng.normal(size=(1, 2, 5, 6)).astype(np.float32)}
    if options.get("pads_from_input"):
        feed["pads"] = np.array(pads, dtype=np.int64)

    def run(proto: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        return session.run(
            ["y"], {k: v for k, v in feed.items() if k in {i.name for i in session.get_inputs()}}
        )[0]

    expected = run(model)
    assert export_module.fold_pads_into_convs(model) == folded
    onnx.checker.check_model(model)
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("Pad") == 1 - folded
    assert {init.name for init in model.graph.initializer} >= {"w"}
    np.testing.assert_allclose(run(model), expected, rtol=1e-5, atol=1e-5)


def test_dataset_moved(trained, tmp_path):
    dataset, ckpt_path = trained
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["extra"]["dataset"] = str(tmp_path / "gone")
    moved = tmp_path / "moved.pt"
    torch.save(ckpt, moved)
    with pytest.raises(DatasetError, match="--dataset"):
        main(moved, tmp_path / "m.onnx", calibration_images=0)
    assert main(moved, tmp_path / "m.onnx", calibration_images=0, dataset=str(dataset))["model"]


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"output": "model.pt"}, PoseNetTrainError, "must be a .onnx file"),
        ({"scene_frame": "/map"}, PoseNetTrainError, "leading slash"),
        ({"scene_frame": "my map"}, PoseNetTrainError, "without whitespace"),
        ({"scene_frame": ""}, PoseNetTrainError, "non-empty"),
        ({"calibration_images": -1}, PoseNetTrainError, ">= 0"),
        ({"checkpoint": "missing.pt"}, CheckpointError, "does not exist"),
    ],
)
def test_bad_arguments(trained, tmp_path, kwargs, error, pattern):
    _, ckpt = trained
    args = {"checkpoint": ckpt, "output": tmp_path / "m.onnx", **kwargs}
    if not Path(args["checkpoint"]).is_absolute():
        args["checkpoint"] = tmp_path / args["checkpoint"]
    if not Path(args["output"]).is_absolute():
        args["output"] = tmp_path / args["output"]
    with pytest.raises(error, match=pattern):
        main(**args)
    assert not (tmp_path / "m.onnx").exists()


def test_checkpoint_without_preprocessing_record(tmp_path):
    model = build_model("posenet-tiny")
    ckpt = save_model_checkpoint(tmp_path / "bare.pt", model)
    with pytest.raises(ModelError, match="resize_shorter, crop_hw, dataset"):
        main(ckpt, tmp_path / "m.onnx")


@pytest.mark.parametrize(
    "argv",
    [
        ["--output", "m.onnx"],
        ["--checkpoint", "c.pt"],
        ["--checkpoint", "c.pt", "--output", "m.onnx", "--calibration-images", "-3"],
        ["--checkpoint", "c.pt", "--output", "m.onnx", "--calibration-images", "many"],
    ],
)
def test_bad_cli_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2


def test_cli_reports_errors_and_succeeds(trained, tmp_path, capsys):
    _, ckpt = trained
    assert (
        cli(["--checkpoint", str(tmp_path / "nope.pt"), "--output", str(tmp_path / "m.onnx")]) == 2
    )
    assert "posenet-export: error:" in capsys.readouterr().err
    out = tmp_path / "m.onnx"
    argv = ["--checkpoint", str(ckpt), "--output", str(out), "--calibration-images", "0"]
    assert cli(argv + ["--scene-frame", "map"]) == 0
    assert "max |difference|" in capsys.readouterr().out
    assert out.is_file() and not calibration_paths(out)[0].exists()
