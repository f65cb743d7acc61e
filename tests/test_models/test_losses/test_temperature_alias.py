"""``temperature`` and ``tau`` are accepted by every temperature-using loss.

The documented name stays the stored attribute; the other is an alias keyword.
"""
import math

import pytest
import torch
import torch.nn as nn
from loss_refs import build

C = 7

#: loss -> (documented name, alias, documented default)
ALIASED = {
    'KDLoss': ('temperature', 'tau', 4.0),
    'DKDLoss': ('temperature', 'tau', 4.0),
    'ReKDLoss': ('temperature', 'tau', 4.0),
    'RLDLoss': ('temperature', 'tau', 4.0),
    'SDDLoss': ('temperature', 'tau', 4.0),
    'DRGLoss': ('temperature', 'tau', 4.0),
    'DSRLoss': ('temperature', 'tau', 4.0),
    'DISTLoss': ('tau', 'temperature', 1.0),
    'ChannelWiseDivergence': ('tau', 'temperature', 1.0),
}


def value(name, loss):
    """The loss on fixed random inputs of the kind it takes."""
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * 3

    if name == 'SDDLoss':
        torch.manual_seed(0)
        cls_s, cls_t = nn.Linear(8, C).double(), nn.Linear(8, C).double()
        return loss(randn(4, 8, 4, 4), randn(4, 8, 4, 4), torch.arange(4) % C, cls_s, cls_t)
    if name == 'DSRLoss':
        loss(randn(4, C))
        return loss(randn(4, C))
    if name == 'ChannelWiseDivergence':
        return loss(randn(2, C, 3, 5), randn(2, C, 3, 5))
    return loss(randn(4, C), randn(4, C), torch.arange(4) % C)


@pytest.mark.parametrize('name', sorted(ALIASED))
def test_both_names_give_the_same_loss(name):
    main, alias, default = ALIASED[name]
    v = 2.5
    by_main, by_alias = build(name, **{main: v}), build(name, **{alias: v})
    assert getattr(by_main, main) == getattr(by_alias, main) == v
    assert type(getattr(by_alias, main)) is float
    assert not hasattr(by_alias, alias)  # one attribute, under the documented name
    got_main, got_alias = value(name, by_main), value(name, by_alias)
    assert torch.equal(got_main, got_alias)
    # the alias is not ignored: the default temperature gives another value
    assert not torch.equal(got_alias, value(name, build(name)))
    assert getattr(build(name), main) == default
    # both names with the same value are accepted
    assert getattr(build(name, **{main: v, alias: v}), main) == v


@pytest.mark.parametrize('name', sorted(ALIASED))
def test_both_names_with_different_values_are_refused(name):
    main, alias, default = ALIASED[name]
    with pytest.raises(ValueError, match=rf'{main}=2\.0 and its alias {alias}=3\.0'):
        build(name, **{main: 2.0, alias: 3.0})
    # the documented default given explicitly counts as given
    with pytest.raises(ValueError, match=f'{main}.*{alias}'):
        build(name, **{main: default, alias: 3.0})


@pytest.mark.parametrize('name', sorted(ALIASED))
@pytest.mark.parametrize('bad', [0.0, -1.0, math.inf, math.nan])
def test_the_alias_is_validated(name, bad):
    main, alias, _ = ALIASED[name]
    with pytest.raises(ValueError, match=f'{alias} must be positive and finite'):
        build(name, **{alias: bad})
    with pytest.raises(ValueError, match=f'{main} must be positive and finite'):
        build(name, **{main: bad})
