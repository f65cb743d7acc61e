"""RLDLoss: sample confidence (SCD) and masked correlation (MCD) distillation."""
import math

import pytest
import torch
from loss_refs import build, per_row, ref_rld

from mmkd.models.losses import rld_loss

LOG = math.log


def test_hand_computed():
    # T = Ta = 1; teacher [ln 4, ln 2, 0] -> p_t = [4/7, 2/7, 1/7]; student uniform
    s = torch.zeros(2, 3, dtype=torch.float64)
    t = torch.tensor([[LOG(4), LOG(2), 0.0]] * 2, dtype=torch.float64)
    y = torch.tensor([1, 0])
    got = build('RLDLoss', temperature=1.0, reduction='none')(s, t, y)
    # SCD uses the teacher's top-1 mass 4/7, the student's label mass 1/3
    scd = (4 / 7) * LOG((4 / 7) / (1 / 3)) + (3 / 7) * LOG((3 / 7) / (2 / 3))
    # y = 1: M = {0, 1}; only class 2 is left: MCD = 0
    assert got[0].item() == pytest.approx(scd, rel=1e-12)
    # y = 0: M = {0}; over {1, 2}: teacher [2/3, 1/3], student [1/2, 1/2]
    mcd = (2 / 3) * LOG((2 / 3) / 0.5) + (1 / 3) * LOG((1 / 3) / 0.5)
    assert got[1].item() == pytest.approx(scd + 8 * mcd, rel=1e-12)


def test_matches_reference_with_separate_temperatures():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(8, 6, generator=g, dtype=torch.float64) * 3
    t = torch.randn(8, 6, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 6, (8, ), generator=g)
    got = build('RLDLoss', alpha=0.5, beta=2.0, temperature=3.0, alpha_temperature=1.5,
                reduction='none')(s, t, y)
    want = per_row(ref_rld, s, t, 0.5, 2.0, 3.0, 1.5, target=y)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


def test_label_ranked_last_by_the_teacher_gives_no_mcd():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 5, generator=g, dtype=torch.float64).requires_grad_()
    t = torch.randn(4, 5, generator=g, dtype=torch.float64)
    y = t.argmin(dim=1)
    mcd = rld_loss(s, t, y, alpha=0.0, beta=1.0)
    assert (mcd == 0).all()
    grad, = torch.autograd.grad(mcd.sum(), s)
    assert (grad == 0).all()
    # the full loss is then SCD alone
    torch.testing.assert_close(
        build('RLDLoss', reduction='none')(s, t, y),
        torch.tensor(per_row(ref_rld, s.detach(), t, 1.0, 0.0, target=y), dtype=torch.float64))


def test_ties_with_the_label_are_masked():
    # classes 0 and 1 tie; with y = 1 both are in M, leaving {2, 3}
    s = torch.tensor([[0.5, -0.5, 1.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[2.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    mcd = rld_loss(s, t, torch.tensor([1]), alpha=0.0, beta=1.0, temperature=1.0)
    p_t = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]
    p_s = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]
    assert mcd.item() == pytest.approx(sum(a * LOG(a / b) for a, b in zip(p_t, p_s)), abs=1e-15)
    s2 = torch.tensor([[0.5, -0.5, 2.0, 0.0]], dtype=torch.float64)
    q_s = [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)]
    mcd2 = rld_loss(s2, t, torch.tensor([1]), alpha=0.0, beta=1.0, temperature=1.0)
    assert mcd2.item() == pytest.approx(sum(a * LOG(a / b) for a, b in zip(p_t, q_s)), rel=1e-12)


def test_scd_uses_the_teachers_top1_not_the_label():
    # a wrong teacher: confident in class 2 while the label is 0
    s = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 0.0, LOG(8)]], dtype=torch.float64)  # p_t = [0.1, 0.1, 0.8]
    scd = rld_loss(s, t, torch.tensor([0]), alpha=1.0, beta=0.0, temperature=1.0)
    want = 0.8 * LOG(0.8 / (1 / 3)) + 0.2 * LOG(0.2 / (2 / 3))
    assert scd.item() == pytest.approx(want, rel=1e-12)
