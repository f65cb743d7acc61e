"""DenseHeadDistiller: the RetinaNet configs on generated COCO data (every other dense head:
test_dense_heads.py).

The shipped configs run with their real models (R50 student, R101 teacher) and
random weights, 64 x 64 inputs, one intra-op thread (2 shared CPU cores).
"""
import copy
import os.path as osp
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.hub import get_config
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

from mmkd.datasets import det_overrides
from mmkd.recipes import no_pretrained
from mmkd.registry import MODELS
from mmkd.testing import ROOT

RETINA_CONFIGS = ['configs/kd/retinanet_r101_r50_coco.py',
                  'configs/dist/retinanet_r101_r50_coco.py']
SIGMOID_KD = dict(kd=dict(type='KDLoss', use_sigmoid=True, temperature=2.0))


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope_one_thread():
    init_default_scope('mmdet')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def batch(det_data):
    from mmdet.registry import DATASETS
    cfg = det_overrides(det_data, scale=(64, 64))['train_dataloader']['dataset']
    cfg.pop('_delete_')
    return pseudo_collate([DATASETS.build(cfg)[i] for i in range(2)])


def model_cfg(path=RETINA_CONFIGS[0], **updates):
    cfg = copy.deepcopy(Config.fromfile(osp.join(ROOT, path)).model)
    no_pretrained(cfg)
    cfg.teacher_ckpt = None
    cfg.update(updates)
    return cfg


def light_pair(base, **updates):
    """A ResNet-18 student and a copy of it as teacher, from an mmdet config."""
    student = no_pretrained(copy.deepcopy(get_config(base).model))
    student.backbone.update(depth=18, init_cfg=None)
    student.neck.in_channels = [64, 128, 256, 512]
    return dict(type='mmkd.DenseHeadDistiller', student=student, teacher=copy.deepcopy(student),
                **updates)


def preprocess(distiller, batch):
    data = distiller.data_preprocessor(copy.deepcopy(batch), True)
    return data['inputs'], data['data_samples']


@pytest.mark.parametrize('path', RETINA_CONFIGS)
def test_config_builds_and_trains_one_step(path, batch):
    cfg = model_cfg(path)
    distiller = MODELS.build(cfg)
    assert distiller.student.backbone.depth == 50 and distiller.teacher.backbone.depth == 101
    teacher_state = copy.deepcopy(distiller.teacher.state_dict())
    distiller.train()
    optim = OptimWrapper(torch.optim.SGD(distiller.student.parameters(), lr=0.01))
    log = distiller.train_step(copy.deepcopy(batch), optim)
    names = [f'loss_{n}' for n in cfg.distill_losses]
    assert set(log) == {'loss', 'loss_cls', 'loss_bbox'} | set(names)
    assert all(torch.isfinite(v) for v in log.values()) and all(log[n] > 0 for n in names)
    assert not distiller.teacher.training
    assert all(torch.equal(v, teacher_state[k]) for k, v in distiller.teacher.state_dict().items())


def test_rows_are_views_in_mmdet_anchor_order():
    distiller = MODELS.build(light_pair('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'))
    A, C = 9, 80
    scores = torch.randn(2, A * C, 3, 5)
    rows = distiller.rows(scores)
    assert rows.shape == (2 * A, C, 3, 5) and rows.data_ptr() == scores.data_ptr()
    assert rows._base is scores
    # mmdet's loss flattens as permute(0, 2, 3, 1).reshape(-1, C): same rows.
    mmdet_rows = scores.permute(0, 2, 3, 1).reshape(2, 3, 5, A, C)
    b, a, c, y, x = 1, 4, 17, 2, 3
    assert rows[b * A + a, c, y, x] == mmdet_rows[b, y, x, a, c] == scores[b, a * C + c, y, x]


