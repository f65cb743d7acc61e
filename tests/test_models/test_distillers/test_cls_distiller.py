"""ClsDistiller: mmpretrain classifiers, every teacher-student loss, teacher handling."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmpretrain.structures import DataSample

from mmkd.models.distillers import ClsDistiller
from mmkd.models.distillers.cls_distiller import classifier_forward
from mmkd.models.losses import DKDLoss, KDLoss, SDDLoss
from mmkd.registry import MODELS
from mmkd.testing.batches import tiny_classifier

IMAGENET = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
CIFAR = dict(mean=[129.304, 124.070, 112.434], std=[68.170, 65.392, 70.418], to_rgb=False)


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope('mmpretrain')


def classifier(depth=18, num_classes=10, width=8, norm=IMAGENET, head=None):
    """A narrow CIFAR ResNet (width 8 instead of 64), built in the mmpretrain scope."""
    return tiny_classifier(num_classes, depth, width, head, preprocessor=norm)


def distiller(losses, teacher=None, student=None, **kwargs):
    torch.manual_seed(0)
    return ClsDistiller(student=student or classifier(18),
                        teacher=teacher or classifier(50, norm=CIFAR),
                        distill_losses=losses, **kwargs)


def raw_batch(n=4, size=32, labels=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    labels = labels if labels is not None else [i % 10 for i in range(n)]
    return dict(inputs=[torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
                        for _ in range(n)],
                data_samples=[DataSample().set_gt_label(int(lb)) for lb in labels])


def alone(model_cfg, state_dict):
    """The same classifier built on its own, with the given weights."""
    model = MODELS.build(copy.deepcopy(model_cfg))
    model.load_state_dict(state_dict)
    return model


def test_losses_equal_the_models_run_alone_with_different_normalisation():
    model = distiller(dict(kd=dict(type='KDLoss', temperature=4.0)))
    assert model.teacher_inputs(torch.zeros(1, 3, 2, 2)).abs().sum() > 0  # re-normalised
    student = alone(classifier(18), model.student.state_dict())
    teacher = alone(classifier(50, norm=CIFAR), model.teacher.state_dict()).eval()
    model.train()
    student.train()
    batch = raw_batch()
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss', 'loss_kd'}

    with torch.no_grad():
        t_data = teacher.data_preprocessor(copy.deepcopy(batch), False)
        logits_T = teacher(t_data['inputs'], mode='tensor')
        # The distiller's teacher forward equals the teacher on its own normalisation.
        inner_T = classifier_forward(model.teacher, model.teacher_inputs(data['inputs']))[1]
    torch.testing.assert_close(inner_T, logits_T, rtol=1e-4, atol=1e-4)

    s_data = student.data_preprocessor(copy.deepcopy(batch), True)
    logits_S = student(s_data['inputs'], mode='tensor')
    own = student.loss(s_data['inputs'], s_data['data_samples'])['loss']
    torch.testing.assert_close(losses['loss'], own)
    torch.testing.assert_close(losses['loss_kd'], KDLoss(temperature=4.0)(logits_S, logits_T),
                               rtol=1e-4, atol=1e-6)


TEACHER_STUDENT_LOSSES = {
    'kd': dict(type='KDLoss', temperature=4.0),
    'kd_ls': dict(type='KDLoss', temperature=2.0, logit_stand=True, loss_weight=9.0),
    'dist': dict(type='DISTLoss', tau=1.0, loss_weight=2.0),
    'dkd': dict(type='DKDLoss', alpha=1.0, beta=8.0, temperature=4.0),
    'dkd_ls': dict(type='DKDLoss', temperature=2.0, logit_stand=True, loss_weight=9.0),
    'rekd': dict(type='ReKDLoss', k=3),
    'rekd_ls': dict(type='ReKDLoss', k=3, logit_stand=True),
    'rld': dict(type='RLDLoss', beta=0.5, temperature=1.0),
    'rld_ls': dict(type='RLDLoss', logit_stand=True),
    'sdd_dkd': dict(type='SDDLoss', base='dkd'),
    'sdd_kd': dict(type='SDDLoss', base='kd', scales=(1, 2)),
    'sdd_ls': dict(type='SDDLoss', logit_stand=True),
}


@pytest.mark.parametrize('name', sorted(TEACHER_STUDENT_LOSSES))
def test_every_loss_trains_the_student_only(name):
    model = distiller({name: TEACHER_STUDENT_LOSSES[name]})
    teacher_before = copy.deepcopy(model.teacher.state_dict())
    student_before = copy.deepcopy(model.student.state_dict())
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    model.train()
    assert not model.teacher.training and model.student.training
    for step in range(2):
        log = model.train_step(raw_batch(seed=step), optim)
        assert set(log) == {'loss', f'loss_{name}'}
        assert all(torch.isfinite(v) for v in log.values())
        assert log[f'loss_{name}'] > 0
    assert not model.teacher.training
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k  # incl. BN running statistics
    moved = [k for k, v in model.student.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, student_before[k])]
    assert any(k.startswith('head.fc') for k in moved) and any('backbone' in k for k in moved)


def test_sdd_uses_last_feature_maps_and_linear_classifiers():
    cfg = dict(type='SDDLoss', base='dkd', beta=8.0, temperature=4.0)
    model = distiller(dict(sdd=cfg)).eval()
    batch = model.data_preprocessor(raw_batch(), False)
    x, target = batch['inputs'], torch.tensor([ds.gt_label.item() for ds in batch['data_samples']])
    loss = model(**batch, mode='loss')['loss_sdd']
    with torch.no_grad():
        f_S = model.student.extract_feat(x, stage='backbone')[-1]
        f_T = model.teacher.extract_feat(model.teacher_inputs(x), stage='backbone')[-1]
        expected = SDDLoss(base='dkd', beta=8.0, temperature=4.0)(
            f_S, f_T, target, model.student.head.fc, model.teacher.head.fc)
    assert f_S.shape[-2:] == (4, 4) and f_T.shape[1] == 4 * f_S.shape[1]
    torch.testing.assert_close(loss, expected)


def test_sdd_needs_a_linear_fc_head():
    head = dict(type='StackedLinearClsHead', num_classes=10, in_channels=64, mid_channels=[32])
    with pytest.raises(TypeError, match=r'SDDLoss "sdd".*head.fc.*StackedLinearClsHead'):
        distiller(dict(sdd=dict(type='SDDLoss')), student=classifier(18, head=head))
    # Other losses are fine with any classification head.
    distiller(dict(kd=dict(type='KDLoss')), student=classifier(18, head=head))


def test_class_count_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match='same classes.*student has 10, the teacher 100'):
        distiller(dict(kd=dict(type='KDLoss')), teacher=classifier(50, num_classes=100))


def test_ignore_index_255_is_a_class_of_imagenet_sized_heads():
    """Rows labelled 255 are distilled on a 300-class head (no ignore value in classification)."""
    model = distiller(dict(dkd=dict(type='DKDLoss')), student=classifier(18, num_classes=300),
                      teacher=classifier(50, num_classes=300)).eval()
    assert model.distill_losses['dkd'].ignore_index is None
    batch = model.data_preprocessor(raw_batch(labels=[255, 3, 255, 7]), False)
    loss = model(**batch, mode='loss')['loss_dkd']
    with torch.no_grad():
        logits_S = model.student(batch['inputs'], mode='tensor')
        logits_T = model.teacher(model.teacher_inputs(batch['inputs']), mode='tensor')
    target = torch.tensor([255, 3, 255, 7])
    torch.testing.assert_close(loss, DKDLoss(ignore_index=None)(logits_S, logits_T, target))
    assert not torch.allclose(loss, DKDLoss()(logits_S, logits_T, target))
    # Fewer classes than 255: the loss keeps its setting.
    assert distiller(dict(dkd=dict(type='DKDLoss'))).distill_losses['dkd'].ignore_index == 255


def test_distill_loss_scale_multiplies_only_distillation_losses():
    model = distiller(dict(kd=dict(type='KDLoss'), dist=dict(type='DISTLoss'))).eval()
    batch = model.data_preprocessor(raw_batch(), False)
    full = model(**batch, mode='loss')
    model.distill_loss_scale = 0.25
    scaled = model(**batch, mode='loss')
    torch.testing.assert_close(scaled['loss'], full['loss'])
    for k in ('loss_kd', 'loss_dist'):
        torch.testing.assert_close(scaled[k], 0.25 * full[k])


def test_predict_and_tensor_modes_run_the_student_alone():
    model = distiller(dict(kd=dict(type='KDLoss'))).eval()
    student = alone(classifier(18), model.student.state_dict()).eval()
    batch = model.data_preprocessor(raw_batch(), False)
    preds = model(**batch, mode='predict')
    expected = student(**batch, mode='predict')
    for p, e in zip(preds, expected):
        torch.testing.assert_close(p.pred_score, e.pred_score)
    torch.testing.assert_close(model(batch['inputs'], mode='tensor'),
                               student(batch['inputs'], mode='tensor'))


def test_teacher_checkpoint_missing_mismatching_and_loaded(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        distiller(dict(kd=dict(type='KDLoss')), teacher_ckpt=str(tmp_path / 'missing.pth'))
    wrong = MODELS.build(classifier(34))  # a ResNet-34 checkpoint for the ResNet-50 teacher
    torch.save(dict(state_dict=wrong.state_dict()), tmp_path / 'r34.pth')
    with pytest.raises(RuntimeError, match='does not fit the teacher'):
        distiller(dict(kd=dict(type='KDLoss')), teacher_ckpt=str(tmp_path / 'r34.pth'))
    torch.manual_seed(5)
    right = MODELS.build(classifier(50, norm=CIFAR))
    torch.save(dict(state_dict=right.state_dict()), tmp_path / 'r50.pth')
    model = distiller(dict(kd=dict(type='KDLoss')), teacher_ckpt=str(tmp_path / 'r50.pth'))
    for k, v in right.state_dict().items():
        assert torch.equal(model.teacher.state_dict()[k], v), k
    model.init_weights()  # initialises the student only
    assert torch.equal(model.teacher.head.fc.weight, right.head.fc.weight)


def test_runner_data_preprocessor_and_teacher_config_string():
    """mmpretrain configs keep data_preprocessor at the top level: the Runner passes it to the
    distiller (for the student) and a teacher given as a config string gets its config's."""
    student = classifier(18)
    student.pop('data_preprocessor')
    model = distiller(dict(kd=dict(type='KDLoss')), student=student,
                      teacher='mmpretrain::resnet/resnet18_8xb16_cifar10.py',
                      data_preprocessor=dict(num_classes=10, **IMAGENET))
    assert model.data_preprocessor is model.student.data_preprocessor
    torch.testing.assert_close(model.student.data_preprocessor.mean.flatten(),
                               torch.tensor(IMAGENET['mean']))
    cifar10_mean = torch.tensor([125.307, 122.961, 113.8575])
    torch.testing.assert_close(model.teacher.data_preprocessor.mean.flatten(), cifar10_mean)
    assert model.teacher_inputs(torch.zeros(1, 3, 1, 1)).abs().sum() > 0
