"""DRGHead: the LightSKD auxiliary classifier."""
import pytest
import torch
import torch.nn as nn

from mmkd.models.heads import DRGHead
from mmkd.registry import MODELS


def count(module):
    return sum(p.numel() for p in module.parameters())


def formula(c, k):
    """Parameters written out per layer (BN: weight + bias; no conv bias)."""
    sep = lambda cin, cout: 9 * cin + cin * cin + 2 * cin + 9 * cin + cin * cout + 2 * cout  # noqa
    attention = sep(c, c) + 2 * c  # SepConv + BN
    convs = sep(c, 2 * c) + sep(2 * c, 4 * c)
    return attention + convs + 4 * c * k + k


@pytest.mark.parametrize('c, k, documented', [
    (128, 100, 342_116),  # ResNet-18 stage 2, CIFAR-100
    (128, 1000, 803_816),  # ResNet-18 stage 2, ImageNet
    (512, 100, 4_710_500),  # ResNet-50 stage 2, CIFAR-100
    (512, 1000, 6_554_600),  # ResNet-50 stage 2, ImageNet
])
def test_parameter_counts_match_the_docstring(c, k, documented):
    head = MODELS.build(dict(type='DRGHead', _scope_='mmkd', in_channels=c, num_classes=k))
    assert count(head) == formula(c, k) == documented
    assert f'{documented:,}' in DRGHead.__doc__


def test_architecture():
    head = DRGHead(16, 10)
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.bias is None for m in convs)
    assert len(convs) == 12  # three SepConvs of four convolutions
    depthwise = [m for m in convs if m.groups > 1]
    assert all(m.kernel_size == (3, 3) and m.groups == m.in_channels for m in depthwise)
    assert [m.stride for m in depthwise] == [(2, 2), (1, 1)] * 3
    pointwise_out = [m.out_channels for m in convs if m.kernel_size == (1, 1)]
    assert pointwise_out == [16, 16, 16, 32, 32, 64]
    assert head.fc.in_features == 64 and head.fc.out_features == 10


@pytest.mark.parametrize('hw', [(16, 16), (15, 9)])
def test_forward_and_attention_range(hw):
    head = DRGHead(8, 5).eval()
    x = torch.randn(2, 8, *hw)
    assert head(x).shape == (2, 5)
    a = torch.nn.functional.interpolate(head.attention(x), size=hw, mode='bilinear',
                                        align_corners=True).sigmoid()
    assert a.shape == x.shape and (a > 0).all() and (a < 1).all()
    head.train()
    head(x).sum().backward()
    assert all(p.grad is not None for p in head.parameters())
