"""DKDLoss: hand-computed values, the DKD == KD invariant, the official formula."""
import math

import pytest
import torch
import torch.nn.functional as F
from loss_refs import build, per_row, ref_dkd, softmax

from mmkd.models.losses import dkd_loss, kd_loss


def test_hand_computed():
    # T = 1, C = 3: p_t = softmax([ln 2, 0, 0]) = [1/2, 1/4, 1/4], p_s = [1/3] * 3
    s = torch.zeros(2, 3, dtype=torch.float64)
    t = torch.tensor([[math.log(2), 0.0, 0.0]] * 2, dtype=torch.float64)
    y = torch.tensor([0, 1])
    loss = build('DKDLoss', alpha=1.0, beta=8.0, temperature=1.0, reduction='none')
    got = loss(s, t, y)
    # row 0 (g = 0): TCKD = KL([1/2, 1/2] || [1/3, 2/3]); NCKD over {1, 2}: uniform vs uniform
    tckd0 = 0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))
    # row 1 (g = 1): TCKD = KL([1/4, 3/4] || [1/3, 2/3]); NCKD over {0, 2}: [2/3, 1/3] vs [1/2, 1/2]
    tckd1 = 0.25 * math.log(0.25 / (1 / 3)) + 0.75 * math.log(0.75 / (2 / 3))
    nckd1 = (2 / 3) * math.log((2 / 3) / 0.5) + (1 / 3) * math.log((1 / 3) / 0.5)
    assert got[0].item() == pytest.approx(tckd0, rel=1e-12)
    assert got[1].item() == pytest.approx(tckd1 + 8 * nckd1, rel=1e-12)


def test_matches_reference_at_other_settings():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 6, generator=g, dtype=torch.float64) * 2
    t = torch.randn(5, 6, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 6, (5, ), generator=g)
    got = build('DKDLoss', alpha=2.0, beta=0.5, temperature=1.0, reduction='none')(s, t, y)
    want = per_row(ref_dkd, s, t, 2.0, 0.5, 1.0, target=y)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


@pytest.mark.parametrize('T', [1.0, 4.0])
@pytest.mark.parametrize('shape', [(6, 5), (2, 5, 3, 2)])
def test_with_beta_one_minus_pt_equals_kd(T, shape):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    t = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 5, (shape[0], ) + shape[2:], generator=g)
    p_t_g = F.softmax(t / T, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
    got = dkd_loss(s, t, y, alpha=1.0, beta=1 - p_t_g, temperature=T)
    torch.testing.assert_close(got, kd_loss(s, t, T), rtol=1e-10, atol=1e-12)


def test_beta_one_minus_pt_equals_kd_in_float32_with_large_logits():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(32, 10, generator=g) * 20, torch.randn(32, 10, generator=g) * 20
    y = torch.randint(0, 10, (32, ), generator=g)
    p_t_g = F.softmax(t, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(
        dkd_loss(s, t, y, 1.0, 1 - p_t_g, 1.0), kd_loss(s, t, 1.0), rtol=1e-4, atol=1e-4)


def official_dkd(s, t, target, alpha, beta, T):
    """The official DKD code's formula (cat_mask, -1000 masks), summed per row."""
    gt = torch.zeros_like(s).scatter_(1, target.unsqueeze(1), 1).bool()
    p_s, p_t = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
    b_s = torch.cat([(p_s * gt).sum(1, keepdim=True), (p_s * ~gt).sum(1, keepdim=True)], 1)
    b_t = torch.cat([(p_t * gt).sum(1, keepdim=True), (p_t * ~gt).sum(1, keepdim=True)], 1)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction='none').sum(1)
    nckd = F.kl_div(
        F.log_softmax(s / T - 1000.0 * gt, dim=1), F.softmax(t / T - 1000.0 * gt, dim=1),
        reduction='none').sum(1)
    return (alpha * tckd + beta * nckd) * T**2


def test_matches_official_formula_on_moderate_logits():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(16, 100, generator=g, dtype=torch.float64) * 2
    t = torch.randn(16, 100, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 100, (16, ), generator=g)
    got = build('DKDLoss', reduction='none')(s, t, y)
    torch.testing.assert_close(got, official_dkd(s, t, y, 1.0, 8.0, 4.0), rtol=1e-9, atol=1e-12)


def test_background_is_an_ordinary_class():
    # two-stage detectors: C + 1 columns, background last, targets may be C
    g = torch.Generator().manual_seed(4)
    s = torch.randn(6, 5, generator=g, dtype=torch.float64)
    t = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([4, 4, 0, 1, 4, 2])
    got = build('DKDLoss', temperature=1.0, beta=0.25, reduction='none')(s, t, y)
    want = per_row(ref_dkd, s, t, 1.0, 0.25, 1.0, target=y)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


def test_two_classes_and_one_class():
    # C = 2: NCKD is over one class, 0
    s = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    y = torch.tensor([0])
    p_t, p_s = softmax(t[0].tolist(), 4.0), softmax(s[0].tolist(), 4.0)
    tckd = p_t[0] * math.log(p_t[0] / p_s[0]) + p_t[1] * math.log(p_t[1] / p_s[1])
    assert build('DKDLoss')(s, t, y).item() == pytest.approx(16 * tckd, rel=1e-10)
    # C = 1: both terms vanish, still finite with a (zero) gradient
    s1 = torch.tensor([[2.0]], requires_grad=True)
    value = build('DKDLoss')(s1, torch.tensor([[5.0]]), torch.tensor([0]))
    value.backward()
    assert value.item() == 0.0 and s1.grad.item() == 0.0
