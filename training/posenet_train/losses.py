"""Pose losses: PoseNet's weighted sum (Kendall et al. 2015), the learned homoscedastic
weighting of Kendall & Cipolla 2017, and the Gaussian negative log-likelihood of a model that
predicts its own per-image variances (``nll``); all blind to the quaternion sign (q and -q are one
rotation).

Positions are compared **normalised**: the residual ``x_hat - x`` is divided by the model's
``position_scale`` (the spread of the training positions), i.e. the loss sees
``(x - mean) / scale`` exactly as the heads regress it (the mean cancels in the difference). This
makes ``beta`` and the learned weights independent of the scene's size and units: a 1 % of
scene-size position error costs the same in a 1 m room and a 100 m street.

Orientation: the ground truth is normalised to unit length, the prediction is the model's unit
quaternion, and the residual is ``min(|q_hat - q|, |q_hat + q|)``, so a prediction near ``-q``
is not punished.

Norms are per sample, then averaged over the batch. PoseNet uses the Euclidean (L2) norm;
Kendall 2017 found the L1 norm better with learned weighting, so that is the learned loss's
default. Both accept ``norm="l1"`` or ``"l2"``.

``nll`` (:class:`GaussianNLLLoss`) is the heteroscedastic generalisation of the learned
weighting (Kendall & Gal 2017, "What uncertainties do we need in Bayesian deep learning"): the
model predicts a log-variance per axis and per image, and the loss is the negative
log-likelihood of the errors under the diagonal Gaussian those variances describe. Position
errors are in normalised units (as above; the log-variances shift by ``2 ln position_scale``),
orientation errors are the small-angle rotation vector ``d`` with ``R_true = Exp(d) R_predicted``
(world frame, radians), the same quantity the node's covariance describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posenet_train.errors import PoseNetTrainError

__all__ = [
    "LOSS_NAMES",
    "NORMS",
    "GaussianNLLLoss",
    "LearnedWeightingLoss",
    "PoseLoss",
    "PoseLossOutput",
    "PoseNetLoss",
    "build_loss",
    "multi_head_loss",
    "orientation_residual",
    "position_residual",
    "rotation_error_vector",
]

LOSS_NAMES = ("posenet", "learned", "nll")
NORMS = ("l1", "l2")


class PoseLossOutput(NamedTuple):
    """A loss value with its parts (batch means, before any weighting).

    Attributes:
        total: the scalar to minimise.
        position: mean position residual (normalised units).
        orientation: mean quaternion residual (unit-quaternion distance, sign-invariant).
    """

    total: Tensor
    position: Tensor
    orientation: Tensor


def _norm(residual: Tensor, norm: str) -> Tensor:
    if norm == "l2":
        return torch.linalg.vector_norm(residual, ord=2, dim=1)
    return residual.abs().sum(dim=1)


def _check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise PoseNetTrainError(f"unknown loss norm {norm!r}; expected one of {', '.join(NORMS)}")
    return norm


def _check_batch(
    pred_position_m: Tensor, pred_quat: Tensor, gt_position_m: Tensor, gt_quat: Tensor
):
    n = pred_position_m.shape[0]
    expected = {"pred_position_m": (n, 3), "pred_quat_wxyz": (n, 4)}
    expected.update({"gt_position_m": (n, 3), "gt_quat_wxyz": (n, 4)})
    for name, tensor in zip(
        expected, (pred_position_m, pred_quat, gt_position_m, gt_quat), strict=True
    ):
        if tuple(tensor.shape) != expected[name]:
            raise PoseNetTrainError(
                f"{name} must have shape {list(expected[name])}, got {list(tensor.shape)}"
            )


def position_residual(
    pred_position_m: Tensor,
    gt_position_m: Tensor,
    position_scale: float | Tensor = 1.0,
    norm: str = "l2",
) -> Tensor:
    """Per-sample ``|(x_hat - x) / position_scale|`` -> [N]."""
    return _norm((pred_position_m - gt_position_m) / position_scale, _check_norm(norm))


def orientation_residual(pred_quat_wxyz: Tensor, gt_quat_wxyz: Tensor, norm: str = "l2") -> Tensor:
    """Per-sample ``min(|q_hat - q/|q||, |q_hat + q/|q||)`` -> [N] (q and -q are equivalent)."""
    _check_norm(norm)
    gt = F.normalize(gt_quat_wxyz, p=2.0, dim=1, eps=1e-12)
    return torch.minimum(_norm(pred_quat_wxyz - gt, norm), _norm(pred_quat_wxyz + gt, norm))


def _quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of [N,4] wxyz quaternions."""
    w1, x1, y1, z1 = a.unbind(dim=1)
    w2, x2, y2, z2 = b.unbind(dim=1)
    return torch.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        dim=1,
    )


