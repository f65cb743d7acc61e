"""DistillLossScheduleHook: warm-up values, stop, continuity across a resume, and the
unit (epochs or iterations) following the train loop."""
import copy
import glob
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import LOOPS, init_default_scope
from mmengine.runner import BaseLoop, EpochBasedTrainLoop, IterBasedTrainLoop, Runner
from torch import nn

from mmkd.engine import DistillLossScheduleHook
from mmkd.registry import HOOKS
from mmkd.testing import ROOT
from mmkd.utils import register_checkpoint_loader


def _run_hook(hook, epoch=0, it=0, model=None):
    model = model if model is not None else SimpleNamespace(distill_loss_scale=-1.0)
    hook.before_train_iter(SimpleNamespace(model=model, epoch=epoch, iter=it), batch_idx=0)
    return model.distill_loss_scale


@pytest.mark.parametrize('epoch, expected', [(0, 0.05), (1, 0.10), (9, 0.5), (18, 0.95),
                                             (19, 1.0), (100, 1.0)])
def test_epoch_warmup_cifar_recipe(epoch, expected):
    # DKD's CIFAR-100 recipe: min(epoch / 20, 1) with 1-based epochs (runner.epoch is 0-based).
    assert _run_hook(DistillLossScheduleHook(warmup=20, by_epoch=True), epoch=epoch, it=12345) == \
        pytest.approx(expected)


def test_imagenet_one_epoch_warmup_is_full_from_the_first_epoch():
    # min(epoch / 1, 1) with epoch = 1 in the first epoch: the official ImageNet behaviour.
    hook = DistillLossScheduleHook(warmup=1, by_epoch=True)
    assert [_run_hook(hook, epoch=e) for e in range(3)] == [1.0, 1.0, 1.0]


def test_iteration_warmup_and_stop():
    hook = DistillLossScheduleHook(warmup=4, stop=7, by_epoch=False)
    scales = [_run_hook(hook, epoch=0, it=i) for i in range(9)]
    assert scales == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0])


def test_epoch_stop_without_warmup():
    hook = DistillLossScheduleHook(stop=3, by_epoch=True)
    assert [_run_hook(hook, epoch=e) for e in range(4)] == [1.0, 1.0, 0.0, 0.0]


def test_registered_and_validated():
    hook = HOOKS.build(dict(type='DistillLossScheduleHook', _scope_='mmkd', warmup=2,
                            by_epoch=False))
    assert isinstance(hook, DistillLossScheduleHook) and hook.scale(1) == 0.5
    with pytest.raises(ValueError, match='warmup'):
        DistillLossScheduleHook(warmup=-1)
    with pytest.raises(ValueError, match='stop'):
        DistillLossScheduleHook(stop=0)
    with pytest.raises(TypeError, match='mmkd distiller'):
        _run_hook(DistillLossScheduleHook(warmup=2), model=nn.Linear(1, 1))


