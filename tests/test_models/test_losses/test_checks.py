"""Argument checks of mmkd.models.losses.checks."""
import pytest
import torch

from mmkd.models.losses.checks import check_logits, check_positive, check_reduction, row_shape


def test_check_logits():
    check_logits(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match='same shape'):
        check_logits(torch.zeros(2, 3), torch.zeros(2, 4), 'KDLoss')
    with pytest.raises(ValueError, match=r'\(N, C\)'):
        check_logits(torch.zeros(3), torch.zeros(3))


def test_row_shape():
    assert row_shape(torch.zeros(2, 3)) == (2, )
    assert row_shape(torch.zeros(2, 3, 4, 5)) == (2, 4, 5)


def test_check_positive():
    assert check_positive('temperature', 2.0) == 2.0
    for bad in (0.0, -1.0, float('nan')):
        with pytest.raises(ValueError, match='temperature must be positive'):
            check_positive('temperature', bad)


def test_check_reduction():
    assert check_reduction('none') == 'none'
    with pytest.raises(ValueError, match="got 'none'"):
        check_reduction('none', ('mean', 'sum'))
    with pytest.raises(ValueError, match='reduction must be one of'):
        check_reduction('avg')
