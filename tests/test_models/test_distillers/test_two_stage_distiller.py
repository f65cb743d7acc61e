"""TwoStageDistiller: Faster / Mask R-CNN configs on generated COCO data (CPU, no downloads).

The shipped configs run with their real models (R50 student, R101 teacher)
and random weights. Speed (2 shared CPU cores): inputs are 64 x 64, the student
samples 64 RoIs per image from at most 100 proposals (``train_cfg.rcnn.sampler.num``
/ ``rpn_proposal.max_per_img``; the configs use 512 / 1000), and torch runs one
intra-op thread.
"""
import copy
import glob
import os.path as osp
from unittest import mock

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

from mmkd.datasets import det_overrides
from mmkd.models.distillers.sdd_roi import (
    double_res_extractor,
    roi_view_logits,
    roi_view_logits_reference,
)
from mmkd.models.losses import dkd_loss
from mmkd.recipes import no_pretrained
from mmkd.registry import MODELS
from mmkd.testing import ROOT

RCNN_CONFIGS = sorted(
    osp.relpath(p, ROOT) for pattern in ('faster-rcnn*_coco.py', 'mask-rcnn*_coco.py')
    for p in glob.glob(osp.join(ROOT, 'configs', '*', pattern)))
FASTER = 'configs/kd/faster-rcnn_r101_r50_coco.py'
MASK = 'configs/kd/mask-rcnn_r101_r50_coco.py'


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope_one_thread():
    """mmdet's registry scope; one intra-op thread (2 threads on 2 shared, busy
    cores are several times slower than 1)."""
    init_default_scope('mmdet')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def batch(det_data):
    """Two 64 x 64 training images with boxes and masks, as the dataloader gives them."""
    from mmdet.registry import DATASETS
    cfg = det_overrides(det_data, scale=(64, 64), with_mask=True)['train_dataloader']['dataset']
    cfg.pop('_delete_')
    dataset = DATASETS.build(cfg)
    return pseudo_collate([dataset[0], dataset[1]])


def model_cfg(path, **updates):
    """The config's distiller dict: no downloads, fewer RoIs (see the module doc)."""
    cfg = copy.deepcopy(Config.fromfile(osp.join(ROOT, path)).model)
    no_pretrained(cfg)
    cfg.teacher_ckpt = None
    cfg.student.train_cfg.rcnn.sampler.num = 64
    cfg.student.train_cfg.rpn_proposal.max_per_img = 100
    cfg.update(updates)
    return cfg


def teacher_dict(cfg):
    """A copy of the student's dict, as a teacher."""
    return copy.deepcopy(cfg.student)


def preprocess(distiller, batch):
    data = distiller.data_preprocessor(copy.deepcopy(batch), True)
    return data['inputs'], data['data_samples']


@pytest.mark.parametrize('path', RCNN_CONFIGS)
def test_config_builds_and_trains_one_step(path, batch):
    cfg = model_cfg(path)
    distiller = MODELS.build(cfg)
    assert distiller.teacher.backbone.depth == 101 and distiller.student.backbone.depth == 50
    teacher_state = copy.deepcopy(distiller.teacher.state_dict())
    student_before = copy.deepcopy(distiller.student.state_dict())
    distiller.train()
    optim = OptimWrapper(torch.optim.SGD(distiller.student.parameters(), lr=0.01))
    torch.manual_seed(0)
    log = distiller.train_step(copy.deepcopy(batch), optim)
    names = list(cfg.distill_losses)
    expected = {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'acc'}
    if 'mask' in path:
        expected.add('loss_mask')
    assert set(log) == expected | {'loss'} | {f'loss_{n}' for n in names}
    assert all(torch.isfinite(v) for v in log.values())
    assert all(log[f'loss_{n}'] >= 0 for n in names)
    # The teacher is frozen, in eval mode and untouched; the student learned.
    assert not distiller.teacher.training and distiller.student.training
    assert not any(p.requires_grad for p in distiller.teacher.parameters())
    assert all(torch.equal(v, teacher_state[k]) for k, v in distiller.teacher.state_dict().items())
    assert any(not torch.equal(v, student_before[k])
               for k, v in distiller.student.state_dict().items())


