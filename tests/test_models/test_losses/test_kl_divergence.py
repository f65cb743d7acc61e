"""The restricted-softmax KL core of mmkd.models.losses.kl_divergence."""
import pytest
import torch

from mmkd.models.losses.kl_divergence import binary_kl, log_binary, subset_kl, subset_logsumexp


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
