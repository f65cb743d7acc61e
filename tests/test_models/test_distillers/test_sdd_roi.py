"""SDD views on RoIs: the cheap path (``roi_view_logits``) equals the definition
(``roi_view_logits_reference``: every view through the box head), logits and gradients.

Tiny Faster R-CNNs (ResNet-18, 16 FPN channels, box head fc width 32, 3 classes,
64 x 64 images) with ``finest_scale=8``, so that the RoIs fall on all four FPN levels.
"""
import copy
from unittest import mock

import pytest
import torch
from mmengine.hub import get_config
from mmengine.registry import init_default_scope
from torch import nn

from mmkd.models.distillers import sdd_roi
from mmkd.models.distillers.sdd_roi import (
    double_res_extractor,
    has_linear_first_fc,
    roi_view_logits,
    roi_view_logits_reference,
)
from mmkd.registry import MODELS
from mmkd.testing.batches import det_batch

SHARED4CONV = dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=8)


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope_one_thread():
    init_default_scope('mmdet')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_faster_rcnn(bbox_head=None, sampling_ratio=0):
    """mmdet's Faster R-CNN config, narrowed (see the module doc)."""
    model = copy.deepcopy(get_config('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py').model)
    model.backbone.update(depth=18, init_cfg=None)
    model.neck.update(in_channels=[64, 128, 256, 512], out_channels=16)
    model.rpn_head.update(in_channels=16, feat_channels=16)
    model.roi_head.bbox_roi_extractor.update(out_channels=16, finest_scale=8)
    model.roi_head.bbox_roi_extractor.roi_layer.sampling_ratio = sampling_ratio
    model.roi_head.bbox_head.update(in_channels=16, fc_out_channels=32, num_classes=3)
    model.roi_head.bbox_head.update(bbox_head or {})
    model.train_cfg.rcnn.sampler.num = 64
    model.train_cfg.rpn_proposal.max_per_img = 100
    return model


def random_rois(num, generator):
    """RoIs on two 64 x 64 images, some partly outside, a few of zero width."""
    xy = torch.rand(num, 2, generator=generator) * 70 - 5
    wh = torch.rand(num, 2, generator=generator) ** 2 * 90
    wh[:3, 0] = 0
    image = torch.randint(0, 2, (num, 1), generator=generator).float()
    return torch.cat([image, xy, xy + wh], 1)


def views_and_grads(fn, extractor, box_head, x, rois, weight):
    """``fn``'s view logits and the gradients of ``(logits * weight).sum()`` with
    respect to the FPN features and the box head's parameters."""
    for t in x:
        t.grad = None
    box_head.zero_grad(set_to_none=True)
    logits = fn(extractor, box_head, x, rois)
    (logits * weight).sum().backward()
    grads = {f'x{i}': torch.zeros_like(t) if t.grad is None else t.grad for i, t in enumerate(x)}
    grads.update({n: p.grad for n, p in box_head.named_parameters() if p.grad is not None})
    return logits.detach(), grads


@pytest.mark.parametrize('bbox_head, sampling_ratio, fast', [
    (None, 0, True), (None, 2, True), (SHARED4CONV, 0, False)])