def test_kd_value_by_hand_and_student_losses_unchanged(batch):
    distiller = MODELS.build(model_cfg(distill_losses=SIGMOID_KD))
    distiller.train()
    inputs, data_samples = preprocess(distiller, batch)
    with mock.patch.object(distiller.teacher.bbox_head, 'loss_by_feat') as teacher_loss:
        losses = distiller.loss(inputs, data_samples)
    assert teacher_loss.call_count == 0
    reference = distiller.student.loss(inputs, data_samples)
    for key in reference:
        torch.testing.assert_close(torch.stack(losses[key]), torch.stack(reference[key]))
    with torch.no_grad():
        cls_s = distiller.student.bbox_head(distiller.student.extract_feat(inputs))[0]
        cls_t = distiller.teacher.bbox_head(distiller.teacher.extract_feat(inputs))[0]
    per_level = []
    for s, t in zip(cls_s, cls_t):  # Bernoulli KL per class, summed; rows averaged; T = 2
        s = s.permute(0, 2, 3, 1).reshape(-1, 80).double() / 2
        t = t.permute(0, 2, 3, 1).reshape(-1, 80).double() / 2
        p = t.sigmoid()
        kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) -
                                                                   F.logsigmoid(-s))
        per_level.append(4 * kl.sum(1).mean())
    assert len(per_level) == 5
    expected = sum(per_level) / 5
    torch.testing.assert_close(losses['loss_kd'].double(), expected, rtol=1e-5, atol=1e-7)


def test_same_weights_give_zero_distillation(batch):
    distiller = MODELS.build(light_pair(
        'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
        distill_losses=dict(SIGMOID_KD, dist=dict(type='DISTLoss', use_sigmoid=True))))
    distiller.teacher.load_state_dict(distiller.student.state_dict())
    distiller.train()
    losses = distiller.loss(*preprocess(distiller, batch))
    assert abs(float(losses['loss_kd'])) < 1e-6
    assert abs(float(losses['loss_dist'])) < 1e-4  # DIST: 1 - rho with eps, not exactly 0


def test_empty_image_trains_without_nan(batch):
    from mmengine.structures import InstanceData
    distiller = MODELS.build(light_pair('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
                                        distill_losses=SIGMOID_KD))
    distiller.train()
    data = copy.deepcopy(batch)
    for sample in data['data_samples']:
        sample.gt_instances = InstanceData(bboxes=torch.zeros(0, 4),
                                           labels=torch.zeros(0, dtype=torch.int64))
    optim = OptimWrapper(torch.optim.SGD(distiller.student.parameters(), lr=0.01))
    log = distiller.train_step(data, optim)
    assert all(torch.isfinite(v) for v in log.values()) and log['loss_kd'] > 0


def test_refused_losses_and_heads():
    retina = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
    for loss in ('DKDLoss', 'ReKDLoss', 'RLDLoss'):
        with pytest.raises(ValueError, match=rf"\({loss}\) cannot distil the sigmoid head "
                                             r'RetinaHead: .* only for a softmax'):
            MODELS.build(light_pair(retina, distill_losses=dict(x=dict(type=loss))))
    with pytest.raises(ValueError, match=r"\(SDDLoss\) cannot distil the sigmoid head "
                                         r"RetinaHead: it consumes \('features', 'views'\)"):
        MODELS.build(light_pair(retina, distill_losses=dict(x=dict(type='SDDLoss'))))
    with pytest.raises(ValueError, match=r'\(KDLoss\) cannot .* RetinaHead: set use_sigmoid=True'):
        MODELS.build(light_pair(retina, distill_losses=dict(kd=dict(type='KDLoss'))))
    softmax = light_pair(retina)
    softmax['student'].bbox_head.loss_cls = dict(type='CrossEntropyLoss', use_sigmoid=False)
    with pytest.raises(TypeError, match='student head RetinaHead is not supported'):
        MODELS.build(softmax)
    two_stage = no_pretrained(get_config('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py').model)
    with pytest.raises(TypeError, match='teacher must be an mmdet SingleStageDetector'):
        MODELS.build(dict(light_pair(retina), teacher=two_stage))


def test_mismatched_teacher_is_refused(tmp_path):
    retina = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
    cases = {
        'classes': dict(num_classes=5),
        r'anchors per location \(num_base_priors\): 9 .* vs 12':
            dict(anchor_generator=dict(ratios=[0.5, 1.0, 2.0, 4.0])),
        'strides': dict(anchor_generator=dict(strides=[8, 16, 32, 64, 256])),
        'base anchors': dict(anchor_generator=dict(octave_base_scale=3)),
    }
    for what, head in cases.items():
        cfg = light_pair(retina)
        cfg['teacher'].bbox_head.update(head)
        with pytest.raises(ValueError, match=f'differ in {what}'):
            MODELS.build(cfg)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        MODELS.build(light_pair(retina, teacher_ckpt=str(tmp_path / 'missing.pth')))
