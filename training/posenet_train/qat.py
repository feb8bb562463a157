"""Quantisation-aware fine-tuning (issue 18): train while simulating the INT8 file that
``posenet_train.quantize`` will write, so the weights learn to work on its grid.

What is simulated is ONNX Runtime's static QDQ quantisation as ``quantize`` runs it
(``quantize_static``, per-channel INT8 weights, UINT8 activations, MinMax ranges):

* **weights** of every ``Conv2d`` and ``Linear`` except the pose regressors (``Linear`` layers
  with <= 8 outputs, which ``quantize`` keeps in float: ``quantize.regression_tail_nodes``):
  per output channel, symmetric, integers -127..127, scale ``max|w| / 127``; for a convolution
  followed by a batch norm, of the weight with the batch norm folded in (``w * gamma /
  sqrt(var + eps)``), which is what the exported, pre-processed graph quantises;
* **activations**: the input of each of those layers, of the heads (the feature map before
  the pool) and of the pose regressors (outputs of quantised layers, which the INT8 file rounds
  too), per tensor, asymmetric UINT8 0..255 over a
  range that includes 0. The range is the minimum and maximum over calibration images (the
  training images ``posenet_train.export`` puts in the calibration set: up to 64, spread evenly,
  no augmentation) run through the float model, exactly as MinMax calibration computes it, and
  is recomputed with the current weights at the start of every epoch. Every activation between
  two weighted layers (after ReLU6, every residual sum) is such an input; ONNX Runtime also
  rounds a few tensors that are not (a projection's output before the residual sum), which are
  not simulated.

Batch-norm statistics are frozen while fine-tuning (the folded weights must be the ones the
forward pass rounds); dropout stays on. Rounding passes gradients straight through (the
``torch.fake_quantize_*`` operators).

Nothing of this ends up in the checkpoint: its ``model_state`` holds plain float weights with
the usual keys, so ``posenet_train.export`` and ``quantize`` make the INT8 file as always (the
same format for ONNX Runtime and TensorRT; ``quantize`` calibrates the ranges again and may
still keep layers in float, by measurement).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from posenet_train.errors import PoseNetTrainError

__all__ = [
    "ACTIVATION_RANGE",
    "REGRESSOR_MAX_OUTPUTS",
    "WEIGHT_RANGE",
    "FakeQuantization",
    "attach",
]

#: Integer range of the weights (symmetric INT8, as ONNX Runtime quantises them).
WEIGHT_RANGE = (-127, 127)
#: Integer range of the activations (asymmetric UINT8).
ACTIVATION_RANGE = (0, 255)
#: Linear layers with at most this many outputs are the pose regressors: kept in float, as
#: ``posenet_train.quantize.regression_tail_nodes`` keeps them.
REGRESSOR_MAX_OUTPUTS = 8
_TINY = 1e-12


def fake_quantize_weight(weight: Tensor) -> Tensor:
    """``weight`` rounded to symmetric per-output-channel INT8 (axis 0), straight-through."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    scale = (flat.abs().amax(dim=1) / WEIGHT_RANGE[1]).clamp_min(_TINY).float()
    zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, *WEIGHT_RANGE)


