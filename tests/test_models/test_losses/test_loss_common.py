"""Behaviour every loss shares, checked for each registered loss."""
import math

import pytest
import torch
from loss_refs import (
    ROW_LOSSES,
    TARGET_LOSSES,
    TS_LOSSES,
    build,
    per_row,
    ref_dist,
    ref_dkd,
    ref_kd,
    ref_rekd,
    ref_rld,
    rows,
)

C = 7

#: Per-row references at the default settings of each row loss.
ROW_REFS = {
    'KDLoss': lambda s, t, y: ref_kd(s, t, 4.0),
    'DKDLoss': lambda s, t, y: ref_dkd(s, t, y, 1.0, 8.0, 4.0),
    'ReKDLoss': lambda s, t, y: ref_rekd(s, t, 5, 1.0, 1.0, 0.0, 4.0),
    'RLDLoss': lambda s, t, y: ref_rld(s, t, y, 1.0, 8.0, 4.0),
    'DRGLoss': lambda s, t, y: 0.2 * ref_kd(s, t, 4.0),  # loss_weight 0.2
}


def make(shape=(6, C), scale=3.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(shape, generator=g, dtype=dtype) * scale).requires_grad_()
    t = torch.randn(shape, generator=g, dtype=dtype) * scale
    row_shape = (shape[0], ) + tuple(shape[2:])
    y = torch.randint(0, shape[1], row_shape, generator=g)
    return s, t, y


def call(loss, s, t, y=None, **kwargs):
    return loss(s, t, y, **kwargs)


@pytest.mark.parametrize('name', ROW_LOSSES)
def test_matches_reference_per_row(name):
    s, t, y = make()
    loss = build(name)
    got = call(loss, s, t, y, reduction_override='none')
    want = [ROW_REFS[name](a, b, int(c)) for a, b, c in zip(s.tolist(), t.tolist(), y.tolist())]
    assert got.shape == (6, )
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=1e-12)
    mean = torch.tensor(sum(want) / 6, dtype=torch.float64)
    torch.testing.assert_close(call(loss, s, t, y), mean)


def test_dist_matches_reference():
    s, t, y = make()
    got = build('DISTLoss')(s, t)
    want = ref_dist(s.tolist(), t.tolist())
    assert got.item() == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize('name', TS_LOSSES)
