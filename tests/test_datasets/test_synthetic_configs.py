"""The synthetic-data overrides seed their runs: the same overrides train the same model.

Without ``randomness.seed`` MMEngine draws a new seed every run, and a test that trains a
few iterations (e.g. RTMDet's end to end run) passes or fails by the draw.
"""
import time

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmkd.datasets import cls_overrides, det_overrides, seg_overrides
from mmkd.recipes import write_config

OVERRIDES = {'det': (det_overrides, 'det_data'), 'seg': (seg_overrides, 'seg_data'),
             'cls': (cls_overrides, 'cls_data')}


@pytest.mark.parametrize('task', list(OVERRIDES))
def test_overrides_set_the_seed(task, request):
    make, fixture = OVERRIDES[task]
    info = request.getfixturevalue(fixture)
    assert make(info)['randomness'] == dict(seed=0)
    assert make(info, seed=7)['randomness'] == dict(seed=7)
    assert 'randomness' not in make(info, seed=None)  # MMEngine's default: a new seed each run


def _initial_weights(path: str, work_dir: str) -> dict:
    cfg = Config.fromfile(path)
    cfg.work_dir = work_dir
    cfg.experiment_name = f'seed_{time.time_ns()}'
    runner = Runner.from_cfg(cfg)
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_overrides_same_initial_model(cls_data, tmp_path):
    """Two runners from one config start from the same weights; unseeded ones do not."""
    base = 'mmpretrain::resnet/resnet18_8xb32_in1k.py'
    seeded = write_config(str(tmp_path / 'seeded.py'), base, cls_overrides(cls_data))
    first = _initial_weights(seeded, str(tmp_path / 'a'))
    assert _same(first, _initial_weights(seeded, str(tmp_path / 'b')))
    other = write_config(str(tmp_path / 'seed1.py'), base, cls_overrides(cls_data, seed=1))
    assert not _same(first, _initial_weights(other, str(tmp_path / 'c')))
    unseeded = write_config(str(tmp_path / 'unseeded.py'), base, cls_overrides(cls_data, seed=None))
    assert not _same(_initial_weights(unseeded, str(tmp_path / 'd')),
                     _initial_weights(unseeded, str(tmp_path / 'e')))
