"""Each loss on tiny tensors, against values computed by hand."""
import math

import pytest
import torch

from pipeline.train.losses import (
    attention_loss,
    hidden_state_loss,
    lce_loss,
    listwise_kl_loss,
    margin_mse_loss,
    pointwise_mse_loss,
    soft_label_ce_loss,
)


def test_lce_is_cross_entropy_with_positive_first():
    scores = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    expected = (-(2 - math.log(math.exp(2) + 2)) + math.log(3)) / 2
    assert lce_loss(scores).item() == pytest.approx(expected, abs=1e-6)


def test_listwise_kl_zero_when_equal_and_hand_value():
    s = torch.tensor([[1.0, 0.0]])
    assert listwise_kl_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-7)
    # teacher [0, 0] at T=1 is uniform; student softmax([1, 0]) = (e/(e+1), 1/(e+1))
    p_s = [math.e / (math.e + 1), 1 / (math.e + 1)]
    expected = 0.5 * math.log(0.5 / p_s[0]) + 0.5 * math.log(0.5 / p_s[1])
    assert listwise_kl_loss(s, torch.tensor([[0.0, 0.0]])).item() == pytest.approx(expected, abs=1e-6)


def test_listwise_kl_teacher_temperature_sharpens():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[0.2, 0.1]])  # at T=0.1: logits 2 and 1
    p_t = [math.e / (math.e + 1), 1 / (math.e + 1)]
    expected = sum(p * math.log(p / 0.5) for p in p_t)
    got = listwise_kl_loss(student, teacher, temperature=1.0, teacher_temperature=0.1).item()
    assert got == pytest.approx(expected, abs=1e-6)


def test_margin_mse_and_pointwise_mse():
    student = torch.tensor([[3.0, 1.0, 0.0]])  # margins 2, 3
    teacher = torch.tensor([[2.0, 1.0, 1.0]])  # margins 1, 1
    assert margin_mse_loss(student, teacher).item() == pytest.approx((1 + 4) / 2)
    assert pointwise_mse_loss(student, teacher).item() == pytest.approx((1 + 0 + 1) / 3)


def test_soft_label_ce_skips_groups_without_relevant():
    scores = torch.tensor([[0.0, 0.0], [5.0, 1.0]])
    labels = torch.tensor([[1, 1], [0, 0]])
    assert soft_label_ce_loss(scores, labels).item() == pytest.approx(math.log(2), abs=1e-6)
    assert soft_label_ce_loss(scores, torch.zeros_like(labels)).item() == 0.0


def test_hidden_state_loss_masks_padding_and_projects():
    mask = torch.tensor([[1, 1, 0]])
    s = [torch.tensor([[[1.0], [2.0], [100.0]]])]
    t = [torch.tensor([[[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])]
    proj = torch.nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        proj.weight.fill_(1.0)  # projects x to (x, x)
    # position 0: (1,1) vs (1,1) -> 0; position 1: (2,2) vs (0,0) -> 8; padding ignored; / (2 tokens * 2 dims)
    assert hidden_state_loss(s, t, mask, proj).item() == pytest.approx(8 / 4)
    with pytest.raises(ValueError, match="widths differ"):
        hidden_state_loss(s, t, mask)


def test_attention_loss_masks_padding_and_averages_heads():
    mask = torch.tensor([[1, 0]])
    s = torch.zeros(1, 2, 2, 2)
    t = torch.zeros(1, 2, 2, 2)
    t[0, 0, 0, 0] = 1.0  # head 0, real row, real column: squared error 1 over 2 heads x 1 entry
    t[0, :, 1, :] = 9.0  # the padding row does not count
    assert attention_loss([s], [t], mask).item() == pytest.approx(0.5)
    # different head counts: compare head-averaged maps: (0.5)^2 over 1 entry
    assert attention_loss([s[:, :1]], [t], mask).item() == pytest.approx(0.25)
