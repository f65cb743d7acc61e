"""Masks and reductions of mmkd.models.losses.reduction."""
import pytest
import torch

from mmkd.models.losses.reduction import graph_zero, reduce_rows, valid_rows


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

