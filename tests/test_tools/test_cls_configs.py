"""Every shipped classification config builds and runs one training step (CPU, no downloads).

The models are the configs' own (teacher from its mmpretrain config, real widths), with
``teacher_ckpt=None`` and no pretrained weights, on a batch of two 32 x 32 images.
"""
import copy
import glob
import os.path as osp
from types import SimpleNamespace

import mmpretrain
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import HOOKS, MODELS, init_default_scope
from mmpretrain.structures import DataSample

from mmkd.recipes import no_pretrained
from mmkd.testing import ROOT

CLS_CONFIGS = sorted(
    osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs/*/*.py'))
    if p.endswith(('_in1k.py', '_cifar100.py')) and '/_base_/' not in p)

#: The checkpoint URLs of mmpretrain's model zoo (its metafiles).
MODEL_ZOO = ''.join(
    open(p).read() for p in glob.glob(osp.join(
        osp.dirname(mmpretrain.__file__), '.mim', 'configs', '*', 'metafile.yml')))

#: Linear warm-up epochs of the DKD-style recipes (20 on CIFAR-100, 1 on ImageNet).
WARMUP = {
    'dkd/resnet_r34_r18_in1k.py': 1, 'dkd/mobilenetv2_r50_mbv2_in1k.py': 1,
    'rekd/resnet_r34_r18_in1k.py': 1, 'rld/resnet_r34_r18_in1k.py': 1,
    'sdd/resnet_r34_r18_in1k.py': 1, 'sdd/mobilenetv2_r50_mbv2_in1k.py': 1,
    'sdd/resnet_r50_r18_cifar100.py': 20, 'ls-dkd/resnet_r34_r18_in1k.py': 1
}


def test_the_config_list():
    names = {osp.basename(osp.dirname(p)) + '/' + osp.basename(p) for p in CLS_CONFIGS}
    for method in ('kd', 'dist', 'dkd', 'rekd', 'rld', 'sdd'):
        assert f'{method}/resnet_r34_r18_in1k.py' in names
    for method in ('dist', 'dkd', 'sdd'):
        assert f'{method}/mobilenetv2_r50_mbv2_in1k.py' in names
    assert {'ls-kd/resnet_r34_r18_in1k.py', 'ls-dkd/resnet_r34_r18_in1k.py',
            'sdd/resnet_r50_r18_cifar100.py', 'lightskd/resnet_r18_cifar100.py',
            'lightskd/resnet_r18_in1k.py'} <= names


def build(path):
    """The model as the Runner builds it (top-level data_preprocessor merged in)."""
    cfg = Config.fromfile(osp.join(ROOT, path))
    init_default_scope(cfg.default_scope)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    if 'teacher_ckpt' in model_cfg:
        assert model_cfg.teacher_ckpt in MODEL_ZOO  # an official mmpretrain checkpoint
        model_cfg.teacher_ckpt = None
    no_pretrained(model_cfg)
    model = MODELS.build(model_cfg)
    return cfg, model


@pytest.mark.parametrize('path', CLS_CONFIGS)
def test_config_builds_and_trains_one_step(path):
    cfg, model = build(path)
    method = path.split('/')[1]
    num_classes = 100 if 'cifar100' in path else 1000
    assert model.student.head.num_classes == num_classes
    if method != 'lightskd':
        assert model.teacher.head.num_classes == num_classes
        assert not model.teacher.training
    # the schedule hook of the warm-up recipes: min(epoch / warmup, 1), 1-based epochs
    hooks = [HOOKS.build(h) for h in cfg.get('custom_hooks', [])]
    warmup = WARMUP.get(path[len('configs/'):])
    assert [h.warmup for h in hooks] == ([warmup] if warmup else [])
    for h in hooks:
        h.before_train_iter(SimpleNamespace(model=model, epoch=0, iter=0), 0)
    assert model.distill_loss_scale == (1 / warmup if warmup else 1.0)

    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    g = torch.Generator().manual_seed(0)
    data = dict(inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g)
                        for _ in range(2)],
                data_samples=[DataSample().set_gt_label(lb) for lb in (3, 7)])
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith('teacher.')}
    model.train()
    log = model.train_step(data, optim)
    assert 'loss' in log and len(log) >= 2
    assert all(k == 'loss' or k.startswith('loss_') for k in log)
    assert all(torch.isfinite(v) for v in log.values())
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v), k