def rotation_error_vector(pred_quat_wxyz: Tensor, gt_quat_wxyz: Tensor) -> Tensor:
    """Per-sample rotation vector ``d`` (radians, world frame) with ``R_gt = Exp(d) R_pred`` ->
    [N,3]; sign-invariant in both quaternions, differentiable everywhere (also at ``d = 0``)."""
    gt = F.normalize(gt_quat_wxyz, p=2.0, dim=1, eps=1e-12)
    pred = F.normalize(pred_quat_wxyz, p=2.0, dim=1, eps=1e-12)
    q = _quat_multiply(gt, pred * pred.new_tensor([1.0, -1.0, -1.0, -1.0]))
    q = torch.where(q[:, :1] < 0.0, -q, q)  # the short way round: angle in [0, pi]
    w, v = q[:, :1], q[:, 1:]
    # The epsilon keeps the norm's gradient finite at v = 0; angle / n stays ~ 2 / w there.
    n = torch.sqrt((v * v).sum(dim=1, keepdim=True) + 1e-12)
    return v * (2.0 * torch.atan2(n, w) / n)


class PoseLoss(nn.Module):
    """Common call signature of the pose losses."""

    norm: str
    #: Whether the loss needs the model's log-variances (an uncertainty head).
    needs_log_variance: bool = False

    def combine(self, position: Tensor, orientation: Tensor) -> Tensor:
        """The total loss from the batch-mean residuals."""
        raise NotImplementedError

    def forward(
        self,
        pred_position_m: Tensor,
        pred_quat_wxyz: Tensor,
        gt_position_m: Tensor,
        gt_quat_wxyz: Tensor,
        position_scale: float | Tensor = 1.0,
        log_variance: Tensor | None = None,
    ) -> PoseLossOutput:
        """Loss of one head's predictions [N,3], [N,4] against ground truth [N,3], [N,4].

        ``position_scale`` is the model's ``position_scale`` buffer (see the module docstring).
        ``log_variance`` ([N,6], a head's uncertainty output in metres^2 / rad^2) is used by
        :class:`GaussianNLLLoss` only.
        """
        _check_batch(pred_position_m, pred_quat_wxyz, gt_position_m, gt_quat_wxyz)
        position = position_residual(pred_position_m, gt_position_m, position_scale, self.norm)
        orientation = orientation_residual(pred_quat_wxyz, gt_quat_wxyz, self.norm)
        position, orientation = position.mean(), orientation.mean()
        return PoseLossOutput(self.combine(position, orientation), position, orientation)


class PoseNetLoss(PoseLoss):
    """``L = |x_hat - x| + beta * |q_hat - q/|q||`` (Kendall et al. 2015), positions normalised.

    Args:
        beta: weight of the orientation term (> 0). Because positions are normalised by the
            scene's spread, values of about 1-10 balance the terms for most scenes, where the
            paper's metre-based beta needed 120-2000 depending on scene size.
        norm: "l2" (the paper's) or "l1".
    """

    def __init__(self, beta: float = 3.0, norm: str = "l2") -> None:
        super().__init__()
        if not float(beta) > 0.0:
            raise PoseNetTrainError(f"beta must be > 0, got {beta!r}")
        self.beta = float(beta)
        self.norm = _check_norm(norm)

    def combine(self, position: Tensor, orientation: Tensor) -> Tensor:
        return position + self.beta * orientation

    def extra_repr(self) -> str:
        return f"beta={self.beta}, norm={self.norm!r}"


class LearnedWeightingLoss(PoseLoss):
    """``L = L_x * exp(-s_x) + s_x + L_q * exp(-s_q) + s_q`` with learnable ``s_x``, ``s_q``
    (Kendall & Cipolla 2017, "Geometric loss functions for camera pose regression").

    ``s_x`` and ``s_q`` are ``nn.Parameter`` s: give :meth:`parameters` to the optimizer and
    save :meth:`state_dict` in checkpoints (the trainer does both).

    Args:
        s_x: initial position log-variance (paper: 0).
        s_q: initial orientation log-variance (paper: -3).
        norm: "l1" (the paper's choice with learned weighting) or "l2".
    """

    def __init__(self, s_x: float = 0.0, s_q: float = -3.0, norm: str = "l1") -> None:
        super().__init__()
        self.s_x = nn.Parameter(torch.tensor(float(s_x)))
        self.s_q = nn.Parameter(torch.tensor(float(s_q)))
        self.norm = _check_norm(norm)

    def combine(self, position: Tensor, orientation: Tensor) -> Tensor:
        return (
            position * torch.exp(-self.s_x)
            + self.s_x
            + orientation * torch.exp(-self.s_q)
            + self.s_q
        )

    def extra_repr(self) -> str:
        s_x, s_q = self.s_x.detach().item(), self.s_q.detach().item()
        return f"s_x={s_x:.4f}, s_q={s_q:.4f}, norm={self.norm!r}"