def activation_qparams(low: float, high: float) -> tuple[float, int]:
    """ONNX Runtime's UINT8 scale and zero point for a calibrated range (widened to hold 0)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / (ACTIVATION_RANGE[1] - ACTIVATION_RANGE[0])
    if scale <= 0.0:
        return 1.0, 0
    zero = int(round(ACTIVATION_RANGE[0] - low / scale))
    return scale, min(max(zero, ACTIVATION_RANGE[0]), ACTIVATION_RANGE[1])


class _FoldedWeight(nn.Module):
    """Parametrisation: the weight as the INT8 file will hold it, with the batch norm that
    follows folded in and divided out again (so the module's own batch norm still applies)."""

    def __init__(self, batch_norm: nn.BatchNorm2d | None, owner: FakeQuantization) -> None:
        super().__init__()
        # In tuples: registering them as submodules would duplicate their state-dict entries.
        self._batch_norm = (batch_norm,) if batch_norm is not None else ()
        self._owner = (owner,)

    def _fold(self, weight: Tensor) -> Tensor | None:
        if not self._batch_norm:
            return None
        bn = self._batch_norm[0]
        fold = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            fold = fold * bn.weight
        fold = torch.where(fold.abs() < _TINY, torch.full_like(fold, _TINY), fold)
        return fold.reshape(-1, *([1] * (weight.dim() - 1)))

    def forward(self, weight: Tensor) -> Tensor:
        if not self._owner[0].enabled:
            return weight
        fold = self._fold(weight)
        if fold is None:
            return fake_quantize_weight(weight)
        return fake_quantize_weight(weight * fold) / fold


class FakeQuantization:
    """Simulated INT8 attached to a model's layers (see the module docstring); :func:`attach`
    makes one. ``enabled`` switches the simulation off and on; :meth:`remove` detaches it."""

    def __init__(
        self,
        model: nn.Module,
        layers: dict[str, nn.Module],
        pairs: dict,
        float_inputs: dict[str, nn.Module],
    ) -> None:
        self.model = model
        self.layers = layers
        self.float_inputs = float_inputs
        self.batch_norms = pairs
        self.enabled = True
        self.ranges: dict[str, tuple[float, float]] = {}
        self._calibrating = False
        self._hooks: list[Any] = []
        for name, layer in layers.items():
            parametrize.register_parametrization(
                layer, "weight", _FoldedWeight(pairs.get(name), self), unsafe=True
            )
            self._hooks.append(layer.register_forward_pre_hook(self._input_hook(name)))
        for name, layer in float_inputs.items():
            self._hooks.append(layer.register_forward_pre_hook(self._input_hook(name)))
        # Checkpoints keep plain keys: "<layer>.weight", not "...parametrizations.weight.original".
        self._hooks.append(model.register_state_dict_post_hook(_plain_keys))

    def _input_hook(self, name: str):
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
            x = args[0]
            if self._calibrating:
                low, high = float(x.detach().min()), float(x.detach().max())
                if name in self.ranges:
                    old_low, old_high = self.ranges[name]
                    low, high = min(low, old_low), max(high, old_high)
                self.ranges[name] = (low, high)
                return None
            if not self.enabled:
                return None
            if name not in self.ranges:
                raise PoseNetTrainError(
                    f"quantisation-aware training: layer {name} has no activation range; "
                    "calibrate() before running the model"
                )
            scale, zero = activation_qparams(*self.ranges[name])
            return (
                torch.fake_quantize_per_tensor_affine(x, scale, zero, *ACTIVATION_RANGE),
                *args[1:],
            )

        return hook

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """The float model inside this block."""
        previous, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = previous

    def calibrate(self, images_BCHW: Tensor | np.ndarray, batch_size: int = 16) -> None:
        """Activation ranges: min/max of each simulated layer's input over ``images_BCHW`` (RGB
        0..1, preprocessed as the node does) run through the float model in eval mode, as
        MinMax calibration computes them. The model's train/eval mode is restored."""
        images = torch.as_tensor(np.asarray(images_BCHW, dtype=np.float32))
        if images.ndim != 4 or len(images) == 0:
            raise PoseNetTrainError(
                "calibration images must be a non-empty [N,3,H,W] array, got "
                f"{tuple(images.shape)}"
            )
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.ranges = {}
        self.model.eval()
        self._calibrating = True
        try:
            with torch.no_grad(), self.disabled():
                for start in range(0, len(images), batch_size):
                    self.model(images[start : start + batch_size].to(device))
        finally:
            self._calibrating = False
            self.model.train(was_training)
        missing = sorted({*self.layers, *self.float_inputs} - set(self.ranges))
        if missing:
            raise PoseNetTrainError(
                f"quantisation-aware training: calibration did not reach {len(missing)} "
                f"layer(s) ({', '.join(missing[:3])}...)"
            )

    def freeze_batchnorm(self) -> None:
        """Batch norms to eval mode (their statistics stay those the weights are folded with)."""
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()

    def describe(self) -> str:
        """One line for the training log."""
        folded = sum(1 for name in self.layers if name in self.batch_norms)
        return (
            f"{len(self.layers)} Conv/Linear layers simulated in INT8 (per-channel symmetric "
            f"weights, {folded} with their batch norm folded in; per-tensor UINT8 inputs, MinMax "
            "ranges); batch norm frozen"
        )

    def remove(self) -> None:
        """Detach: plain float layers with the (fine-tuned) weights."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        for layer in self.layers.values():
            if parametrize.is_parametrized(layer, "weight"):
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)


def _plain_keys(module: nn.Module, state: dict[str, Any], prefix: str, local: Any) -> None:
    marker = ".parametrizations.weight.original"
    for key in [k for k in state if k.endswith(marker)]:
        state[key[: -len(marker)] + ".weight"] = state.pop(key)


def quantised_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers ``quantize`` turns into INT8: Conv2d, and Linear but the pose regressors."""
    layers: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) or (
            isinstance(module, nn.Linear) and module.out_features > REGRESSOR_MAX_OUTPUTS
        ):
            layers[name] = module
    return layers


