"""Property-based checks (hypothesis) of the KL-type losses."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from loss_refs import build

from mmkd.models.losses import sdd_loss

KL_LOSSES = {
    'KDLoss': {},
    'KDLoss-sigmoid': dict(use_sigmoid=True),
    'DKDLoss': {},
    'ReKDLoss': dict(k=2, gamma=1.0),
    'RLDLoss': dict(alpha_temperature=1.0),
    'DRGLoss': {},
}

cases = dict(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 5),
    c=st.integers(2, 7),
    scale=st.floats(0.01, 80.0),
    temperature=st.sampled_from([0.5, 1.0, 4.0]),
    name=st.sampled_from(sorted(KL_LOSSES)),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)


@settings(max_examples=25, deadline=None)
@given(**cases)
def test_kl_type_losses_are_non_negative_and_finite(seed, n, c, scale, temperature, name, dtype):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, c, generator=g) * scale).to(dtype).requires_grad_()
    t = (torch.randn(n, c, generator=g) * scale).to(dtype)
    y = torch.randint(0, c, (n, ), generator=g)
    kwargs = dict(KL_LOSSES[name], temperature=temperature)
    value = build(name.split('-')[0], reduction='none', **kwargs)(s, t, y)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert torch.isfinite(value).all()
    # rounding may leave a tiny negative value, relative to the size of the terms
    assert (value >= -tol * (1 + (scale / temperature)**2)).all()
    value.sum().backward()
    assert torch.isfinite(s.grad).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.01, 50.0), base=st.sampled_from(['kd', 'dkd']))
def test_sdd_is_non_negative(seed, scale, base):
    g = torch.Generator().manual_seed(seed)
    local_s = torch.randn(3, 4, 5, generator=g, dtype=torch.float64) * scale
    local_t = torch.randn(3, 4, 5, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, 4, (3, ), generator=g)
    assert (sdd_loss(local_s, local_t, y, base=base) >= -1e-10 * (1 + scale**2)).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.01, 50.0))
def test_dsr_is_non_negative(seed, scale):
    g = torch.Generator().manual_seed(seed)
    loss = build('DSRLoss', reduction='none')
    loss(torch.randn(4, 6, generator=g, dtype=torch.float64) * scale)
    assert (loss(torch.randn(4, 6, generator=g, dtype=torch.float64) * scale) >= -1e-10 *
            (1 + scale**2)).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.01, 50.0), tau=st.sampled_from([1.0, 4.0]))
def test_dist_is_within_its_range(seed, scale, tau):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(5, 6, generator=g, dtype=torch.float64) * scale
    t = torch.randn(5, 6, generator=g, dtype=torch.float64) * scale
    # each relation term 1 - mean(rho) lies in [0, 2]
    value = build('DISTLoss', tau=tau)(s, t).item() / tau**2
    assert -1e-12 <= value <= 4 + 1e-12
