"""KDLoss, its sigmoid variant and logit standardisation."""
import math
import statistics

import pytest
import torch
from loss_refs import (
    build,
    kl,
    per_row,
    ref_dkd,
    ref_kd,
    ref_kd_sigmoid,
    ref_rekd,
    ref_rld,
    softmax,
)

from mmkd.models.losses import kd_loss


def test_hand_computed_two_classes():
    # p_t = softmax([ln 3, 0]) = [3/4, 1/4], p_s = [1/2, 1/2]
    s = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[math.log(3), 0.0]], dtype=torch.float64)
    want = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert build('KDLoss', temperature=1.0)(s, t).item() == pytest.approx(want, rel=1e-12)
    # T = 2 with doubled logits: the same distributions, times T^2 = 4
    got = build('KDLoss', temperature=2.0)(2 * s, 2 * t)
    assert got.item() == pytest.approx(4 * want, rel=1e-12)


def test_hand_computed_sigmoid():
    # sigmoid(ln 3) = 3/4, sigmoid(0) = 1/2, sigmoid(-ln 3) = 1/4
    s = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[math.log(3), -math.log(3)]], dtype=torch.float64)
    one = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    got = build('KDLoss', temperature=1.0, use_sigmoid=True)(s, t)
    assert got.item() == pytest.approx(2 * one, rel=1e-12)


def test_sigmoid_matches_reference_dense():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 3, 3, generator=g, dtype=torch.float64) * 3
    t = torch.randn(2, 5, 3, 3, generator=g, dtype=torch.float64) * 3
    got = build('KDLoss', use_sigmoid=True, reduction='none')(s, t)
    want = per_row(ref_kd_sigmoid, s.movedim(1, -1).reshape(-1, 5), t.movedim(1, -1).reshape(-1, 5))
    torch.testing.assert_close(got.reshape(-1), torch.tensor(want, dtype=torch.float64))


def test_functional_core_is_per_row():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 6, generator=g, dtype=torch.float64)
    t = torch.randn(4, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        kd_loss(s, t, 3.0), torch.tensor(per_row(ref_kd, s, t, 3.0), dtype=torch.float64))


# ---------------------------------------------------------------------------
# logit standardisation
# ---------------------------------------------------------------------------
def zscore(row):
    mean, std = statistics.fmean(row), statistics.stdev(row)  # unbiased (C - 1)
    return [(v - mean) / (std + 1e-7) for v in row]


def per_row_temperature_kd(s, t, T):
    """T^2 KL of the centred logits at per-row temperature T * (std + 1e-7)."""
    def probs(row):
        mean, std = statistics.fmean(row), statistics.stdev(row)
        Tr = T * (std + 1e-7)
        return softmax([v - mean for v in row], Tr)

    return T * T * kl(probs(t), probs(s))


def test_logit_stand_equals_per_row_temperature():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(5, 6, generator=g, dtype=torch.float64) * 4 + 3
    t = torch.randn(5, 6, generator=g, dtype=torch.float64) * 2 - 1
    got = build('KDLoss', temperature=2.0, logit_stand=True, reduction='none')(s, t)
    want = per_row(per_row_temperature_kd, s, t, 2.0)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=1e-12)


LS_REFS = {
    'KDLoss': lambda s, t, y: ref_kd(s, t, 2.0),
    'DKDLoss': lambda s, t, y: ref_dkd(s, t, y, 1.0, 8.0, 2.0),
    'ReKDLoss': lambda s, t, y: ref_rekd(s, t, 5, 1.0, 1.0, 0.0, 2.0),
    'RLDLoss': lambda s, t, y: ref_rld(s, t, y, 1.0, 8.0, 2.0),
}


@pytest.mark.parametrize('name', list(LS_REFS))
def test_logit_stand_is_the_loss_on_zscored_logits(name):
    g = torch.Generator().manual_seed(3)
    s = torch.randn(6, 7, generator=g, dtype=torch.float64) * 5 + 2
    t = torch.randn(6, 7, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 7, (6, ), generator=g)
    got = build(name, temperature=2.0, logit_stand=True, reduction='none')(s, t, y)
    want = [
        LS_REFS[name](zscore(a), zscore(b), int(c))
        for a, b, c in zip(s.tolist(), t.tolist(), y.tolist())
    ]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=1e-12)
    # invariant to a per-row affine map of the logits (positive scale)
    got2 = build(name, temperature=2.0, logit_stand=True, reduction='none')(3 * s - 7, t / 2 + 1, y)
    torch.testing.assert_close(got2, got, rtol=1e-6, atol=1e-9)


def test_logit_stand_constant_rows_become_zeros():
    s = torch.full((2, 4), 5.0)
    t = torch.full((2, 4), -3.0)
    assert build('KDLoss', logit_stand=True)(s, t).item() == 0.0