def conv_batchnorm_pairs(
    model: nn.Module, layers: dict[str, nn.Module], example_BCHW: Tensor
) -> dict[str, nn.BatchNorm2d]:
    """Each convolution whose output goes straight into a batch norm, with that batch norm
    (found by running ``example_BCHW`` once: module names differ between backbones)."""
    outputs: list[tuple[Tensor, str]] = []  # the tensors themselves: ids of freed ones recur
    pairs: dict[str, nn.BatchNorm2d] = {}
    hooks = []

    def conv_hook(name: str):
        def hook(module: nn.Module, args: Any, output: Tensor) -> None:
            outputs.append((output, name))

        return hook

    def bn_hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        for output, name in outputs:
            if output is args[0] and name not in pairs:
                pairs[name] = module

    try:
        for name, layer in layers.items():
            if isinstance(layer, nn.Conv2d):
                hooks.append(layer.register_forward_hook(conv_hook(name)))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                hooks.append(module.register_forward_pre_hook(bn_hook))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(example_BCHW)
        finally:
            model.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    return pairs


def rounded_float_inputs(model: nn.Module) -> dict[str, nn.Module]:
    """Modules that stay float but whose input the INT8 file rounds (the output of a quantised
    layer): the pose regressors (Linear layers with <= REGRESSOR_MAX_OUTPUTS outputs) and the
    heads (``model.heads``: the feature map before their pooling)."""
    found = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.out_features <= REGRESSOR_MAX_OUTPUTS
    }
    heads = getattr(model, "heads", None)
    if isinstance(heads, nn.ModuleList):
        found.update({f"heads.{index}": head for index, head in enumerate(heads)})
    return found


def attach(
    model: nn.Module, example_BCHW: Tensor, exclude: Sequence[str] = ()
) -> FakeQuantization:
    """Simulate INT8 in ``model``'s layers (all that ``quantize`` quantises, but ``exclude``).

    ``example_BCHW``: one input of the model's size (finds which batch norm follows which
    convolution). Call :meth:`FakeQuantization.calibrate` before the first forward pass.
    """
    layers = {k: v for k, v in quantised_layers(model).items() if k not in set(exclude)}
    if not layers:
        raise PoseNetTrainError("quantisation-aware training: the model has no Conv/Linear layer")
    pairs = conv_batchnorm_pairs(model, layers, example_BCHW)
    return FakeQuantization(model, layers, pairs, rounded_float_inputs(model))
