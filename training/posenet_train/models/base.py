"""The contract every posenet_train model keeps (see :class:`PoseNetModel`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posenet_train.errors import ModelError

__all__ = ["PoseNetModel", "HeadOutput", "pretrained_source"]

#: (normalised position [N,3], raw quaternion [N,4][, log-variances [N,6] in normalised units])
#: as a head regresses them.
HeadOutput = tuple[Tensor, ...]


def pretrained_source(pretrained: object) -> str | None:
    """A backbone's ``pretrained`` argument as stored in constructor_args: None (also for
    ``"none"``), ``"imagenet"`` or a weights path as a string; ModelError for anything else."""
    if pretrained is not None and not isinstance(pretrained, (str, Path)):
        raise ModelError(f"pretrained must be None, 'imagenet' or a path, got {pretrained!r}")
    return None if pretrained in (None, "none") else str(pretrained)


class PoseNetModel(nn.Module):
    """Base class of the pose regressors: one input convention, one output convention.

    * Input ``image_BCHW``: float32 RGB in 0..1. The backbone's normalisation
      (``(x - input_mean) / input_std``) happens inside :meth:`forward` from buffers, so an
      exported ONNX graph carries it and every runtime feeds plain 0..1 RGB.
    * The heads regress *normalised* positions ``(position_m - position_mean) / position_scale``;
      :meth:`forward` de-normalises with the buffers ``position_mean`` (3,) and
      ``position_scale`` (scalar), set from the training split with :meth:`set_position_stats`.
      The buffers live in the state dict and in the exported graph.
    * Eval mode: ``forward(x) -> (position_m [N,3], quat_wxyz [N,4])`` from the main head only,
      the quaternion scaled to unit length (camera-to-world, wxyz).
    * Train mode: ``forward(x) -> [(position_m, quat_wxyz), ...]`` one tuple per head ordered
      ``[aux1, aux2, ..., main]``; quaternions are unit-normalised here too, so the losses
      compare unit quaternions. :attr:`head_weights` gives the loss weight of each head.
    * With an uncertainty head (constructor argument ``uncertainty=True``, :attr:`uncertainty`)
      every tuple has a third tensor, ``log_variance [N,6]``: natural-log variances of the
      position x, y, z in metres^2 in the world frame (de-normalised inside forward, like the
      position: ``+ 2 ln(position_scale)``) and of the rotation about the world's fixed x, y, z
      axes in rad^2 (a small-angle rotation vector applied on the left: ``R_true = Exp(d)
      R_predicted``). The model file's ``posenet.uncertainty_output`` is this tensor. The buffer
      ``log_variance_offset`` (6,) is added to it: zero while training, set by
      ``posenet_train.export`` to recalibrate the variances on held-out data (the head learns
      the errors of dropout-perturbed training passes, which are larger than those at
      inference, so a trained head is under-confident by a roughly constant factor).
    * :attr:`constructor_args` is ``{"name": ..., **kwargs}`` so that
      ``build_model(**model.constructor_args)`` rebuilds the same architecture.

    Subclasses set ``self.backbone`` (the part frozen by :meth:`set_backbone_frozen`) and
    ``self.heads`` (an ``nn.ModuleList`` aligned with the feature taps), and implement
    :meth:`extract_features` returning one feature tensor per head (same order).

    A frozen trunk (:meth:`set_frozen_blocks`) keeps the stem and the first N backbone blocks at
    their pretrained weights; models that support it set :attr:`max_frozen_blocks` and implement
    :meth:`_trunk_modules`, :meth:`_run_trunk` and :meth:`_features_after_trunk`. The trunk's
    output (:meth:`trunk_features`) then depends on the image only, so a trainer can compute it
    once per image and train on :meth:`forward_from_trunk`.
    """

    #: How many backbone blocks :meth:`set_frozen_blocks` can freeze (0: not supported).
    max_frozen_blocks: int = 0

    backbone: nn.Module
    heads: nn.ModuleList

    def __init__(
        self,
        *,
        constructor_args: dict[str, Any],
        input_mean: Sequence[float],
        input_std: Sequence[float],
        head_weights: Sequence[float],
    ) -> None:
        super().__init__()
        self.constructor_args: dict[str, Any] = dict(constructor_args)
        self.head_weights: tuple[float, ...] = tuple(float(w) for w in head_weights)
        self.freeze_backbone = False
        #: Backbone blocks (after the stem) held at their weights; see set_frozen_blocks.
        self.frozen_blocks = 0
        #: Whether the heads also predict log-variances (see the class docstring).
        self.uncertainty = bool(self.constructor_args.get("uncertainty", False))
        self.register_buffer(
            "input_mean", torch.tensor(input_mean, dtype=torch.float32).view(1, 3, 1, 1)
        )
        self.register_buffer(
            "input_std", torch.tensor(input_std, dtype=torch.float32).view(1, 3, 1, 1)
        )
        self.register_buffer("position_mean", torch.zeros(3, dtype=torch.float32))
        self.register_buffer("position_scale", torch.tensor(1.0, dtype=torch.float32))
        if self.uncertainty:
            # Not in the state dict: only the export sets it (a checkpoint holds the head as
            # trained, and checkpoints from before this buffer existed still load).
            self.register_buffer(
                "log_variance_offset", torch.zeros(6, dtype=torch.float32), persistent=False
            )

    @property
    def name(self) -> str:
        """The registry name this model was built with (e.g. ``posenet-googlenet``)."""
        return str(self.constructor_args["name"])

    def set_position_stats(self, mean: Sequence[float] | np.ndarray, scale: float) -> None:
        """Set the position normalisation: heads regress ``(position_m - mean) / scale``.

        Args:
            mean: (3,) mean camera centre of the training split, metres.
            scale: positive spread of the training positions, metres.
        """
        mean_arr = np.asarray(mean, dtype=np.float64).reshape(-1)
        if mean_arr.shape != (3,) or not np.all(np.isfinite(mean_arr)):
            raise ModelError(f"position mean must be 3 finite numbers, got {mean_arr.tolist()}")
        scale_f = float(scale)
        if not np.isfinite(scale_f) or scale_f <= 0.0:
            raise ModelError(f"position scale must be finite and > 0, got {scale!r}")
        with torch.no_grad():
            self.position_mean.copy_(torch.as_tensor(mean_arr, dtype=torch.float32))
            self.position_scale.fill_(scale_f)

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Freeze (or unfreeze) the backbone: no gradients into it and its batch-norm statistics
        held (the backbone stays in eval mode while the rest trains).

        Freezing runs the backbone under ``torch.no_grad`` rather than toggling
        ``requires_grad``, so a DistributedDataParallel wrapper built once keeps working (with
        ``find_unused_parameters=True``) and optimizers simply skip the gradient-less parameters.
        """
        self.freeze_backbone = bool(frozen)
        self.train(self.training)

    def set_frozen_blocks(self, count: int) -> None:
        """Hold the stem and the first ``count`` backbone blocks at their current (pretrained)
        weights for the rest of training: no gradients (``requires_grad`` off) and batch-norm
        statistics held (eval mode). 0 trains the whole backbone again.

        Early layers of an ImageNet network compute generic image features that pose regression
        need not change; freezing them skips their backward pass, and with caching (see
        :meth:`trunk_features`) their forward pass too. Raises ModelError for a count outside
        ``0..max_frozen_blocks``.
        """
        if isinstance(count, bool) or not isinstance(count, int):
            raise ModelError(f"frozen blocks must be an integer, got {count!r}")
        if not 0 <= count <= self.max_frozen_blocks:
            if self.max_frozen_blocks == 0:
                raise ModelError(
                    f"{self.name} cannot keep backbone blocks frozen (got {count}); "
                    "posenet-efficientnet-lite0 can (up to 16 blocks)"
                )
            raise ModelError(
                f"{self.name} can keep 0..{self.max_frozen_blocks} backbone blocks frozen, "
                f"got {count}"
            )
        for module in self._trunk_modules(self.max_frozen_blocks):
            module.requires_grad_(True)
        for module in self._trunk_modules(count):
            module.requires_grad_(False)
        self.frozen_blocks = count
        self.train(self.training)

    def train(self, mode: bool = True) -> PoseNetModel:
        """Set train/eval mode; a frozen backbone or trunk stays in eval mode (see
        set_backbone_frozen, set_frozen_blocks)."""
        super().train(mode)
        if mode and self.freeze_backbone:
            self.backbone.eval()
        if mode and self.frozen_blocks:
            for module in self._trunk_modules(self.frozen_blocks):
                module.eval()
        return self

    def extract_features(self, x: Tensor) -> list[Tensor]:
        """Backbone features for each head, ordered like :attr:`heads` (normalised input)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def fixed_input_size(self, example_BCHW: Tensor) -> Iterator[None]:
        """Within the block the model may assume every input has ``example_BCHW``'s height and
        width (the export traces it at the model file's fixed ``posenet.input_size``): size
        arithmetic that would otherwise be traced into the graph as shape computations becomes
        constants. Nothing to fix here; models with size-dependent layers override it."""
        yield

    def _trunk_modules(self, count: int) -> list[nn.Module]:
        """The stem and the first ``count`` blocks (models with max_frozen_blocks > 0)."""
        return []

    def _run_trunk(self, x: Tensor, count: int) -> Tensor:
        """Stem and first ``count`` blocks on the normalised input."""
        raise NotImplementedError

    def _features_after_trunk(self, trunk: Tensor, count: int) -> list[Tensor]:
        """The rest of :meth:`extract_features`, from the output of :meth:`_run_trunk`."""
        raise NotImplementedError

    def _normalised_input(self, image_BCHW: Tensor) -> Tensor:
        if image_BCHW.dim() != 4 or image_BCHW.shape[1] != 3:
            raise ModelError(
                f"{self.name} expects image_BCHW with shape [N, 3, H, W], "
                f"got {list(image_BCHW.shape)}"
            )
        return (image_BCHW - self.input_mean) / self.input_std

    def trunk_features(self, image_BCHW: Tensor) -> Tensor:
        """Output of the frozen trunk (stem and first :attr:`frozen_blocks` blocks) for 0..1 RGB
        images, without gradients; feed it to :meth:`forward_from_trunk`. Raises ModelError when
        no blocks are frozen."""
        if self.frozen_blocks == 0:
            raise ModelError("trunk_features needs frozen blocks (set_frozen_blocks(N), N > 0)")
        x = self._normalised_input(image_BCHW)
        with torch.no_grad():
            return self._run_trunk(x, self.frozen_blocks)

    def forward_from_trunk(
        self, trunk_BCHW: Tensor
    ) -> tuple[Tensor, ...] | list[tuple[Tensor, ...]]:
        """:meth:`forward` from :meth:`trunk_features` (same return values)."""
        if self.frozen_blocks == 0:
            raise ModelError(
                "forward_from_trunk needs frozen blocks (set_frozen_blocks(N), N > 0)"
            )
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            features = self._features_after_trunk(trunk_BCHW, self.frozen_blocks)
        return self._heads_forward(features)

    def forward(self, image_BCHW: Tensor) -> tuple[Tensor, ...] | list[tuple[Tensor, ...]]:
        """Regress poses from 0..1 RGB images; see the class docstring for the return value."""
        if self.frozen_blocks:
            return self.forward_from_trunk(self.trunk_features(image_BCHW))
        x = self._normalised_input(image_BCHW)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            features = self.extract_features(x)
        return self._heads_forward(features)

    def _heads_forward(
        self, features: list[Tensor]
    ) -> tuple[Tensor, ...] | list[tuple[Tensor, ...]]:
        if self.training:
            return [self._to_pose(head(f)) for head, f in zip(self.heads, features, strict=True)]
        # Auxiliary heads only shape training; inference (and the exported graph) uses the main.
        return self._to_pose(self.heads[-1](features[-1]))

    def _to_pose(self, head_output: HeadOutput) -> tuple[Tensor, ...]:
        position_normalised, quat_raw = head_output[0], head_output[1]
        position_m = position_normalised * self.position_scale + self.position_mean
        quat_wxyz = F.normalize(quat_raw, p=2.0, dim=1, eps=1e-12)
        if len(head_output) == 3:
            log_variance = self.log_variance_to_metres(head_output[2]) + self.log_variance_offset
            return position_m, quat_wxyz, log_variance
        return position_m, quat_wxyz

    def log_variance_to_metres(self, log_variance_normalised: Tensor) -> Tensor:
        """[N,6] log-variances: position from normalised units^2 to m^2 (rotation unchanged)."""
        shift = 2.0 * torch.log(self.position_scale)
        return torch.cat(
            [log_variance_normalised[:, :3] + shift, log_variance_normalised[:, 3:]], dim=1
        )
