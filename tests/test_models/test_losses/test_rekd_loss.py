"""ReKDLoss: decomposition of KD over the teacher's top-K classes."""
import math

import pytest
import torch
import torch.nn.functional as F
from loss_refs import build, per_row, ref_rekd, topk

from mmkd.models.losses import kd_loss, rekd_loss


def make(n=6, c=8, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    t = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    return s, t


def test_hand_computed():
    # C = 3, k = 2, T = 1. Teacher [ln 4, ln 2, 0] -> p_t = [4/7, 2/7, 1/7], head = {0, 1}
    s = torch.zeros(1, 3, dtype=torch.float64)
    t = torch.tensor([[math.log(4), math.log(2), 0.0]], dtype=torch.float64)
    # TISD: head renormalised [2/3, 1/3] vs [1/2, 1/2]; NTID over one class: 0
    tisd = (2 / 3) * math.log((2 / 3) / 0.5) + (1 / 3) * math.log((1 / 3) / 0.5)
    # BIN: teacher top-K mass 6/7, student 2/3
    binary = (6 / 7) * math.log((6 / 7) / (2 / 3)) + (1 / 7) * math.log((1 / 7) / (1 / 3))
    loss = build('ReKDLoss', k=2, temperature=1.0, gamma=0.5, alpha=2.0)
    assert loss(s, t).item() == pytest.approx(2 * tisd + 0.5 * binary, rel=1e-12)


@pytest.mark.parametrize('source', ['teacher', 'student'])
def test_matches_reference(source):
    s, t = make()
    got = build('ReKDLoss', k=3, alpha=1.5, beta=0.7, gamma=0.3, temperature=2.0,
                topk_source=source, reduction='none')(s, t)
    want = per_row(ref_rekd, s, t, 3, 1.5, 0.7, 0.3, 2.0, source)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


@pytest.mark.parametrize('k', [1, 3, 8])
@pytest.mark.parametrize('T', [1.0, 4.0])
def test_with_mass_weights_equals_kd(k, T):
    s, t = make(seed=1)
    p_t = F.softmax(t / T, dim=1)
    mass = torch.tensor([sum(p_t[i, c].item() for c in topk(t[i].tolist(), k)) for i in range(6)],
                        dtype=torch.float64)
    got = rekd_loss(s, t, k, alpha=mass, beta=1 - mass, gamma=1.0, temperature=T)
    torch.testing.assert_close(got, kd_loss(s, t, T), rtol=1e-10, atol=1e-12)


def test_k_equal_to_c_makes_ntid_zero_and_tisd_kd():
    s, t = make(seed=2)
    assert (rekd_loss(s, t, 8, alpha=0.0, beta=1.0) == 0).all()
    torch.testing.assert_close(rekd_loss(s, t, 8, alpha=1.0, beta=5.0), kd_loss(s, t, 4.0))


def test_k_one_makes_tisd_zero():
    s, t = make(seed=3)
    # a softmax over one class is 1 for both: 0 up to rounding
    assert rekd_loss(s, t, 1, alpha=1.0, beta=0.0).abs().max() < 1e-12


@pytest.mark.parametrize('k', [0, -1, 2.5, True])
def test_bad_k_at_build_time(k):
    with pytest.raises(ValueError, match='k must'):
        build('ReKDLoss', k=k)


def test_k_larger_than_classes_is_a_clear_error():
    s, t = make(c=4)
    with pytest.raises(ValueError, match=r'1 <= k <= C = 4'):
        build('ReKDLoss', k=5)(s, t)


def test_bad_topk_source():
    with pytest.raises(ValueError, match='topk_source'):
        build('ReKDLoss', topk_source='both')


def test_dense_rows_use_their_own_top_k():
    g = torch.Generator().manual_seed(4)
    s = torch.randn(2, 6, 2, 3, generator=g, dtype=torch.float64)
    t = torch.randn(2, 6, 2, 3, generator=g, dtype=torch.float64)
    got = build('ReKDLoss', k=2, gamma=1.0, reduction='none')(s, t)
    want = per_row(ref_rekd, s.movedim(1, -1).reshape(-1, 6), t.movedim(1, -1).reshape(-1, 6), 2,
                   1.0, 1.0, 1.0, 4.0)
    torch.testing.assert_close(got.reshape(-1), torch.tensor(want, dtype=torch.float64))
