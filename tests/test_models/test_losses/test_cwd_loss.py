"""ChannelWiseDivergence (Shu et al., ICCV 2021): a softmax over positions per channel."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmkd.models.losses import ChannelWiseDivergence, cwd_channels
from mmkd.registry import MODELS


def ref_cwd(s, t, tau=1.0):
    """Pure-Python CWD of nested lists ``[N][C][P]``: mean over N*C of tau^2 KL."""
    total, maps = 0.0, 0
    for s_img, t_img in zip(s, t):
        for s_map, t_map in zip(s_img, t_img):
            zs = [v / tau for v in s_map]
            zt = [v / tau for v in t_map]
            lse_s = math.log(sum(math.exp(v) for v in zs))
            lse_t = math.log(sum(math.exp(v) for v in zt))
            total += tau * tau * sum(
                math.exp(b - lse_t) * ((b - lse_t) - (a - lse_s)) for a, b in zip(zs, zt))
            maps += 1
    return total / maps


def mmrazor_cwd(preds_S, preds_T, tau, loss_weight):
    """The expression of the official code / MMRazor (no ignore handling)."""
    N, C, H, W = preds_S.shape
    p_t = F.softmax(preds_T.reshape(-1, W * H) / tau, dim=1)
    loss = torch.sum(p_t * F.log_softmax(preds_T.reshape(-1, W * H) / tau, dim=1) -
                     p_t * F.log_softmax(preds_S.reshape(-1, W * H) / tau, dim=1)) * tau**2
    return loss_weight * loss / (C * N)


def make(shape=(2, 3, 4, 5), dtype=torch.float64, scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(shape, generator=g, dtype=dtype) * scale).requires_grad_()
    t = torch.randn(shape, generator=g, dtype=dtype) * scale
    return s, t


def test_hand_computed_two_positions():
    # One channel, two positions: p_s = (1/2, 1/2), p_t = (1/4, 3/4).
    s = torch.zeros(1, 1, 1, 2)
    t = torch.tensor([[[[0.0, math.log(3.0)]]]])
    want = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)  # 0.130812...
    assert ChannelWiseDivergence()(s, t).item() == pytest.approx(want, rel=1e-6)
    # tau = 2: p_t = (1, sqrt 3) / (1 + sqrt 3), times tau^2 = 4; loss_weight 3.
    q = 1 / (1 + math.sqrt(3))
    want2 = 4 * (q * math.log(2 * q) + (1 - q) * math.log(2 * (1 - q)))
    got = ChannelWiseDivergence(tau=2.0, loss_weight=3.0)(s, t).item()
    assert got == pytest.approx(3 * want2, rel=1e-6)


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_matches_python_reference_and_official_expression(tau):
    s, t = make()
    got = ChannelWiseDivergence(tau=tau)(s, t)
    want = ref_cwd(s.flatten(2).tolist(), t.flatten(2).tolist(), tau)
    assert got.item() == pytest.approx(want, rel=1e-10)
    torch.testing.assert_close(got, mmrazor_cwd(s, t, tau, 1.0))
    # The sum is over N * C channel maps; 'sum' drops the average.
    assert ChannelWiseDivergence(tau=tau, reduction='sum')(s, t).item() == pytest.approx(
        want * 6, rel=1e-10)


def test_gradient_matches_official_and_reaches_only_the_student():
    s, t = make()
    t.requires_grad_()
    ChannelWiseDivergence(tau=2.0, loss_weight=5.0)(s, t).backward()
    assert t.grad is None
    got = s.grad.clone()
    s.grad = None
    mmrazor_cwd(s, t.detach(), 2.0, 5.0).backward()
    torch.testing.assert_close(got, s.grad)
    assert got.abs().sum() > 0


def test_zero_for_identical_inputs():
    s, _ = make(dtype=torch.float32)
    value = ChannelWiseDivergence(tau=4.0)(s, s.detach().clone())
    assert value.abs().item() < 1e-6
    value.backward()
    assert s.grad.abs().max() < 1e-6


def test_half_inputs_compute_in_float32():
    s, t = make(dtype=torch.float32, scale=3.0)
    want = ChannelWiseDivergence()(s, t)
    s_half = s.detach().half().requires_grad_()
    got = ChannelWiseDivergence()(s_half, t.half())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-3)
    got.backward()
    assert s_half.grad.dtype == torch.float16 and torch.isfinite(s_half.grad).all()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert ChannelWiseDivergence()(s, t).dtype == torch.float32


def test_large_logits_stay_finite():
    s, t = make(dtype=torch.float32, scale=1e4)
    value = ChannelWiseDivergence()(s, t)
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(s.grad).all()


def test_ignored_pixels_leave_the_spatial_distribution():
    s, t = make()
    target = torch.zeros(2, 4, 5, dtype=torch.long)
    target[:, :, 0] = 255  # the first column of every image is ignored
    got = ChannelWiseDivergence()(s, t, target)
    torch.testing.assert_close(got, ChannelWiseDivergence()(s[..., 1:], t[..., 1:]))
    # whatever the ignored pixels hold
    s2, t2 = s.detach().clone(), t.clone()
    s2[..., 0], t2[..., 0] = 1e4, -1e4
    torch.testing.assert_close(ChannelWiseDivergence()(s2, t2, target), got)


def test_an_image_without_valid_pixels_does_not_dilute_the_mean():
    s, t = make()
    target = torch.zeros(2, 4, 5, dtype=torch.long)
    target[0] = 255
    got = ChannelWiseDivergence()(s, t, target)
    torch.testing.assert_close(got, ChannelWiseDivergence()(s[1:], t[1:]))
    got.backward()
    assert s.grad[0].abs().max() == 0 and s.grad[1].abs().sum() > 0
    # avg_factor replaces the number of channel maps that keep a pixel (3 here)
    torch.testing.assert_close(ChannelWiseDivergence()(s, t, target, avg_factor=6.0), got / 2)


def test_everything_ignored_gives_exact_zero_and_no_nan():
    s, t = make(dtype=torch.float32)
    target = torch.full((2, 4, 5), 255)
    value = ChannelWiseDivergence(loss_weight=5.0)(s, t, target)
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))
    weight = torch.zeros(2, 4, 5)
    s.grad = None
    value = ChannelWiseDivergence()(s, t, weight=weight)
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().max() == 0


def test_weights_multiply_the_per_pixel_terms():
    s, t = make()
    base = ChannelWiseDivergence()(s, t)
    ones = torch.ones(2, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(ChannelWiseDivergence()(s, t, weight=ones), base)
    torch.testing.assert_close(ChannelWiseDivergence()(s, t, weight=2 * ones), 2 * base)
    # a zero weight removes the pixel like ignore_index does
    zero_col = ones.clone()
    zero_col[..., 0] = 0
    target = torch.zeros(2, 4, 5, dtype=torch.long)
    target[..., 0] = 255
    torch.testing.assert_close(
        ChannelWiseDivergence()(s, t, weight=zero_col), ChannelWiseDivergence()(s, t, target))
    # per-pixel weights: sum_p w_p p_t (log p_t - log p_s), by hand
    w = torch.rand(2, 4, 5, dtype=torch.float64) + 0.5
    log_ps = F.log_softmax(s.flatten(2), dim=2)
    log_pt = F.log_softmax(t.flatten(2), dim=2)
    want = (log_pt.exp() * (log_pt - log_ps) * w.flatten(1)[:, None]).sum(2)
    torch.testing.assert_close(cwd_channels(s, t, 1.0, weight=w), want)


def test_refused_inputs_and_registry():
    s, t = make()
    with pytest.raises(ValueError, match="reduction='none'"):
        ChannelWiseDivergence()(s, t, reduction_override='none')
    with pytest.raises(ValueError, match="reduction='none'"):
        ChannelWiseDivergence(reduction='none')
    with pytest.raises(ValueError, match='dense maps'):
        ChannelWiseDivergence()(s[:, :, 0, 0], t[:, :, 0, 0])
    with pytest.raises(ValueError, match='tau must be positive'):
        ChannelWiseDivergence(tau=0.0)
    loss = MODELS.build(dict(type='ChannelWiseDivergence', _scope_='mmkd'))
    assert isinstance(loss, ChannelWiseDivergence)
    assert (loss.tau, loss.loss_weight, loss.ignore_index) == (1.0, 1.0, 255)