def test_dense_equals_rows(name):
    s, t, y = make((2, C, 3, 4), seed=1)
    y[0, 1, 2] = 255
    y[1, 0, :2] = 255
    w = torch.rand(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    loss = build(name)
    dense = call(loss, s, t, y, weight=w)
    flat = call(loss, rows(s), rows(t), y.reshape(-1), weight=w.reshape(-1))
    torch.testing.assert_close(dense, flat, rtol=1e-10, atol=1e-12)
    g_dense, = torch.autograd.grad(dense, s)
    s2 = s.detach().clone().requires_grad_()
    flat2 = call(loss, rows(s2), rows(t), y.reshape(-1), weight=w.reshape(-1))
    g_rows, = torch.autograd.grad(flat2, s2)
    torch.testing.assert_close(g_dense, g_rows, rtol=1e-9, atol=1e-12)
    if name in ROW_LOSSES:
        none = call(loss, s, t, y, weight=w, reduction_override='none')
        assert none.shape == (2, 3, 4)
        torch.testing.assert_close(
            rows(none.unsqueeze(1)).squeeze(1),
            call(loss, rows(s), rows(t), y.reshape(-1), weight=w.reshape(-1),
                 reduction_override='none'))


@pytest.mark.parametrize('name', TS_LOSSES)
def test_identical_inputs_give_zero(name):
    s, t, _ = make(dtype=torch.float32)
    y = t.argmax(dim=1)  # RLD's SCD is 0 only when the label is the teacher's top-1
    value = call(build(name), t.clone().requires_grad_(), t, y)
    if name == 'DISTLoss':  # the eps of the correlation leaves a tiny floor
        assert 0 <= value.item() < 1e-5
    else:
        assert abs(value.item()) < 1e-6


@pytest.mark.parametrize('name', TS_LOSSES)
def test_gradient_reaches_student_never_teacher(name):
    s, t, y = make()
    t.requires_grad_()
    value = call(build(name), s, t, y)
    value.backward()
    assert t.grad is None
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


@pytest.mark.parametrize('name', TS_LOSSES)
def test_ignored_rows_and_zero_weights_are_excluded(name):
    s, t, y = make((8, C), seed=3)
    y[[1, 4]] = 255
    w = torch.ones(8, dtype=torch.float64)
    w[6] = 0
    loss = build(name)
    got = call(loss, s, t, y, weight=w)
    keep = torch.tensor([0, 2, 3, 5, 7])
    want = call(loss, s[keep], t[keep], y[keep])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # the garbage in excluded rows must not matter
    s2, t2 = s.detach().clone(), t.clone()
    s2[[1, 4, 6]] = 1e30
    t2[[1, 4, 6]] = -1e30
    torch.testing.assert_close(call(loss, s2, t2, y, weight=w), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('name', ROW_LOSSES)
def test_weights_multiply_rows(name):
    s, t, y = make()
    w = torch.tensor([0.5, 2.0, 1.0, 0.0, 3.0, 1.5], dtype=torch.float64)
    loss = build(name)
    per = call(loss, s, t, y, reduction_override='none')
    got = call(loss, s, t, y, weight=w)
    # mean over the valid (non-zero-weight) rows: 5 rows
    torch.testing.assert_close(got, (per * w).sum() / 5)


@pytest.mark.parametrize('name', TS_LOSSES)
@pytest.mark.parametrize('how', ['ignore', 'weight'])
def test_no_valid_row_is_exact_zero_connected_to_graph(name, how):
    s, t, y = make((4, C, 2, 2), dtype=torch.float32)
    if how == 'ignore':
        y.fill_(255)
        w = None
    else:
        w = torch.zeros(4, 2, 2)
    value = call(build(name), s, t, y, weight=w)
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert s.grad is not None and (s.grad == 0).all()


@pytest.mark.parametrize('name', ROW_LOSSES)
def test_reductions_and_avg_factor(name):
    s, t, y = make()
    y[2] = 255
    loss = build(name)
    none = call(loss, s, t, y, reduction_override='none')
    assert none[2].item() == 0.0
    total = call(loss, s, t, y, reduction_override='sum')
    torch.testing.assert_close(total, none.sum())
    torch.testing.assert_close(call(loss, s, t, y), total / 5)
    torch.testing.assert_close(call(loss, s, t, y, avg_factor=2.5), total / 2.5)
    torch.testing.assert_close(
        call(loss, s, t, y, avg_factor=torch.tensor(4.0, dtype=torch.float64)), total / 4)
    with pytest.raises(ValueError, match='avg_factor'):
        call(loss, s, t, y, avg_factor=2.0, reduction_override='sum')
    with pytest.raises(ValueError, match='reduction'):
        call(loss, s, t, y, reduction_override='max')
    assert torch.equal(build(name, reduction='sum')(s, t, y), total)


def test_dist_refuses_reduction_none():
    with pytest.raises(ValueError, match="reduction='none'"):
        build('DISTLoss', reduction='none')
    s, t, _ = make()
    with pytest.raises(ValueError, match="reduction='none'"):
        build('DISTLoss')(s, t, reduction_override='none')
    # 'sum' sums the inter term over rows and keeps the batch-level intra term
    inter_sum = build('DISTLoss', gamma=0.0, reduction='sum')(s, t)
    inter_mean = build('DISTLoss', gamma=0.0)(s, t)
    torch.testing.assert_close(inter_sum, inter_mean * 6)


@pytest.mark.parametrize('name', TS_LOSSES)
def test_loss_weight_scales(name):
    s, t, y = make()
    base = call(build(name, loss_weight=1.0), s, t, y)
    torch.testing.assert_close(call(build(name, loss_weight=2.5), s, t, y), 2.5 * base)


@pytest.mark.parametrize('name', TARGET_LOSSES)
def test_missing_target_is_a_clear_error(name):
    s, t, _ = make()
    with pytest.raises(ValueError, match='target'):
        build(name)(s, t)


@pytest.mark.parametrize('name', TS_LOSSES)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_low_precision_inputs_are_computed_in_fp32(name, dtype):
    s, t, y = make(dtype=torch.float32, scale=2.0)
    s_low, t_low = s.detach().to(dtype).requires_grad_(), t.to(dtype)
    value = call(build(name), s_low, t_low, y)
    assert value.dtype == torch.float32
    want = call(build(name), s_low.detach().float(), t_low.float(), y)
    torch.testing.assert_close(value, want, rtol=1e-6, atol=1e-7)
    value.backward()
    assert s_low.grad.dtype == dtype and torch.isfinite(s_low.grad.float()).all()


@pytest.mark.parametrize('name', TS_LOSSES)
def test_autocast_does_not_lower_precision(name):
    s, t, y = make(dtype=torch.float32, scale=2.0)
    want = call(build(name), s, t, y)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = call(build(name), s, t, y)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def _textbook_dkd_fp32(s, t, g, T=1.0):
    """The official DKD formula (log of softmax, mask with -1000)."""
    gt = torch.zeros_like(s).scatter_(1, g.unsqueeze(1), 1).bool()
    p_s, p_t = (s / T).softmax(1), (t / T).softmax(1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], 1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], 1)
    tckd = torch.nn.functional.kl_div(torch.log(b_s), b_t, reduction='batchmean')
    nckd = torch.nn.functional.kl_div(
        torch.log_softmax(s / T - 1000 * gt, 1), torch.softmax(t / T - 1000 * gt, 1),
        reduction='batchmean')
    return tckd + 8 * nckd


