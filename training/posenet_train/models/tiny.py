"""``posenet-tiny``: a few convolutions with the PoseNet heads contract, for tests and smoke runs
only. It trains in seconds and exports in under a second, but it is not a usable relocalizer."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from posenet_train.errors import ModelError
from posenet_train.models.base import PoseNetModel
from posenet_train.models.heads import GlobalPoolHead

__all__ = ["PoseNetTiny"]


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _TinyBackbone(nn.Module):
    """The four stages; PoseNetTiny runs them (see _features_after_trunk)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stage1 = _conv(3, width)
        self.stage2 = _conv(width, 2 * width)
        self.stage3 = _conv(2 * width, 4 * width)
        self.stage4 = _conv(4 * width, 8 * width)


class PoseNetTiny(PoseNetModel):
    """Four stride-2 convolutions (width, 2w, 4w, 8w channels) and global-pool pose heads.

    FOR TESTS AND SMOKE RUNS ONLY: same contract as the real models (0..1 RGB in, normalisation
    and position de-normalisation inside, eval/train outputs, head_weights, constructor_args),
    a few thousand parameters.

    Args:
        pretrained: must be None / "none" (there are no pretrained tiny weights).
        width: channels of the first convolution.
        fc_features: width of the heads' fc layers (a multiple of 32 when lstm_hidden is set).
        aux_heads: add two auxiliary heads after stages 2 and 3 (weights 0.3, 0.3, 1.0), to
            exercise the multi-head code paths cheaply.
        lstm_hidden: PoseLSTM grid LSTMs in every head (hidden size), or None.
        dropout: dropout before each head's fc.
        uncertainty: every head also predicts log-variances (see PoseNetModel); train with
            ``--loss nll``.
    """

    def __init__(
        self,
        *,
        pretrained: str | None = None,
        width: int = 8,
        fc_features: int = 64,
        aux_heads: bool = False,
        lstm_hidden: int | None = None,
        dropout: float = 0.2,
        uncertainty: bool = False,
        name: str = "posenet-tiny",
    ) -> None:
        if pretrained not in (None, "none"):
            raise ModelError(
                f"posenet-tiny has no pretrained weights; got pretrained={pretrained!r}"
            )
        if int(width) <= 0 or int(fc_features) <= 0:
            raise ModelError(f"width and fc_features must be > 0, got {width}, {fc_features}")
        super().__init__(
            constructor_args={
                "name": name,
                "pretrained": None,
                "width": int(width),
                "fc_features": int(fc_features),
                "aux_heads": bool(aux_heads),
                "lstm_hidden": lstm_hidden,
                "dropout": float(dropout),
                "uncertainty": bool(uncertainty),
            },
            input_mean=(0.5, 0.5, 0.5),
            input_std=(0.25, 0.25, 0.25),
            head_weights=(0.3, 0.3, 1.0) if aux_heads else (1.0,),
        )
        self.aux_heads = bool(aux_heads)
        self.backbone = _TinyBackbone(int(width))
        channels = [2 * width, 4 * width, 8 * width]
        if not aux_heads:
            channels = channels[-1:]
        self.heads = nn.ModuleList(
            [
                GlobalPoolHead(
                    c,
                    fc_features,
                    dropout=dropout,
                    lstm_hidden=lstm_hidden,
                    uncertainty=uncertainty,
                )
                for c in channels
            ]
        )

    #: stage1 (before the first tap) can be frozen, to test the frozen-trunk code paths.
    max_frozen_blocks = 1

    def extract_features(self, x: Tensor) -> list[Tensor]:
        """[stage2, stage3, stage4] features with auxiliary heads, else [stage4]."""
        return self._features_after_trunk(x, 0)

    def _trunk_modules(self, count: int) -> list[nn.Module]:
        return [self.backbone.stage1][:count]

    def _run_trunk(self, x: Tensor, count: int) -> Tensor:
        return self.backbone.stage1(x) if count else x

    def _features_after_trunk(self, trunk: Tensor, count: int) -> list[Tensor]:
        x1 = trunk if count else self.backbone.stage1(trunk)
        x2 = self.backbone.stage2(x1)
        x3 = self.backbone.stage3(x2)
        taps = [x2, x3, self.backbone.stage4(x3)]
        return taps if self.aux_heads else taps[-1:]


def build_tiny(**kwargs: Any) -> PoseNetTiny:
    """``posenet-tiny``: see :class:`PoseNetTiny` (tests and smoke runs only)."""
    return PoseNetTiny(name="posenet-tiny", **kwargs)