class GaussianNLLLoss(PoseLoss):
    """Negative log-likelihood of the pose errors under the model's own per-image Gaussian.

    ``L = mean_n sum_i 0.5 * (e_i^2 exp(-s_i) + s_i)`` over the six axes ``i``: position errors
    ``(x_hat - x) / position_scale`` with ``s_i`` the predicted log-variance in those normalised
    units, rotation errors the rotation vector of ``R_gt R_hat^T`` (radians) with ``s_i`` in
    rad^2 (the constant ``3 ln 2 pi`` is left out). Minimised when ``exp(s_i)`` equals the
    expected squared error of images like this one: exactly the variance a fusion filter wants.

    The Gaussian rather than a Laplace likelihood, because the node publishes variances and a
    Kalman filter assumes Gaussian errors; a Laplace scale would have to be converted (var =
    2 b^2) under an assumption the training never checked.

    ``position`` and ``orientation`` of the output are the plain L2 residuals (as the posenet
    loss reports them), for logs comparable across losses.
    """

    needs_log_variance = True

    def __init__(self) -> None:
        super().__init__()
        self.norm = "l2"

    def forward(
        self,
        pred_position_m: Tensor,
        pred_quat_wxyz: Tensor,
        gt_position_m: Tensor,
        gt_quat_wxyz: Tensor,
        position_scale: float | Tensor = 1.0,
        log_variance: Tensor | None = None,
    ) -> PoseLossOutput:
        _check_batch(pred_position_m, pred_quat_wxyz, gt_position_m, gt_quat_wxyz)
        n = pred_position_m.shape[0]
        if log_variance is None:
            raise PoseNetTrainError(
                "the nll loss needs the model's log-variances: build the model with "
                "uncertainty=True (--model-arg uncertainty=True)"
            )
        if tuple(log_variance.shape) != (n, 6):
            raise PoseNetTrainError(
                f"log_variance must have shape [{n}, 6], got {list(log_variance.shape)}"
            )
        scale = torch.as_tensor(position_scale, dtype=pred_position_m.dtype)
        scale = scale.to(pred_position_m.device)
        position_error = (pred_position_m - gt_position_m) / scale
        rotation_error = rotation_error_vector(pred_quat_wxyz, gt_quat_wxyz)
        errors = torch.cat([position_error, rotation_error], dim=1)
        shift = torch.cat([2.0 * torch.log(scale).expand(3), scale.new_zeros(3)])
        s = log_variance - shift
        total = (0.5 * (errors.square() * torch.exp(-s) + s)).sum(dim=1).mean()
        with torch.no_grad():
            position = position_residual(pred_position_m, gt_position_m, scale, "l2").mean()
            orientation = orientation_residual(pred_quat_wxyz, gt_quat_wxyz, "l2").mean()
        return PoseLossOutput(total, position, orientation)

    def combine(self, position: Tensor, orientation: Tensor) -> Tensor:
        raise PoseNetTrainError("the nll loss is computed per axis, not from batch means")


def build_loss(name: str, *, beta: float = 3.0, norm: str | None = None) -> PoseLoss:
    """Build a loss by name: "posenet" (:class:`PoseNetLoss`, uses ``beta``), "learned"
    (:class:`LearnedWeightingLoss`) or "nll" (:class:`GaussianNLLLoss`, for models with an
    uncertainty head; ``norm`` must be None or "l2").

    ``norm=None`` takes each loss's paper default (posenet: l2, learned: l1).
    """
    if name == "posenet":
        return PoseNetLoss(beta, norm or "l2")
    if name == "learned":
        return LearnedWeightingLoss(norm=norm or "l1")
    if name == "nll":
        if norm not in (None, "l2"):
            raise PoseNetTrainError(
                f"the nll loss has no residual norm to choose (got {norm!r}); leave it unset"
            )
        return GaussianNLLLoss()
    raise PoseNetTrainError(f"unknown loss {name!r}; expected one of {', '.join(LOSS_NAMES)}")


def multi_head_loss(
    loss_fn: PoseLoss,
    outputs: Sequence[tuple[Tensor, ...]],
    gt_position_m: Tensor,
    gt_quat_wxyz: Tensor,
    head_weights: Sequence[float],
    position_scale: float | Tensor = 1.0,
) -> PoseLossOutput:
    """Weighted sum over heads (``[aux1, aux2, main]`` with e.g. weights 0.3, 0.3, 1.0).

    Each head's output is ``(position_m, quat_wxyz)`` or, from an uncertainty head,
    ``(position_m, quat_wxyz, log_variance)``. ``total`` is the weighted sum of the heads'
    totals; ``position`` and ``orientation`` are the main (last) head's residuals, the numbers
    worth logging.
    """
    if len(outputs) != len(head_weights) or not outputs:
        raise PoseNetTrainError(
            f"got {len(outputs)} head outputs for {len(head_weights)} head weights"
        )
    total = outputs[0][0].new_zeros(())
    last = None
    for output, weight in zip(outputs, head_weights, strict=True):
        log_variance = output[2] if len(output) > 2 else None
        last = loss_fn(
            output[0],
            output[1],
            gt_position_m,
            gt_quat_wxyz,
            position_scale,
            log_variance=log_variance,
        )
        total = total + float(weight) * last.total
    assert last is not None
    return PoseLossOutput(total, last.position, last.orientation)