class _Recorder(BaseModel):
    """A toy 'distiller': records the scale it trains with at every iteration."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.distill_loss_scale = 1.0
        self.seen = []

    def forward(self, inputs, data_samples=None, mode='tensor'):
        self.seen.append(self.distill_loss_scale)
        return dict(loss=(self.w * inputs).sum() * self.distill_loss_scale)


_UNSET = object()


def _runner(work_dir, max_epochs, resume=False, epoch_loop=True, by_epoch=_UNSET,
            train_cfg=None):
    """Batch 1, warm-up over 4 epochs or iterations; an epoch loop has 2 iterations per
    epoch, an iteration loop 8 samples (no dataloader restart: mmengine sleeps 2 s there).

    ``by_epoch`` of the hook: the loop's kind unless given (None: not set).
    """
    hook = dict(type='mmkd.DistillLossScheduleHook', warmup=4)
    by_epoch = epoch_loop if by_epoch is _UNSET else by_epoch
    if by_epoch is not None:
        hook['by_epoch'] = by_epoch
    if train_cfg is None:
        train_cfg = dict(by_epoch=True, max_epochs=max_epochs) if epoch_loop else \
            dict(by_epoch=False, max_iters=max_epochs * 2)
    return Runner(
        model=_Recorder(), work_dir=work_dir,
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(1))] * (2 if epoch_loop else 8),
                              batch_size=1,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), train_cfg=train_cfg,
        custom_hooks=[hook], resume=resume,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=1 if epoch_loop else 2,
                                           by_epoch=epoch_loop)),
        default_scope='mmengine',
        experiment_name=f'rec_{epoch_loop}_{by_epoch}_{max_epochs}_{resume}')


EPOCHS = [0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0]  # 2 iterations per epoch
ITERS = [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize('epoch_loop, by_epoch', [(True, True), (False, False), (True, None),
                                                  (False, None)])
def test_resume_continues_the_schedule(tmp_path, epoch_loop, by_epoch):
    register_checkpoint_loader()
    work = str(tmp_path)
    full = EPOCHS if epoch_loop else ITERS
    first = _runner(work, max_epochs=2, epoch_loop=epoch_loop, by_epoch=by_epoch)
    first.train()
    assert first.model.seen == full[:4]
    second = _runner(work, max_epochs=4, resume=True, epoch_loop=epoch_loop, by_epoch=by_epoch)
    second.train()
    assert second.iter == 8
    assert second.model.seen == full[4:]


@pytest.mark.parametrize('epoch_loop', [True, False])
def test_by_default_follows_the_train_loop(tmp_path, epoch_loop):
    runner = _runner(str(tmp_path), max_epochs=4, epoch_loop=epoch_loop, by_epoch=None)
    runner.train()
    assert runner.model.seen == (EPOCHS if epoch_loop else ITERS)


def test_iterations_under_an_epoch_loop(tmp_path):
    runner = _runner(str(tmp_path), max_epochs=4, epoch_loop=True, by_epoch=False)
    runner.train()
    assert runner.model.seen == ITERS


def _mmseg_train_cfg(max_iters):
    """The train loop of a shipped mmseg config (IterBasedTrainLoop), shortened."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'dist', 'pspnet_r101_r18_cityscapes.py'))
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    return dict(cfg.train_cfg, max_iters=max_iters)


def test_mmseg_config_counts_iterations_by_default(tmp_path):
    runner = _runner(str(tmp_path), max_epochs=4, epoch_loop=False, by_epoch=None,
                     train_cfg=_mmseg_train_cfg(8))
    runner.train()
    assert isinstance(runner.train_loop, IterBasedTrainLoop)
    assert runner.model.seen == ITERS


def test_mmseg_config_refuses_by_epoch_true_before_the_first_step(tmp_path):
    runner = _runner(str(tmp_path), max_epochs=4, epoch_loop=False, by_epoch=True,
                     train_cfg=_mmseg_train_cfg(8))
    with pytest.raises(ValueError) as err:
        runner.train()
    assert runner.model.seen == []
    message = str(err.value)
    for part in ('DistillLossScheduleHook(by_epoch=True)', 'IterBasedTrainLoop',
                 'warm-up would stay at its first value', 'Remove by_epoch',
                 'by_epoch=False', 'in iterations'):
        assert part in message, part


def test_a_loop_of_unknown_kind_needs_an_explicit_by_epoch():
    class MyLoop(BaseLoop):
        def run(self):
            pass

    with pytest.raises(ValueError, match='MyLoop.*set by_epoch=True or by_epoch=False'):
        DistillLossScheduleHook().resolve(MyLoop)
    assert DistillLossScheduleHook(by_epoch=True).resolve(MyLoop) is True
    assert DistillLossScheduleHook(by_epoch=False).resolve(MyLoop) is False
    with pytest.raises(ValueError, match='by_epoch must be'):
        DistillLossScheduleHook(by_epoch='epoch')


def _loop_class(train_cfg):
    """The train loop class the Runner builds from ``train_cfg`` (``Runner.build_train_loop``)."""
    train_cfg = dict(train_cfg)
    if 'type' not in train_cfg:
        return EpochBasedTrainLoop if train_cfg.get('by_epoch', True) else IterBasedTrainLoop
    with LOOPS.switch_scope_and_registry(train_cfg.get('_scope_')) as registry:
        return registry.get(train_cfg['type'])


def _configs_with_the_hook():
    # Every shipped config (method configs and the _base_ pairs) that names the hook.
    files = glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    return sorted(osp.relpath(f, ROOT) for f in files
                  if 'DistillLossScheduleHook' in open(f).read())


@pytest.mark.parametrize('config', _configs_with_the_hook())
def test_shipped_configs_are_not_refused(config):
    cfg = Config.fromfile(osp.join(ROOT, config))
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    loop = _loop_class(cfg.train_cfg)
    for hook_cfg in cfg.custom_hooks:
        if 'DistillLossScheduleHook' in hook_cfg['type']:
            hook = HOOKS.build(copy.deepcopy(hook_cfg))
            assert hook.resolve(loop) is True  # the recipes warm up / stop over epochs
