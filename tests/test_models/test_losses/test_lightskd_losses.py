"""DRGLoss and DSRLoss of LightSKD."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from loss_refs import build, per_row, ref_kd


def test_drg_is_kd_from_the_detached_auxiliary_logits():
    g = torch.Generator().manual_seed(0)
    final = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    aux = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    value = build('DRGLoss')(final, aux)
    want = 0.2 * sum(per_row(ref_kd, final.detach(), aux.detach(), 4.0)) / 5
    assert value.item() == pytest.approx(want, rel=1e-10)
    value.backward()
    assert aux.grad is None and final.grad is not None


def sorted_kd(cur, prev, T=4.0):
    return ref_kd(sorted(cur), sorted(prev), T)


def test_dsr_first_call_is_zero_then_uses_the_previous_batch():
    g = torch.Generator().manual_seed(1)
    loss = build('DSRLoss')
    b1 = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    first = loss(b1)
    assert first.item() == 0.0 and first.requires_grad
    first.backward()
    assert (b1.grad == 0).all()
    b2 = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    second = loss(b2)
    want = sum(sorted_kd(c, p) for c, p in zip(b2.tolist(), b1.tolist())) / 4
    assert second.item() == pytest.approx(want, rel=1e-10)
    second.backward()
    assert b2.grad.abs().sum() > 0
    # the stored batch is detached and sorted, and is not part of the state dict
    assert not loss.prev_sorted.requires_grad
    torch.testing.assert_close(loss.prev_sorted, b2.detach().sort(dim=1).values)
    assert len(loss.state_dict()) == 0 and len(list(loss.buffers())) == 0
    loss.reset()
    assert loss(b1).item() == 0.0


@pytest.mark.parametrize('prev_n, cur_n', [(5, 3), (3, 5)])
def test_dsr_pairs_the_first_rows_when_batch_sizes_differ(prev_n, cur_n):
    g = torch.Generator().manual_seed(2)
    prev = torch.randn(prev_n, 6, generator=g, dtype=torch.float64)
    cur = torch.randn(cur_n, 6, generator=g, dtype=torch.float64, requires_grad=True)
    loss = build('DSRLoss')
    loss(prev)
    m = min(prev_n, cur_n)
    per = loss(cur, reduction_override='none')
    assert per.shape == (cur_n, )
    want = [sorted_kd(c, p) for c, p in zip(cur.tolist()[:m], prev.tolist()[:m])]
    torch.testing.assert_close(per[:m], torch.tensor(want, dtype=torch.float64))
    assert (per[m:] == 0).all()
    loss(prev)
    assert loss(cur).item() == pytest.approx(sum(want) / m, rel=1e-10)


def test_dsr_ignores_rows_and_refuses_other_shapes():
    g = torch.Generator().manual_seed(3)
    prev, cur = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    loss = build('DSRLoss')
    loss(prev)
    y = torch.tensor([0, 255, 2, 255])
    got = loss(cur, y)
    want = sum(sorted_kd(cur[i].tolist(), prev[i].tolist()) for i in (0, 2)) / 2
    assert got.item() == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match='only the batch size may differ'):
        loss(torch.randn(4, 7))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 5), c=st.integers(1, 8),
       scale=st.floats(0.1, 30.0))
def test_dsr_is_invariant_to_permuting_each_rows_classes(seed, n, c, scale):
    g = torch.Generator().manual_seed(seed)
    prev = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    cur = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    shuffled = torch.stack([row[torch.randperm(c, generator=g)] for row in cur])
    prev_shuffled = torch.stack([row[torch.randperm(c, generator=g)] for row in prev])
    a, b = build('DSRLoss'), build('DSRLoss')
    a(prev)
    b(prev_shuffled)
    torch.testing.assert_close(b(shuffled), a(cur), rtol=1e-12, atol=1e-12)