@pytest.mark.parametrize('name', TS_LOSSES)
def test_huge_logits_stay_finite_in_fp32(name):
    g = torch.Generator().manual_seed(4)
    s = (torch.randn(16, C, generator=g) * 60).requires_grad_()
    t = torch.randn(16, C, generator=g) * 60
    y = torch.randint(0, C, (16, ), generator=g)
    kwargs = {} if name == 'DISTLoss' else dict(temperature=1.0)
    value = call(build(name, **kwargs), s, t, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(s.grad).all()
    if name in ROW_LOSSES:  # and still right, against double precision
        ref = {
            'KDLoss': lambda a, b, c: ref_kd(a, b, 1.0),
            'DRGLoss': lambda a, b, c: 0.2 * ref_kd(a, b, 1.0),
            'DKDLoss': lambda a, b, c: ref_dkd(a, b, c, 1.0, 8.0, 1.0),
            'ReKDLoss': lambda a, b, c: ref_rekd(a, b, 5, 1.0, 1.0, 0.0, 1.0),
            'RLDLoss': lambda a, b, c: ref_rld(a, b, c, 1.0, 8.0, 1.0),
        }[name]
        want = sum(per_row(ref, s.detach().double(), t.double(), target=y)) / 16
        assert value.item() == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_official_dkd_formula_is_not_finite_on_huge_logits():
    """Why the test above matters: the textbook formula breaks where ours does not."""
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(16, C, generator=g) * 60, torch.randn(16, C, generator=g) * 60
    y = torch.randint(0, C, (16, ), generator=g)
    assert not torch.isfinite(_textbook_dkd_fp32(s, t, y))
    assert torch.isfinite(build('DKDLoss', temperature=1.0)(s, t, y))


@pytest.mark.parametrize('name', TS_LOSSES)
def test_constant_logits(name):
    s = torch.full((4, C), 3.0, dtype=torch.float64, requires_grad=True)
    t = torch.full((4, C), -2.0, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    value = call(build(name), s, t, y)
    value.backward()
    assert torch.isfinite(s.grad).all()
    if name == 'DISTLoss':  # every correlation has a zero-variance side: rho = 0
        assert value.item() == pytest.approx(2.0, abs=1e-12)
    elif name == 'RLDLoss':
        # uniform probabilities: SCD = 0; every class ties with the label: MCD = 0
        assert value.item() == pytest.approx(0.0, abs=1e-12)
    else:  # uniform teacher and student
        assert value.item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize('name', ROW_LOSSES)
def test_batch_of_one_row(name):
    s, t, y = make((1, C), seed=5)
    value = call(build(name), s, t, y)
    want = ROW_REFS[name](s[0].tolist(), t[0].tolist(), int(y[0]))
    assert value.item() == pytest.approx(want, rel=1e-9)


def test_dist_batch_of_one_row_has_intra_one_without_gradient():
    s, t, _ = make((1, C), seed=5)
    intra_only = build('DISTLoss', beta=0.0)(s, t)
    assert intra_only.item() == 1.0  # exactly
    grad, = torch.autograd.grad(intra_only, s)
    assert (grad == 0).all()
    # the full loss is inter + 1
    inter = build('DISTLoss', gamma=0.0)(s, t)
    assert build('DISTLoss')(s, t).item() == pytest.approx(inter.item() + 1, abs=1e-15)
    # the same through a mask: one valid row among ignored ones
    s3, t3, _ = make((3, C), seed=6)
    y3 = torch.tensor([255, 4, 255])
    intra_only = build('DISTLoss', beta=0.0)(s3, t3, y3)
    assert intra_only.item() == 1.0
    grad, = torch.autograd.grad(intra_only, s3)
    assert (grad == 0).all()


def test_registry_names_and_defaults():
    assert build('KDLoss').temperature == 4.0
    dkd = build('DKDLoss')
    assert (dkd.alpha, dkd.beta, dkd.temperature) == (1.0, 8.0, 4.0)
    rekd = build('ReKDLoss')
    assert (rekd.k, rekd.alpha, rekd.beta, rekd.gamma, rekd.temperature, rekd.topk_source) == (
        5, 1.0, 1.0, 0.0, 4.0, 'teacher')
    rld = build('RLDLoss')
    assert (rld.alpha, rld.beta, rld.temperature, rld.alpha_temperature) == (1.0, 8.0, 4.0, None)
    dist = build('DISTLoss')
    assert (dist.beta, dist.gamma, dist.tau, dist.use_sigmoid, dist.gather_intra) == (
        1.0, 1.0, 1.0, False, False)
    sdd = build('SDDLoss')
    assert (sdd.base, sdd.scales, sdd.pool_base, sdd.complementary_weight) == (
        'dkd', (1, 2, 4), 4, 2.0)
    drg = build('DRGLoss')
    assert (drg.temperature, drg.loss_weight) == (4.0, 0.2)
    dsr = build('DSRLoss')
    assert (dsr.temperature, dsr.loss_weight) == (4.0, 1.0)
    for name in ['KDLoss', 'DKDLoss', 'ReKDLoss', 'RLDLoss', 'SDDLoss']:
        assert build(name).logit_stand is False
        assert build(name).ignore_index == 255
    assert math.isclose(build('DISTLoss').eps, 1e-8)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match='temperature'):
        build('KDLoss', temperature=0)
    with pytest.raises(ValueError, match='shape'):
        build('KDLoss')(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match='target'):
        build('KDLoss')(torch.randn(2, 3), torch.randn(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match='weight'):
        build('KDLoss')(torch.randn(2, 3), torch.randn(2, 3), weight=torch.ones(2, 3))


@pytest.mark.parametrize('name', TS_LOSSES)
@pytest.mark.parametrize('dense', [False, True])
def test_gradient_matches_finite_differences(name, dense):
    shape = (2, 6, 2, 2) if dense else (5, 6)
    s, t, y = make(shape, seed=8)
    y.view(-1)[1] = 255
    w = torch.rand(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) + 0.5
    kwargs = dict(k=3, gamma=0.7) if name == 'ReKDLoss' else {}
    if name == 'KDLoss':
        kwargs = dict(logit_stand=True)
    loss = build(name, **kwargs)
    assert torch.autograd.gradcheck(lambda x: loss(x, t, y, weight=w), (s, ))


def test_sigmoid_gradients_match_finite_differences():
    s, t, y = make(seed=10)
    for name in ('KDLoss', 'DISTLoss'):
        loss = build(name, use_sigmoid=True)
        assert torch.autograd.gradcheck(lambda x: loss(x, t, y), (s, ))  # noqa: B023


@pytest.mark.parametrize('name', TS_LOSSES)
def test_empty_batch_gives_zero(name):
    for shape in [(0, C), (2, C, 0, 3)]:
        s, t, y = make(shape)
        value = call(build(name), s, t, y)
        value.backward()
        assert value.item() == 0.0 and s.grad.shape == s.shape