def test_student_losses_unchanged_and_teacher_logits_on_student_rois(batch):
    """Same RNG state: the distiller's student losses equal ``student.loss``; the
    teacher's logits in the loss are its own RoI head on the student's sampled
    RoIs; the teacher's RPN and losses never run."""
    mask_kd = dict(mask_kd=dict(type='KDLoss', use_sigmoid=True, temperature=1.0))
    distiller = MODELS.build(model_cfg(MASK, mask_distill_losses=mask_kd))
    distiller.train()
    inputs, data_samples = preprocess(distiller, batch)
    teacher, kd = distiller.teacher, distiller.distill_losses['kd']
    spies = {name: mock.patch.object(obj, attr, wraps=getattr(obj, attr)) for name, (obj, attr) in {
        'rois': (distiller.student.roi_head, '_bbox_forward'),
        'kd': (kd, 'forward'),
        'rpn_forward': (teacher.rpn_head, 'forward'),
        'rpn_loss_and_predict': (teacher.rpn_head, 'loss_and_predict'),
        'teacher_loss': (teacher, 'loss'),
        'teacher_roi_loss': (teacher.roi_head, 'loss'),
        'teacher_box_loss': (teacher.roi_head.bbox_head, 'loss_and_target'),
    }.items()}
    mocks = {name: spy.start() for name, spy in spies.items()}
    try:
        torch.manual_seed(0)
        losses = distiller.loss(inputs, data_samples)
    finally:
        for spy in spies.values():
            spy.stop()
    torch.manual_seed(0)
    reference = distiller.student.loss(inputs, data_samples)
    for key, value in reference.items():
        assert torch.equal(torch.stack(list(losses[key])) if isinstance(value, list) else
                           losses[key], torch.stack(value) if isinstance(value, list) else value)
    assert set(losses) - set(reference) == {'loss_kd', 'loss_mask_kd'}

    for name in ('rpn_forward', 'rpn_loss_and_predict', 'teacher_loss', 'teacher_roi_loss',
                 'teacher_box_loss'):
        assert mocks[name].call_count == 0, name
    rois = mocks['rois'].call_args.args[1]
    preds_s, preds_t, labels = mocks['kd'].call_args.args[:3]
    with torch.no_grad():
        own = teacher.roi_head._bbox_forward(teacher.extract_feat(inputs), rois)['cls_score']
    num_classes = teacher.roi_head.bbox_head.num_classes
    assert preds_s.shape == preds_t.shape == (rois.shape[0], num_classes + 1)
    torch.testing.assert_close(preds_t, own, rtol=0, atol=0)
    assert not preds_t.requires_grad and preds_s.requires_grad
    assert labels.shape == (rois.shape[0], ) and labels.dtype == torch.int64
    assert (labels == num_classes).any() and (labels < num_classes).any()  # background included
    assert torch.isfinite(losses['loss_mask_kd']) and losses['loss_mask_kd'] > 0


def test_same_weights_give_zero_distillation(batch):
    """A teacher with the student's weights (BN frozen: norm_eval) has its logits."""
    cfg = model_cfg(FASTER, distill_losses=dict(
        kd=dict(type='KDLoss', temperature=1.0), dkd=dict(type='DKDLoss', beta=0.25,
                                                           temperature=1.0),
        sdd=dict(type='SDDLoss', beta=0.25, temperature=1.0)))
    cfg.teacher = teacher_dict(cfg)
    distiller = MODELS.build(cfg)
    distiller.teacher.load_state_dict(distiller.student.state_dict())
    distiller.train()
    torch.manual_seed(0)
    losses = distiller.loss(*preprocess(distiller, batch))
    for name in ('loss_kd', 'loss_dkd', 'loss_sdd'):
        assert abs(float(losses[name])) < 1e-6, name
    assert losses['loss_cls'] > 0


