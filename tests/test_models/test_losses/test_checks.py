"""Argument checks of mmkd.models.losses.checks."""
import pytest
import torch

from mmkd.models.losses.checks import (
    Default,
    check_logits,
    check_positive,
    check_reduction,
    resolve_alias,
    row_shape,
)


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
    for bad in (0.0, -1.0, float('nan'), float('inf'), -float('inf')):
        with pytest.raises(ValueError, match='temperature must be positive and finite'):
            check_positive('temperature', bad)


def test_resolve_alias():
    default = Default(4.0)
    assert default == 4.0 and repr(default) == '4.0'
    assert resolve_alias('temperature', default, 'tau', None) == 4.0
    assert type(resolve_alias('temperature', default, 'tau', None)) is float
    assert resolve_alias('temperature', default, 'tau', 2.0) == 2.0
    assert resolve_alias('temperature', 3.0, 'tau', None) == 3.0
    assert resolve_alias('temperature', 2.0, 'tau', 2.0) == 2.0
    for given in (4.0, 3.0):  # an explicit value equal to the default is still given
        with pytest.raises(ValueError, match=f'temperature={given} and its alias tau=2.0'):
            resolve_alias('temperature', given, 'tau', 2.0)
    with pytest.raises(ValueError, match='tau must be positive'):
        resolve_alias('temperature', default, 'tau', -2.0)
    with pytest.raises(ValueError, match='temperature must be positive'):
        resolve_alias('temperature', 0.0, 'tau', None)


def test_check_reduction():
    assert check_reduction('none') == 'none'
    with pytest.raises(ValueError, match="got 'none'"):
        check_reduction('none', ('mean', 'sum'))
    with pytest.raises(ValueError, match='reduction must be one of'):
        check_reduction('avg')
