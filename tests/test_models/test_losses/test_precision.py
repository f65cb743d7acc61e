"""Precision and preparation helpers of mmkd.models.losses.precision."""
import math

import torch

from mmkd.models.losses.precision import standardize_logits


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