def test_sdd_views(batch):
    """View 0 (2x2 average of a 14 x 14 RoIAlign with half the sampling ratio) is
    the ordinary 7 x 7 RoI feature; views 1-4 are the stride-2 subsamples."""
    cfg = model_cfg(FASTER, distill_losses=dict(sdd=dict(type='SDDLoss')))
    cfg.student.roi_head.bbox_roi_extractor.roi_layer.sampling_ratio = 2
    distiller = MODELS.build(cfg).eval()
    inputs, _ = preprocess(distiller, batch)
    roi_head = distiller.student.roi_head
    ext = distiller.view_extractors['student']
    assert ext.roi_layers[0].output_size == (14, 14) and ext.roi_layers[0].sampling_ratio == 1
    assert distiller.view_extractors['teacher'].roi_layers[0].sampling_ratio == 0  # adaptive
    rois = torch.tensor([[0, 4., 6., 40., 30.], [1, 10., 10., 60., 62.], [0, 0., 0., 8., 8.]])
    with torch.no_grad():
        x = distiller.student.extract_feat(inputs)
        views = roi_view_logits(ext, roi_head.bbox_head, x, rois)
        plain = roi_head._bbox_forward(x, rois)['cls_score']
        big = ext(x[:ext.num_inputs], rois)
        sub = roi_head.bbox_head(big[..., 1::2, 0::2])[0]
    assert views.shape == (3, roi_head.bbox_head.num_classes + 1, 5)
    torch.testing.assert_close(views[..., 0], plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(views[..., 4], sub)


def test_sdd_on_rois_is_the_equal_weight_mean_of_dkd_over_the_views(batch):
    """The spec: on RoI views the base loss is averaged over the five views with
    equal weights (no consistent / complementary weighting)."""
    cfg = model_cfg(FASTER, distill_losses=dict(sdd=dict(
        type='SDDLoss', alpha=1.0, beta=0.25, temperature=1.0, complementary_weight=2.0)))
    distiller = MODELS.build(cfg).train()
    inputs, samples = preprocess(distiller, batch)
    torch.manual_seed(3)
    got = distiller.loss(inputs, samples)['loss_sdd']
    torch.manual_seed(3)  # the same RoI sampling
    s = distiller.student_pass(inputs, samples)
    with torch.no_grad():
        views_s = roi_view_logits_reference(distiller.view_extractors['student'],
                                            distiller.student.roi_head.bbox_head, s.x, s.rois)
        x_t = distiller.teacher.extract_feat(distiller.teacher_inputs(inputs, samples))
        views_t = roi_view_logits_reference(distiller.view_extractors['teacher'],
                                            distiller.teacher.roi_head.bbox_head, x_t, s.rois)
    labels = s.labels[:, None].expand(-1, 5)
    hand = dkd_loss(views_s, views_t, labels, 1.0, 0.25, 1.0).mean(dim=1).mean()
    torch.testing.assert_close(got.detach(), hand, rtol=1e-5, atol=1e-6)


def test_background_only_and_empty_images_train_without_nan(batch):
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    cfg = model_cfg(MASK, distill_losses=dict(
        dkd=dict(type='DKDLoss', beta=0.25, temperature=1.0), rld=dict(type='RLDLoss'),
        rekd=dict(type='ReKDLoss'), dist=dict(type='DISTLoss'), sdd=dict(type='SDDLoss')),
        mask_distill_losses=dict(mask_kd=dict(type='KDLoss', use_sigmoid=True)))
    distiller = MODELS.build(cfg)
    distiller.train()
    optim = OptimWrapper(torch.optim.SGD(distiller.student.parameters(), lr=0.01))

    def empty(sample):
        h, w = sample.metainfo['img_shape']
        sample.gt_instances = InstanceData(
            bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64),
            masks=BitmapMasks([], h, w))
        return sample

    one_empty = copy.deepcopy(batch)
    empty(one_empty['data_samples'][1])
    all_empty = copy.deepcopy(batch)
    for sample in all_empty['data_samples']:
        empty(sample)
    for data in (one_empty, all_empty):
        torch.manual_seed(0)
        log = distiller.train_step(data, optim)
        assert all(torch.isfinite(v) for v in log.values()), log
        assert all(torch.isfinite(p).all() for p in distiller.student.parameters())
    assert log['loss_mask_kd'] == 0 and log['loss_bbox'] == 0  # no positive RoI at all


def test_build_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        MODELS.build(model_cfg(FASTER, teacher_ckpt=str(tmp_path / 'missing.pth')))
    cfg = model_cfg(FASTER)
    bad = copy.deepcopy(cfg)
    bad.teacher = teacher_dict(cfg)
    bad.teacher.roi_head.bbox_head.num_classes = 5
    with pytest.raises(ValueError, match='student has 80 classes and the teacher 5'):
        MODELS.build(bad)
    retina = Config.fromfile(osp.join(ROOT, 'configs/kd/retinanet_r101_r50_coco.py')).model.student
    with pytest.raises(TypeError, match='teacher must be an mmdet TwoStageDetector'):
        MODELS.build(dict(cfg, teacher=no_pretrained(copy.deepcopy(retina))))
    with pytest.raises(ValueError, match='ignore_index=50, a RoI label'):
        MODELS.build(dict(cfg, distill_losses=dict(kd=dict(type='KDLoss', ignore_index=50))))
    with pytest.raises(ValueError, match='overwrite the student'):
        MODELS.build(dict(cfg, distill_losses=dict(cls=dict(type='KDLoss'))))
    with pytest.raises(TypeError, match='need a mask head'):
        MODELS.build(dict(cfg, mask_distill_losses=dict(m=dict(type='KDLoss', use_sigmoid=True))))
    mask = model_cfg(MASK)
    with pytest.raises(ValueError, match=r'\(KDLoss\) cannot distil the mask.*use_sigmoid=True'):
        MODELS.build(dict(mask, mask_distill_losses=dict(m=dict(type='KDLoss'))))


def test_double_res_extractor_refuses_other_extractors():
    roi_head = mock.Mock(bbox_roi_extractor=torch.nn.Identity(), with_shared_head=False)
    with pytest.raises(TypeError, match='SingleRoIExtractor'):
        double_res_extractor(roi_head)
