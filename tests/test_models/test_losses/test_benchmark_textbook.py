"""The benchmark's textbook implementations compute the same numbers as mmkd.

``tools/analysis_tools/benchmark_losses.py`` compares mmkd with the papers'
way of writing each loss; the comparison only means something if both compute
the same loss.
"""
import importlib.util
import os

import pytest
import torch
from loss_refs import build

from mmkd.models.losses import sdd_loss

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
spec = importlib.util.spec_from_file_location(
    'benchmark_losses', os.path.join(ROOT, 'tools', 'analysis_tools', 'benchmark_losses.py'))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize('name', ['KDLoss', 'DISTLoss', 'DKDLoss', 'ReKDLoss', 'RLDLoss',
                                  'DRGLoss', 'DSRLoss'])
@pytest.mark.parametrize('shape', [(6, 9), (2, 9, 3, 2)])
def test_textbook_matches_mmkd(name, shape):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    t = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, shape[1], (shape[0], ) + shape[2:], generator=g)
    if name == 'DSRLoss':
        t = t.sort(dim=1).values
        loss = build('DSRLoss')
        loss.prev_sorted = t
        ours = loss(s)
    else:
        ours = build(name)(s, t, y)
    torch.testing.assert_close(bench.TEXTBOOK[name](s, t, y), ours, rtol=1e-9, atol=1e-12)


def test_textbook_sdd_matches_mmkd():
    g = torch.Generator().manual_seed(1)
    local_s = torch.randn(4, 6, 5, generator=g, dtype=torch.float64)
    local_t = torch.randn(4, 6, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 6, (4, ), generator=g)
    torch.testing.assert_close(
        bench.textbook_sdd(local_s, local_t, y), sdd_loss(local_s, local_t, y).mean())
