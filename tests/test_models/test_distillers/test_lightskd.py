"""LightSKD: DRG auxiliary head, DSR memory, gradient paths, predict and export."""
import importlib.util
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope
from mmpretrain.structures import DataSample

from mmkd.engine import DistillLossScheduleHook
from mmkd.models.distillers import LightSKD
from mmkd.models.losses import dsr_loss, kd_loss
from mmkd.registry import MODELS
from mmkd.testing import ROOT


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope('mmpretrain')


def student_cfg(width=8, num_classes=10):
    return dict(type='ImageClassifier', _scope_='mmpretrain',
                backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=width,
                              base_channels=width, out_indices=(3, )),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=8 * width),
                data_preprocessor=dict(type='ClsDataPreprocessor', mean=[128.] * 3,
                                       std=[64.] * 3))


def lightskd(**kwargs):
    torch.manual_seed(0)
    kwargs.setdefault('aux_head', dict(type='DRGHead', in_channels=16))  # stage 2 of width 8
    return LightSKD(student=student_cfg(), **kwargs)


def batch(model, seed, n=4, training=True):
    g = torch.Generator().manual_seed(seed)
    raw = dict(inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g)
                       for _ in range(n)],
               data_samples=[DataSample().set_gt_label(i % 10) for i in range(n)])
    return model.data_preprocessor(raw, training)


def test_losses_and_defaults():
    model = lightskd().train()
    assert model.student.backbone.out_indices == (1, 3)
    assert [type(m).__name__ for m in model.distill_losses.values()] == ['DRGLoss', 'DSRLoss']
    assert model.distill_losses['drg'].loss_weight == 0.2
    assert model.aux_head.num_classes == 10
    losses = model(**batch(model, 0), mode='loss')
    assert set(losses) == {'loss', 'loss_aux', 'loss_drg', 'loss_dsr'}
    assert losses['loss_aux'] > 0 and losses['loss_drg'] > 0


def test_dsr_is_zero_first_then_uses_the_previous_batch():
    model = lightskd(distill_losses=dict(dsr=dict(type='DSRLoss', temperature=4.0)))
    model.eval()  # deterministic BN: the logits can be recomputed outside
    b0, b1 = batch(model, 0), batch(model, 1, n=3)
    first = model(**b0, mode='loss')['loss_dsr']
    assert first.item() == 0.0 and first.requires_grad
    second = model(**b1, mode='loss')['loss_dsr']
    with torch.no_grad():
        prev = model(b0['inputs'], mode='tensor')
        cur = model(b1['inputs'], mode='tensor')
    # rows paired by index, the first min(4, 3) = 3 rows
    expected = dsr_loss(cur, prev[:3].sort(dim=1).values, 4.0).mean()
    torch.testing.assert_close(second, expected)
    by_hand = kd_loss(cur.sort(dim=1).values, prev[:3].sort(dim=1).values, 4.0).mean()
    torch.testing.assert_close(second, by_hand)
    assert second > 0
    # the memory is per model and never saved
    assert lightskd().distill_losses['dsr'].prev_sorted is None
    assert not any('prev' in k for k in model.state_dict())


def _grad_owners(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    owners = set()
    for name, p in model.named_parameters():
        if p.grad is not None and p.grad.abs().sum() > 0:
            parts = name.split('.')
            owners.add(parts[0] if parts[0] == 'aux_head' else '.'.join(parts[1:3]))
    return owners


def test_gradient_paths_of_each_loss_term():
    model = lightskd().train()
    model(**batch(model, 0), mode='loss')  # fills the DSR memory
    losses = model(**batch(model, 1), mode='loss')
    below = {'backbone.conv1', 'backbone.bn1', 'backbone.layer1', 'backbone.layer2'}
    above = {'backbone.layer3', 'backbone.layer4', 'head.fc'}
    # The auxiliary cross-entropy reaches the aux head and the stages up to stage 2 only.
    assert _grad_owners(model, losses['loss_aux']) == {'aux_head'} | below
    # DRG (detached aux logits), DSR and the head loss train the student, never the aux head.
    for key in ('loss_drg', 'loss_dsr', 'loss'):
        assert _grad_owners(model, losses[key]) == below | above, key


def test_loss_values_drg_and_aux():
    model = lightskd(aux_loss_weight=0.5).eval()
    data = batch(model, 2)
    losses = model(**data, mode='loss')
    target = torch.tensor([ds.gt_label.item() for ds in data['data_samples']])
    with torch.no_grad():
        aux_feat, neck = model.extract_feat(data['inputs'])
        aux_logits = model.aux_head(aux_feat)
        logits = model.student.head(neck)
    torch.testing.assert_close(losses['loss_aux'], 0.5 * F.cross_entropy(aux_logits, target))
    torch.testing.assert_close(losses['loss_drg'], 0.2 * kd_loss(logits, aux_logits, 4.0).mean())


def test_scale_from_the_schedule_hook():
    model = lightskd().eval()
    data = batch(model, 3)
    full = model(**data, mode='loss')
    model.distill_losses['dsr'].reset()
    hook = DistillLossScheduleHook(warmup=4, stop=3, by_epoch=False)
    hook.before_train_iter(SimpleNamespace(model=model, epoch=0, iter=1), 0)  # 2nd iteration
    half = model(**data, mode='loss')
    torch.testing.assert_close(half['loss_drg'], 0.5 * full['loss_drg'])
    hook.before_train_iter(SimpleNamespace(model=model, epoch=0, iter=2), 0)  # stopped
    off = model(**data, mode='loss')
    assert off['loss_drg'] == 0 and off['loss_dsr'] == 0 and half['loss_dsr'] == 0
    for key in ('loss', 'loss_aux'):  # not distillation losses: never scaled
        torch.testing.assert_close(off[key], full[key])
        torch.testing.assert_close(half[key], full[key])


def _extract_student():
    spec = importlib.util.spec_from_file_location(
        'extract_student', osp.join(ROOT, 'tools/model_converters/extract_student.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.extract_student


def test_predict_and_export_exclude_the_aux_head():
    model = lightskd()
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    for seed in range(2):
        model.train()
        loss = sum(model(**batch(model, seed), mode='loss').values())
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()
    exported = _extract_student()(dict(state_dict=model.state_dict()))['state_dict']
    assert not any('aux' in k for k in exported)
    plain = MODELS.build(student_cfg())  # the student config alone: out_indices=(3,)
    plain.load_state_dict(exported, strict=True)
    plain.eval()
    data = batch(model, 4, training=False)
    for got, want in zip(model(**data, mode='predict'), plain(**data, mode='predict')):
        torch.testing.assert_close(got.pred_score, want.pred_score)
    torch.testing.assert_close(model(data['inputs'], mode='tensor'),
                               plain(data['inputs'], mode='tensor'))


def test_clear_errors():
    with pytest.raises(ValueError, match='aux_stage'):
        lightskd(aux_stage=3)
    with pytest.raises(ValueError, match=r"'sdd' \(SDDLoss\).*consumes \('features', 'views'\)"):
        lightskd(distill_losses=dict(sdd=dict(type='SDDLoss')))
    with pytest.raises(ValueError, match='aux_head has 7 classes'):
        lightskd(aux_head=dict(type='DRGHead', in_channels=16, num_classes=7))
    model = lightskd(aux_head=dict(type='DRGHead', in_channels=128))
    with pytest.raises(ValueError, match=r'in_channels=16'):
        model(**batch(model, 0), mode='loss')
