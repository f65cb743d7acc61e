"""DISTLoss: Pearson relations, edge cases and the global-batch intra term."""
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from loss_refs import build, ref_dist, rows

from mmkd.models.losses import dist_correlations


def make(shape=(6, 5), seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).requires_grad_()
    t = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    return s, t


def test_hand_computed_one_row():
    # Y_s = softmax([0, 0, ln 2]) = [1/4, 1/4, 1/2], Y_t = softmax([ln 2, 0, 0]) = [1/2, 1/4, 1/4]
    # centred: a = [-1/12, -1/12, 1/6], b = [1/6, -1/12, -1/12]
    # <a, b> = -1/48, ||a|| ||b|| = 1/24: rho = (-1/48) / (1/24 + 1e-8)
    s = torch.tensor([[0.0, 0.0, math.log(2)]], dtype=torch.float64)
    t = torch.tensor([[math.log(2), 0.0, 0.0]], dtype=torch.float64)
    rho = (-1 / 48) / (1 / 24 + 1e-8)
    inter, intra = 1 - rho, 1.0  # one row: every class column has zero variance
    got = build('DISTLoss', beta=2.0, gamma=3.0)(s, t)
    assert got.item() == pytest.approx(2 * inter + 3 * intra, rel=1e-12)


@pytest.mark.parametrize('tau', [1.0, 4.0])
@pytest.mark.parametrize('use_sigmoid', [False, True])
def test_matches_reference(tau, use_sigmoid):
    s, t = make()
    got = build('DISTLoss', beta=1.5, gamma=0.5, tau=tau, use_sigmoid=use_sigmoid)(s, t)
    want = ref_dist(s.tolist(), t.tolist(), 1.5, 0.5, tau, use_sigmoid)
    assert got.item() == pytest.approx(want, rel=1e-9)


def test_dense_intra_is_over_all_pixels_of_all_images():
    s, t = make((2, 4, 3, 5), seed=1)
    y = torch.randint(0, 4, (2, 3, 5), generator=torch.Generator().manual_seed(2))
    y[0, 0] = 255
    got = build('DISTLoss')(s, t, y)
    keep = y.reshape(-1) != 255
    want = ref_dist(rows(s)[keep].tolist(), rows(t)[keep].tolist())
    assert got.item() == pytest.approx(want, rel=1e-9)


def test_identical_inputs_leave_the_eps_floor():
    s, t = make(seed=3)
    got = build('DISTLoss')(t, t).item()
    assert 0 < got < 1e-5
    assert got == pytest.approx(ref_dist(t.tolist(), t.tolist()), rel=1e-6)


def test_zero_variance_gives_rho_zero_not_nan():
    s = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 4, dtype=torch.float64)
    rho_rows, rho_cls, count = dist_correlations(s, t)
    assert (rho_rows == 0).all() and (rho_cls == 0).all() and count.item() == 3
    build('DISTLoss')(s, t).backward()
    assert torch.isfinite(s.grad).all()


def test_nonzero_weights_scale_the_inter_term_only():
    s, t = make(seed=4)
    w = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0], dtype=torch.float64)
    rho_rows, rho_cls, _ = dist_correlations(s, t)
    want = ((1 - rho_rows) * w).mean() + (1 - rho_cls.mean())
    torch.testing.assert_close(build('DISTLoss')(s, t, weight=w), want)


def test_gather_intra_without_process_group_is_local():
    s, t = make(seed=5)
    torch.testing.assert_close(build('DISTLoss', gather_intra=True)(s, t), build('DISTLoss')(s, t))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 6),
    c=st.integers(2, 6),
    scale=st.floats(0.1, 20.0),
    use_sigmoid=st.booleans())
def test_joint_class_permutation_invariance(seed, n, c, scale, use_sigmoid):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    t = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    perm = torch.randperm(c, generator=g)
    loss = build('DISTLoss', use_sigmoid=use_sigmoid)
    torch.testing.assert_close(loss(s[:, perm], t[:, perm]), loss(s, t), rtol=1e-9, atol=1e-12)
    # and under a joint permutation of the rows
    rperm = torch.randperm(n, generator=g)
    torch.testing.assert_close(loss(s[rperm], t[rperm]), loss(s, t), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------
# gather_intra with two gloo processes
# ---------------------------------------------------------------------------
SPLIT = (5, 3)  # unequal local batches


def _global_batch():
    g = torch.Generator().manual_seed(7)
    n = sum(SPLIT)
    s = torch.randn(n, 6, 2, generator=g, dtype=torch.float64) * 2
    t = torch.randn(n, 6, 2, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 6, (n, 2), generator=g)
    y[1, 0] = y[6, 1] = 255  # ignored pixels on both ranks
    return s, t, y


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)  # forked child: no OpenMP pool of the parent
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=world)
    try:
        s, t, y = _global_batch()
        lo = sum(SPLIT[:rank])
        local = slice(lo, lo + SPLIT[rank])
        results = {}
        for beta in (0.0, 1.0):
            s_r = s[local].clone().requires_grad_()
            loss = build('DISTLoss', beta=beta, gather_intra=True)(s_r, t[local], y[local])
            loss.backward()
            results[beta] = (loss.detach(), s_r.grad)
        torch.save(results, os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


def test_gather_intra_with_two_processes_equals_the_whole_batch(tmp_path):
    # fork keeps the test fast (no re-import of torch in the children)
    mp.start_processes(_worker, args=(2, str(tmp_path / 'init'), str(tmp_path)), nprocs=2,
                       join=True, start_method='fork')
    s, t, y = _global_batch()
    for rank in range(2):
        res = torch.load(tmp_path / f'rank{rank}.pt')
        lo = sum(SPLIT[:rank])
        local = slice(lo, lo + SPLIT[rank])
        # intra term alone: the same value as on the whole batch; the local gradient is that
        # of the global loss summed over both ranks (as an all-gather whose backward sums),
        # i.e. world_size times the single-process gradient of these rows
        s1 = s.clone().requires_grad_()
        whole = build('DISTLoss', beta=0.0)(s1, t, y)
        whole.backward()
        value, grad = res[0.0]
        torch.testing.assert_close(value, whole.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, 2 * s1.grad[local], rtol=1e-9, atol=1e-12)
    # full loss: the inter term stays a local mean; intra is global
    value0, _ = torch.load(tmp_path / 'rank0.pt')[1.0]
    inter0 = build('DISTLoss', gamma=0.0)(s[:SPLIT[0]], t[:SPLIT[0]], y[:SPLIT[0]])
    torch.testing.assert_close(value0, inter0.detach() + whole.detach(), rtol=1e-12, atol=1e-12)