def test_views_equal_the_reference(bbox_head, sampling_ratio, fast):
    """Logits and gradients (FPN features, box head) of the cheap path equal those of
    every view through the box head: Shared2FCBBoxHead with the adaptive and an even
    sampling ratio, and a box head with convs (the generic path)."""
    torch.manual_seed(0)
    model = MODELS.build(tiny_faster_rcnn(bbox_head, sampling_ratio)).train()
    box_head, extractor = model.roi_head.bbox_head, double_res_extractor(model.roi_head)
    assert has_linear_first_fc(box_head) is fast
    g = torch.Generator().manual_seed(0)
    x = tuple(torch.randn(2, 16, 64 // s, 64 // s, generator=g, requires_grad=True)
              for s in (4, 8, 16, 32))
    rois = random_rois(60, g)
    levels = extractor.map_roi_levels(rois, 4)
    assert torch.bincount(levels, minlength=4).min() > 0  # every level has RoIs
    weight = torch.randn(60, 4, 5, generator=g)
    want, want_grads = views_and_grads(roi_view_logits_reference, extractor, box_head, x, rois,
                                       weight)
    with mock.patch.object(box_head.shared_fcs[-1], 'forward',
                           wraps=box_head.shared_fcs[-1].forward) as last_fc, \
            mock.patch.object(box_head.shared_fcs[0], 'forward',
                              wraps=box_head.shared_fcs[0].forward) as first_fc:
        got, got_grads = views_and_grads(roi_view_logits, extractor, box_head, x, rois, weight)
    assert got.shape == (60, 4, 5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert set(got_grads) == set(want_grads)
    for name, grad in got_grads.items():
        scale = want_grads[name].abs().max()
        torch.testing.assert_close(grad, want_grads[name], rtol=1e-5, atol=1e-5 * scale,
                                   msg=name)
    # the first fc runs on views 1-4 only (4 rows per RoI), the last on all five views
    first_rows = sum(c.args[0].shape[:-1].numel() for c in first_fc.call_args_list)
    last_rows = sum(c.args[0].shape[:-1].numel() for c in last_fc.call_args_list)
    assert (first_rows, last_rows) == ((4 * 60, 5 * 60) if fast else (5 * 60, 5 * 60))


def test_sdd_loss_and_student_gradients_equal_the_reference():
    """The distiller's SDD loss and the student's gradients (every parameter) are those
    of the reference views, in the student and in the teacher."""
    torch.manual_seed(0)
    distiller = MODELS.build(dict(
        type='mmkd.TwoStageDistiller', student=tiny_faster_rcnn(), teacher=tiny_faster_rcnn(),
        distill_losses=dict(sdd=dict(type='SDDLoss', ignore_index=None)))).train()
    inputs, samples = det_batch()

    def loss_and_grads():
        distiller.student.zero_grad(set_to_none=True)
        torch.manual_seed(3)  # the same RoI sampling
        loss = distiller.loss(inputs, copy.deepcopy(samples))['loss_sdd']
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in distiller.student.named_parameters()
                               if p.grad is not None}

    with mock.patch.object(sdd_roi, 'roi_view_logits_reference',
                           wraps=roi_view_logits_reference) as reference:
        got, got_grads = loss_and_grads()
    assert reference.call_count == 0  # the cheap path ran
    path = 'mmkd.models.distillers.two_stage_distiller.roi_view_logits'
    with mock.patch(path, wraps=roi_view_logits_reference) as reference:
        want, want_grads = loss_and_grads()
    assert reference.call_count == 2  # student and teacher
    assert want > 0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    assert set(got_grads) == set(want_grads)
    for name, grad in got_grads.items():
        scale = want_grads[name].abs().max()
        torch.testing.assert_close(grad, want_grads[name], rtol=1e-5, atol=1e-5 * scale,
                                   msg=name)


def test_the_first_fc_shortcut_needs_a_linear_first_fc():
    """``fc(view 0) = mean of fc(views 1-4)`` only for a ConvFCBBoxHead with no shared
    convs, no average pooling, a plain nn.Linear first shared fc and its own forward;
    any other box head takes the generic path (every view through ``box_head``)."""
    from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead

    def head(**kwargs):
        cfg = dict(type='Shared2FCBBoxHead', in_channels=16, fc_out_channels=32,
                   num_classes=3, roi_feat_size=7)
        cfg.update(kwargs)
        return MODELS.build(cfg)

    assert has_linear_first_fc(head())
    assert not has_linear_first_fc(head(type='Shared4Conv1FCBBoxHead', conv_out_channels=8))
    assert not has_linear_first_fc(head(with_avg_pool=True))
    assert not has_linear_first_fc(head(type='ConvFCBBoxHead', num_cls_fcs=1,
                                        num_reg_fcs=1))  # no shared fc
    assert not has_linear_first_fc(MODELS.build(dict(type='BBoxHead', in_channels=16,
                                                     num_classes=3)))
    lora = head()
    lora.shared_fcs[0] = type('MyLinear', (nn.Linear, ), {})(16 * 49, 32)
    assert not has_linear_first_fc(lora)
    own = head()
    own.__class__ = type('OwnHead', (Shared2FCBBoxHead, ),
                         dict(forward=lambda self, x: Shared2FCBBoxHead.forward(self, x)))
    assert not has_linear_first_fc(own)
    # the generic path: all five views through the box head, equal to the reference
    extractor = double_res_extractor(MODELS.build(tiny_faster_rcnn()).roi_head)
    g = torch.Generator().manual_seed(1)
    x = tuple(torch.randn(2, 16, 64 // s, 64 // s, generator=g) for s in (4, 8, 16, 32))
    rois = random_rois(20, g)
    with mock.patch.object(own, 'forward', wraps=own.forward) as forward:
        got = roi_view_logits(extractor, own, x, rois)
    assert sum(c.args[0].shape[0] for c in forward.call_args_list) == 5 * 20
    torch.testing.assert_close(got, roi_view_logits_reference(extractor, own, x, rois))


@pytest.mark.parametrize('output_size, sampling_ratio, aligned', [
    (14, 0, True), (14, 1, True), ((6, 9), 3, True), (7, 2, False)])
def test_roi_align_grad_equals_mmcv_backward(output_size, sampling_ratio, aligned):
    """The separable RoIAlign gradient equals mmcv's CPU backward: RoIs inside, across
    and outside the map, of zero width, adaptive and fixed sampling ratios, the
    legacy (not aligned) mode."""
    from mmcv.ops import RoIAlign
    g = torch.Generator().manual_seed(2)
    feat = torch.randn(2, 8, 20, 23, generator=g, requires_grad=True)
    rois = random_rois(80, g) * torch.tensor([1., 1.4, 1.4, 1.4, 1.4])
    rois[3] = torch.tensor([1., -90., -90., -10., -20.])  # outside: no gradient
    layer = RoIAlign(output_size, 0.25, sampling_ratio, 'avg', aligned)
    out = sdd_roi.roi_align(layer, feat, rois)
    torch.testing.assert_close(out, layer(feat, rois), rtol=0, atol=0)  # mmcv's forward
    grad = torch.randn(out.shape, generator=g)
    want, = torch.autograd.grad(layer(feat, rois), feat, grad)
    got, = torch.autograd.grad(out, feat, grad)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * want.abs().max())
    # a few RoIs per step: the same
    small = sdd_roi.roi_align_grad(grad, rois, layer, feat.shape, chunk=1000)
    torch.testing.assert_close(small, want, rtol=1e-5, atol=1e-6 * want.abs().max())
    assert not sdd_roi.has_separable_grad(RoIAlign(7, 0.25, 0, 'max'), feat)
    assert not sdd_roi.has_separable_grad(layer, feat.double())
