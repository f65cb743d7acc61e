"""Batch augmentations with soft labels (mmpretrain's own Mixup sets ``gt_score``).

Losses without labels (KD, DIST, ReKD...) run on the mixed batch's logits with
no target; losses that need hard labels (``requires_target``: DKD, RLD, SDD)
are refused at the first step; LightSKD's auxiliary cross-entropy uses the soft
labels, as the student's head does.
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmpretrain.structures import DataSample
from torch import nn

import mmkd.models  # noqa: F401  (fills the registry)
from mmkd.models.distillers import ClsDistiller, LightSKD
from mmkd.models.distillers.cls_distiller import classifier_forward
from mmkd.registry import MODELS
from mmkd.testing.batches import tiny_classifier

NUM_CLASSES = 10
MIXUP = dict(augments=dict(type='Mixup', alpha=1.0))
MESSAGE = 'the batch has mixed soft labels (gt_score, e.g. Mixup/CutMix)'


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope('mmpretrain')


def classifier(depth=18, width=8, batch_augments=MIXUP):
    """A narrow CIFAR ResNet whose data preprocessor mixes the batch (num_classes set)."""
    return tiny_classifier(NUM_CLASSES, depth, width, preprocessor=dict(
        num_classes=NUM_CLASSES, batch_augments=batch_augments))


def distiller(losses, batch_augments=MIXUP):
    torch.manual_seed(0)
    return ClsDistiller(student=classifier(18, batch_augments=batch_augments),
                        teacher=classifier(50, batch_augments=None),
                        distill_losses=losses).train()


def lightskd(losses=None):
    torch.manual_seed(0)
    return LightSKD(student=classifier(18), aux_head=dict(type='DRGHead', in_channels=16),
                    distill_losses=losses).train()


def raw_batch(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g)
                        for _ in range(n)],
                data_samples=[DataSample().set_gt_label(i % NUM_CLASSES) for i in range(n)])


def mixed(model, seed=1):
    """The batch after the student's preprocessor in training mode: Mixup applied."""
    np.random.seed(seed)  # Mixup's lambda
    torch.manual_seed(seed)  # its permutation
    data = model.data_preprocessor(raw_batch(seed=seed), True)
    scores = torch.stack([ds.gt_score for ds in data['data_samples']])
    assert scores.shape == (4, NUM_CLASSES)
    assert (scores.max(dim=1).values < 1).any()  # really mixed, not one-hot
    return data, scores


def soft_cross_entropy(logits, scores):
    return -(scores * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


@pytest.mark.parametrize('cfg', [dict(type='KDLoss', temperature=4.0),
                                 dict(type='DISTLoss', temperature=4.0),
                                 dict(type='ReKDLoss', k=3)],
                         ids=lambda cfg: cfg['type'])
def test_losses_without_labels_run_on_the_mixed_batch(cfg):
    model = distiller(dict(dist=cfg))
    data, scores = mixed(model)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss', 'loss_dist'}
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        _, logits_S = classifier_forward(model.student, data['inputs'])
        _, logits_T = classifier_forward(model.teacher, model.teacher_inputs(data['inputs']))
    # The distillation loss on the mixed batch's logits, with no target ...
    loss = MODELS.build(dict(cfg, _scope_='mmkd'))
    torch.testing.assert_close(losses['loss_dist'], loss(logits_S, logits_T))
    # ... and the student's own loss on the mixed labels (mmpretrain's head).
    torch.testing.assert_close(losses['loss'], soft_cross_entropy(logits_S, scores))

    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log = model.train_step(raw_batch(seed=2), optim)  # a whole step with the preprocessor
    assert set(log) == {'loss', 'loss_dist'} and all(torch.isfinite(v) for v in log.values())


@pytest.mark.parametrize('cfg', [dict(type='DKDLoss'), dict(type='RLDLoss'),
                                 dict(type='SDDLoss', base='dkd')],
                         ids=lambda cfg: cfg['type'])
def test_losses_that_need_labels_are_refused_at_the_first_step(cfg):
    model = distiller(dict(kd=dict(type='KDLoss'), hard=cfg))
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    before = copy.deepcopy(dict(model.student.named_parameters()))
    with pytest.raises(ValueError) as err:
        model.train_step(raw_batch(), optim)
    message = str(err.value)
    for part in ('ClsDistiller', 'distill loss "hard"', cfg['type'], 'requires_target=True',
                 MESSAGE, 'drop the batch augment', 'KDLoss or DISTLoss'):
        assert part in message, part
    for k, v in model.student.named_parameters():
        assert torch.equal(v, before[k]), k  # refused before any optimizer step

    # The same distiller without the batch augment trains.
    plain = distiller(dict(kd=dict(type='KDLoss'), hard=cfg), batch_augments=None)
    log = plain.train_step(raw_batch(), OptimWrapper(torch.optim.SGD(plain.parameters(), lr=0.1)))
    assert all(torch.isfinite(v) for v in log.values())


def registered_losses():
    """Every registered loss (timm style): a new loss is tested without editing a list."""
    return sorted(name for name, cls in MODELS.module_dict.items()
                  if isinstance(cls, type) and issubclass(cls, nn.Module)
                  and hasattr(cls, 'inputs') and hasattr(cls, 'requires_target'))


@pytest.mark.parametrize('kind', [ClsDistiller, LightSKD], ids=lambda k: k.__name__)
@pytest.mark.parametrize('name', registered_losses())
def test_every_registered_loss_is_decided_by_requires_target(kind, name):
    cfg = dict(type=name, _scope_='mmkd')
    try:
        given = kind.input_for(MODELS.build(copy.deepcopy(cfg)))
    except ValueError:
        pytest.skip(f'{kind.__name__} does not take {name}')
    model = distiller(dict(x=cfg)) if kind is ClsDistiller else lightskd(dict(x=cfg))
    data, _ = mixed(model)
    # Only the losses that get the labels (not DSR's 'student_logits') could need them.
    if MODELS.module_dict[name].requires_target and given in ('logits', 'features'):
        with pytest.raises(ValueError, match=r'distill loss "x" .*needs hard class labels'):
            model(**data, mode='loss')
    else:
        losses = model(**data, mode='loss')
        assert all(torch.isfinite(v) for v in losses.values())


def test_lightskd_aux_loss_uses_the_soft_labels():
    model = lightskd()  # DRG and DSR: no labels needed
    data, scores = mixed(model)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss', 'loss_aux', 'loss_drg', 'loss_dsr'}
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        aux_feat, neck = model.extract_feat(data['inputs'])
        aux_logits = model.aux_head(aux_feat)
        logits = model.student.head(neck)
    torch.testing.assert_close(losses['loss_aux'], soft_cross_entropy(aux_logits, scores))
    torch.testing.assert_close(losses['loss'], soft_cross_entropy(logits, scores))
    # DRG on the mixed batch, without labels
    drg = model.distill_losses['drg']
    torch.testing.assert_close(losses['loss_drg'], drg(logits, aux_logits))
    # and not the unmixed labels' cross-entropy
    hard = torch.cat([ds.gt_label for ds in data['data_samples']])
    assert not torch.allclose(losses['loss_aux'], F.cross_entropy(aux_logits, hard))


def test_lightskd_refuses_a_logits_loss_that_needs_labels():
    model = lightskd(dict(dkd=dict(type='DKDLoss'), dsr=dict(type='DSRLoss')))
    data, _ = mixed(model)
    with pytest.raises(ValueError, match=r'LightSKD: distill loss "dkd" \(DKDLoss\)'):
        model(**data, mode='loss')
