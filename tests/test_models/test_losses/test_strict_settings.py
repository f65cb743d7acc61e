"""Every wrong setting of a registered loss is refused when it is built, by name;
logit standardisation of constant rows is finite (values and gradients)."""
import inspect
import math

import pytest
import torch

import mmkd.models.losses  # noqa: F401  (fills the registry)
from mmkd.registry import MODELS


def registered():
    return sorted(name for name, cls in MODELS.module_dict.items()
                  if hasattr(cls, 'inputs') and hasattr(cls, 'requires_target')
                  and cls.__module__.startswith('mmkd.'))


def params(name):
    return inspect.signature(MODELS.module_dict[name]).parameters


@pytest.mark.parametrize('name', registered())
@pytest.mark.parametrize('value', [-1.0, math.inf, math.nan])
def test_loss_weight_must_be_finite_and_non_negative(name, value):
    with pytest.raises(ValueError, match='loss_weight must be a finite number >= 0'):
        MODELS.module_dict[name](loss_weight=value)
    assert MODELS.module_dict[name](loss_weight=0.0).loss_weight == 0.0


TERM_WEIGHTS = [(n, p) for n in registered() for p in ('alpha', 'beta', 'gamma',
                                                        'complementary_weight') if p in params(n)]


def test_the_term_weights_are_those_of_the_spec():
    assert sorted(TERM_WEIGHTS) == sorted([
        ('DISTLoss', 'beta'), ('DISTLoss', 'gamma'), ('DKDLoss', 'alpha'), ('DKDLoss', 'beta'),
        ('RLDLoss', 'alpha'), ('RLDLoss', 'beta'), ('ReKDLoss', 'alpha'), ('ReKDLoss', 'beta'),
        ('ReKDLoss', 'gamma'), ('SDDLoss', 'alpha'), ('SDDLoss', 'beta'),
        ('SDDLoss', 'complementary_weight')])


@pytest.mark.parametrize('name,param', TERM_WEIGHTS)
def test_term_weights_must_be_non_negative(name, param):
    """A negative weight of a divergence term would maximise the divergence."""
    with pytest.raises(ValueError, match=f'{param} must be a finite number >= 0, got -0.5'):
        MODELS.module_dict[name](**{param: -0.5})
    assert getattr(MODELS.module_dict[name](**{param: 0.0}), param) == 0.0


@pytest.mark.parametrize('name', [n for n in registered() if 'temperature' in params(n)
                                  or 'tau' in params(n)])
@pytest.mark.parametrize('value', [0.0, -2.0, math.inf, math.nan])
def test_temperatures_must_be_positive_and_finite(name, value):
    for key in ('temperature', 'tau'):
        with pytest.raises(ValueError, match='must be positive and finite'):
            MODELS.module_dict[name](**{key: value})


def test_rekd_k_is_checked_against_the_classes():
    loss = MODELS.module_dict['ReKDLoss'](k=5)
    loss.check_classes(5)
    with pytest.raises(ValueError, match='k=5 exceeds the 4 classes'):
        loss.check_classes(4)
    for k in (0, 2.5, True):
        with pytest.raises(ValueError, match='k must be a positive integer'):
            MODELS.module_dict['ReKDLoss'](k=k)


@pytest.mark.parametrize('name', [n for n in registered() if 'logit_stand' in params(n)
                                  and 'logits' in MODELS.module_dict[n].inputs])
def test_logit_stand_of_constant_rows_is_zeros_with_finite_gradients(name):
    """Zero-initialised heads or saturated pixels: std 0 must not give NaN gradients."""
    loss = MODELS.module_dict[name](logit_stand=True)
    target = torch.tensor([0, 1, 2, 3])
    for s0, t0 in ((torch.zeros(4, 6), torch.randn(4, 6)), (torch.full((4, 6), 3.0),
                                                            torch.full((4, 6), -2.0))):
        s = s0.clone().requires_grad_()
        value = loss(s, t0, target)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(s.grad).all(), name
        # constant rows become zeros: the value is the loss on zero student logits
        plain = MODELS.module_dict[name](logit_stand=False)
        t_std = (t0 - t0.mean(1, keepdim=True)) / (t0.std(1, keepdim=True) + 1e-7)
        torch.testing.assert_close(value, plain(torch.zeros(4, 6), t_std, target))
