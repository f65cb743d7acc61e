"""The shared helpers of mmkd.models.losses.utils."""
import math

import pytest
import torch

from mmkd.models.losses.utils import (
    binary_kl,
    graph_zero,
    log_binary,
    reduce_rows,
    standardize_logits,
    subset_kl,
    subset_logsumexp,
    valid_rows,
)


def test_standardize_logits_uses_the_unbiased_std():
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0], [4.0, 4.0, 4.0, 4.0]], dtype=torch.float64)
    z = standardize_logits(x)
    # row 0: mean 3, unbiased variance (4 + 1 + 0 + 9) / 3 = 14 / 3
    std = math.sqrt(14 / 3)
    want = [(v - 3) / (std + 1e-7) for v in (1, 2, 3, 6)]
    torch.testing.assert_close(z[0], torch.tensor(want, dtype=torch.float64))
    assert (z[1] == 0).all()
    dense = torch.randn(2, 5, 3, dtype=torch.float64)
    zd = standardize_logits(dense)
    torch.testing.assert_close(zd.mean(1), torch.zeros(2, 3, dtype=torch.float64))
    torch.testing.assert_close(zd.std(1), torch.ones(2, 3, dtype=torch.float64), atol=1e-6, rtol=0)


def test_valid_rows():
    y = torch.tensor([1, 255, 3, 0])
    w = torch.tensor([1.0, 1.0, 0.0, 2.0])
    valid, safe = valid_rows(y, w, 255, (4, ))
    assert valid.tolist() == [True, False, False, True]
    assert safe.tolist() == [1, 0, 0, 0]  # every excluded row gets a safe class index
    assert valid_rows(None, None, 255, (4, )) == (None, None)
    with pytest.raises(TypeError, match='integer'):
        valid_rows(y.float(), None, 255, (4, ))


def test_reduce_rows():
    loss = torch.tensor([1.0, float('nan'), 3.0, 4.0])
    valid = torch.tensor([True, False, True, True])
    assert reduce_rows(loss, valid, reduction='sum').item() == 8.0
    assert reduce_rows(loss, valid).item() == pytest.approx(8 / 3)
    assert reduce_rows(loss, valid, avg_factor=2).item() == 4.0
    w = torch.tensor([2.0, 1.0, 1.0, 0.5])
    assert reduce_rows(loss, valid, w).item() == pytest.approx((2 + 3 + 2) / 3)
    none = reduce_rows(loss, valid, reduction='none')
    assert none.tolist() == [1.0, 0.0, 3.0, 4.0]
    nothing = reduce_rows(loss, torch.zeros(4, dtype=torch.bool))
    assert nothing.item() == 0.0
    assert reduce_rows(torch.ones(0)).item() == 0.0


def test_graph_zero_survives_inf():
    x = torch.tensor([float('inf'), 1.0], requires_grad=True)
    z = graph_zero(x)
    z.backward()
    assert z.item() == 0.0 and (x.grad == 0).all()


def test_subset_kl_gradcheck_with_masks_and_empty_subsets():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 5, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 5, generator=g) > 0.5
    mask[0] = False  # empty subset
    mask[1] = True
    drop = torch.randint(0, 5, (4, 1), generator=g)

    def f(x):
        kl, lse_s, _ = subset_kl(x, t, 2.0, mask=mask, with_lse=True)
        kl2, lse2, _ = subset_kl(x, t, 3.0, mask=mask, complement=True, with_lse=True)
        kl3 = subset_kl(x, t, 1.0, drop=drop)
        safe = torch.where(mask.any(1), lse_s, 0)
        return kl + 0.3 * safe + kl2 + 0.2 * torch.where((~mask).any(1), lse2, 0) + kl3

    assert torch.autograd.gradcheck(f, (s, ))
    kl = subset_kl(s, t, 2.0, mask=mask)
    assert kl[0].item() == 0.0
    assert torch.autograd.gradcheck(lambda x: subset_logsumexp(x, 2.0, drop=drop), (s, ))


def test_log_binary_is_finite_for_huge_logits():
    s = torch.tensor([[300.0, -300.0, 0.0]])
    log_in = s[:, 0]
    log_out = subset_logsumexp(s, 1.0, drop=torch.tensor([[0]]))
    log_p, log_q = log_binary(log_in, log_out)
    assert log_p.item() == pytest.approx(0.0, abs=1e-6)
    assert log_q.item() == pytest.approx(-300.0, rel=1e-6)  # 1 - p underflows, its log does not
    assert torch.isfinite(binary_kl(log_p, log_q, log_q, log_p)).all()
