"""Losses: known values, the quaternion sign ambiguity, normalised positions, learned weights."""

from __future__ import annotations

import math

import pytest
import torch

from posenet_train.errors import PoseNetTrainError
from posenet_train.losses import (
    LearnedWeightingLoss,
    PoseNetLoss,
    build_loss,
    multi_head_loss,
    orientation_residual,
    position_residual,
)


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


PRED_P = _t([[1.0, 2.0, 3.0]])
GT_P = _t([[1.0, 2.0, 5.0]])
PRED_Q = _t([[1.0, 0.0, 0.0, 0.0]])
GT_Q = _t([[0.0, 0.0, 0.0, 2.0]])  # not unit: the loss normalises the ground truth


@pytest.mark.parametrize(
    ("norm", "beta", "expected"),
    [
        # position: |(0,0,-2)| / scale 2 = 1; orientation: |(1,0,0,0) - (0,0,0,1)| = sqrt(2)
        ("l2", 1.0, 1.0 + math.sqrt(2.0)),
        ("l2", 10.0, 1.0 + 10.0 * math.sqrt(2.0)),
        ("l1", 3.0, 1.0 + 3.0 * 2.0),
    ],
)
def test_posenet_loss_known_values(norm, beta, expected):
    out = PoseNetLoss(beta, norm)(PRED_P, PRED_Q, GT_P, GT_Q, position_scale=2.0)
    assert out.total.item() == pytest.approx(expected, rel=1e-6)
    assert out.position.item() == pytest.approx(1.0)
    assert out.orientation.item() == pytest.approx(math.sqrt(2.0) if norm == "l2" else 2.0)


def test_batch_mean_of_per_sample_norms():
    pred_p = _t([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    gt_p = _t([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])
    q = _t([[1.0, 0.0, 0.0, 0.0]] * 2)
    out = PoseNetLoss(1.0)(pred_p, q, gt_p, q)
    assert out.position.item() == pytest.approx((5.0 + 1.0) / 2)  # mean of L2 norms
    assert out.orientation.item() == pytest.approx(0.0)


@pytest.mark.parametrize(
    "loss", [PoseNetLoss(5.0), PoseNetLoss(5.0, "l1"), LearnedWeightingLoss()]
)
def test_quaternion_sign_does_not_matter(loss):
    torch.manual_seed(0)
    pred_q = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    gt_q = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    p = torch.randn(6, 3)
    flip = _t([[1.0], [-1.0], [1.0], [-1.0], [-1.0], [1.0]])
    a = loss(p, pred_q, p, gt_q)
    b = loss(p, pred_q, p, gt_q * flip)
    assert a.total.item() == pytest.approx(b.total.item(), rel=1e-6)
    # A prediction of -q is a perfect prediction of q.
    assert loss(p, -gt_q, p, gt_q).orientation.item() == pytest.approx(0.0, abs=1e-6)


def test_orientation_residual_is_the_smaller_of_both_signs():
    q = _t([[1.0, 0.0, 0.0, 0.0]])
    near_minus = torch.nn.functional.normalize(_t([[-1.0, 0.1, 0.0, 0.0]]), dim=1)
    expected = torch.linalg.vector_norm(near_minus + q).item()
    assert orientation_residual(near_minus, q).item() == pytest.approx(expected)
    assert expected < 0.11


def test_position_loss_is_scale_independent():
    torch.manual_seed(1)
    pred, gt = torch.randn(4, 3), torch.randn(4, 3)
    small = position_residual(pred, gt, position_scale=0.5)
    large = position_residual(pred * 100.0, gt * 100.0, position_scale=50.0)
    assert torch.allclose(small, large, rtol=1e-5)


def test_learned_weighting_initial_values_and_formula():
    loss = LearnedWeightingLoss()
    assert loss.s_x.item() == 0.0 and loss.s_q.item() == -3.0
    assert loss.norm == "l1"
    out = loss(PRED_P, PRED_Q, GT_P, GT_Q, position_scale=2.0)
    l_x, l_q = 1.0, 2.0  # L1 norms
    expected = l_x * math.exp(0.0) + 0.0 + l_q * math.exp(3.0) - 3.0
    assert out.total.item() == pytest.approx(expected, rel=1e-6)


def test_learned_weights_are_trainable_parameters_in_the_state_dict():
    loss = LearnedWeightingLoss(s_x=0.5, s_q=-2.0, norm="l2")
    assert {n for n, _ in loss.named_parameters()} == {"s_x", "s_q"}
    out = loss(PRED_P, PRED_Q, GT_P, GT_Q)
    out.total.backward()
    assert loss.s_x.grad is not None and loss.s_q.grad is not None
    # d/ds (L e^-s + s) = 1 - L e^-s
    assert loss.s_x.grad.item() == pytest.approx(1.0 - 2.0 * math.exp(-0.5), rel=1e-5)
    state = loss.state_dict()
    restored = LearnedWeightingLoss()
    restored.load_state_dict(state)
    assert restored.s_x.item() == 0.5 and restored.s_q.item() == -2.0


def test_multi_head_loss_weights_heads_and_reports_main_parts():
    loss = PoseNetLoss(1.0)
    good = (GT_P.clone(), _t([[0.0, 0.0, 0.0, 1.0]]))
    bad = (PRED_P, PRED_Q)
    out = multi_head_loss(loss, [bad, bad, good], GT_P, GT_Q, (0.3, 0.3, 1.0), 2.0)
    single = loss(*bad, GT_P, GT_Q, 2.0).total.item()
    assert out.total.item() == pytest.approx(0.6 * single, rel=1e-6)
    assert out.position.item() == pytest.approx(0.0) and out.orientation.item() == pytest.approx(0)


def test_build_loss():
    assert isinstance(build_loss("posenet", beta=7.0), PoseNetLoss)
    assert build_loss("posenet", beta=7.0).beta == 7.0
    assert build_loss("posenet").norm == "l2"
    assert isinstance(build_loss("learned"), LearnedWeightingLoss)
    assert build_loss("learned", norm="l2").norm == "l2"


@pytest.mark.parametrize(
    "make",
    [
        lambda: build_loss("huber"),
        lambda: PoseNetLoss(0.0),
        lambda: PoseNetLoss(-1.0),
        lambda: PoseNetLoss(1.0, "l3"),
        lambda: LearnedWeightingLoss(norm="max"),
    ],
)
def test_bad_loss_arguments(make):
    with pytest.raises(PoseNetTrainError):
        make()


@pytest.mark.parametrize(
    "args",
    [
        (PRED_P, PRED_Q, GT_P[:, :2], GT_Q),
        (PRED_P, PRED_Q[:, :3], GT_P, GT_Q),
        (torch.cat([PRED_P, PRED_P]), PRED_Q, GT_P, GT_Q),
    ],
)
def test_bad_shapes(args):
    with pytest.raises(PoseNetTrainError, match="must have shape"):
        PoseNetLoss(1.0)(*args)


def test_head_count_mismatch():
    with pytest.raises(PoseNetTrainError, match="head"):
        multi_head_loss(PoseNetLoss(1.0), [(PRED_P, PRED_Q)], GT_P, GT_Q, (0.3, 1.0))
