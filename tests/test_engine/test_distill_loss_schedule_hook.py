"""DistillLossScheduleHook: warm-up values, stop, and continuity across a resume."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from mmkd.engine import DistillLossScheduleHook
from mmkd.registry import HOOKS
from mmkd.utils import register_checkpoint_loader


def _run_hook(hook, epoch=0, it=0, model=None):
    model = model if model is not None else SimpleNamespace(distill_loss_scale=-1.0)
    hook.before_train_iter(SimpleNamespace(model=model, epoch=epoch, iter=it), batch_idx=0)
    return model.distill_loss_scale


@pytest.mark.parametrize('epoch, expected', [(0, 0.05), (1, 0.10), (9, 0.5), (18, 0.95),
                                             (19, 1.0), (100, 1.0)])
def test_epoch_warmup_cifar_recipe(epoch, expected):
    # DKD's CIFAR-100 recipe: min(epoch / 20, 1) with 1-based epochs (runner.epoch is 0-based).
    assert _run_hook(DistillLossScheduleHook(warmup=20), epoch=epoch, it=12345) == \
        pytest.approx(expected)


def test_imagenet_one_epoch_warmup_is_full_from_the_first_epoch():
    # min(epoch / 1, 1) with epoch = 1 in the first epoch: the official ImageNet behaviour.
    hook = DistillLossScheduleHook(warmup=1)
    assert [_run_hook(hook, epoch=e) for e in range(3)] == [1.0, 1.0, 1.0]


def test_iteration_warmup_and_stop():
    hook = DistillLossScheduleHook(warmup=4, stop=7, by_epoch=False)
    scales = [_run_hook(hook, epoch=0, it=i) for i in range(9)]
    assert scales == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0])


def test_epoch_stop_without_warmup():
    hook = DistillLossScheduleHook(stop=3)
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


def _runner(work_dir, max_epochs, resume, by_epoch):
    hook = dict(type='mmkd.DistillLossScheduleHook', warmup=4, by_epoch=by_epoch)
    train_cfg = dict(by_epoch=True, max_epochs=max_epochs) if by_epoch else \
        dict(by_epoch=False, max_iters=max_epochs * 2)
    return Runner(
        model=_Recorder(), work_dir=work_dir,
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(1))] * 2, batch_size=1,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), train_cfg=train_cfg,
        custom_hooks=[hook], resume=resume,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1 if by_epoch else 2,
                                           by_epoch=by_epoch)),
        default_scope='mmengine', experiment_name=f'rec_{by_epoch}_{max_epochs}_{resume}')


@pytest.mark.parametrize('by_epoch', [True, False])
def test_resume_continues_the_schedule(tmp_path, by_epoch):
    register_checkpoint_loader()
    work = str(tmp_path)
    # 2 iterations per epoch; warm-up over 4 epochs (by_epoch) or 4 iterations.
    full = [0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0] if by_epoch else \
        [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0]
    first = _runner(work, max_epochs=2, resume=False, by_epoch=by_epoch)
    first.train()
    assert first.model.seen == full[:4]
    second = _runner(work, max_epochs=4, resume=True, by_epoch=by_epoch)
    second.train()
    assert second.iter == 8
    assert second.model.seen == full[4:]
