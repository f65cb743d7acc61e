"""mmkd.utils.compat: every protected API of the stack that mmkd uses, checked against the pins.

When one of these fails after a version bump, re-read the wrapped code of that
package, adapt the entry in ``mmkd/utils/compat.py`` and update
``CHECKED_VERSIONS``.
"""
import inspect
from importlib.metadata import version

import pytest
import torch
from torch import nn

from mmkd.utils import compat


@pytest.mark.parametrize('package', sorted(compat.CHECKED_VERSIONS))
def test_installed_stack_is_the_checked_one(package):
    assert version(package) == compat.CHECKED_VERSIONS[package], (
        f'{package} {version(package)} is installed but mmkd/utils/compat.py was checked '
        f'against {compat.CHECKED_VERSIONS[package]}: re-check every entry that wraps it')


def params(fn):
    return list(inspect.signature(fn).parameters)


def test_protected_signatures_are_as_wrapped():
    from mmdet.models.roi_heads import StandardRoIHead
    from mmpretrain.models.heads import ClsHead
    assert params(StandardRoIHead._bbox_forward) == ['self', 'x', 'rois']
    assert params(StandardRoIHead._mask_forward)[:3] == ['self', 'x', 'rois']
    assert params(ClsHead._get_loss)[:3] == ['self', 'cls_score', 'data_samples']


def test_cls_head_loss_equals_the_public_loss():
    from mmpretrain.models.heads import LinearClsHead
    from mmpretrain.structures import DataSample
    torch.manual_seed(0)
    head = LinearClsHead(num_classes=5, in_channels=8)
    feats = (torch.randn(4, 8), )
    samples = [DataSample().set_gt_label(i % 5) for i in range(4)]
    expected = head.loss(feats, samples)
    got = compat.cls_head_loss(head, head(feats), samples)
    assert set(got) == set(expected) == {'loss'}
    torch.testing.assert_close(got['loss'], expected['loss'])


def test_roi_forwards_give_the_documented_outputs():
    from mmdet.models.roi_heads import StandardRoIHead
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')  # the heads build their parts in the default scope
    torch.manual_seed(0)
    roi_head = StandardRoIHead(
        bbox_roi_extractor=dict(type='SingleRoIExtractor', out_channels=4, featmap_strides=[4],
                                roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0)),
        bbox_head=dict(type='Shared2FCBBoxHead', in_channels=4, fc_out_channels=16,
                       roi_feat_size=7, num_classes=3),
        mask_roi_extractor=dict(type='SingleRoIExtractor', out_channels=4, featmap_strides=[4],
                                roi_layer=dict(type='RoIAlign', output_size=14,
                                               sampling_ratio=0)),
        mask_head=dict(type='FCNMaskHead', num_convs=1, in_channels=4, conv_out_channels=4,
                       num_classes=3))
    x = (torch.randn(1, 4, 16, 16), )
    rois = torch.tensor([[0, 0, 0, 30, 30], [0, 10, 10, 60, 50.]])
    box = compat.roi_bbox_forward(roi_head, x, rois)
    assert box['cls_score'].shape == (2, 4) and box['bbox_pred'].shape == (2, 12)
    assert box['bbox_feats'].shape == (2, 4, 7, 7)
    mask = compat.roi_mask_forward(roi_head, x, rois)
    assert mask['mask_preds'].shape == (2, 3, 28, 28)


@pytest.mark.parametrize('kind', ['mmdet', 'mmseg', 'mmpretrain', 'mmengine'])
def test_image_normalisation_of_every_preprocessor(kind):
    mean, std = [1., 2., 3.], [4., 5., 6.]
    if kind == 'mmdet':
        from mmdet.models import DetDataPreprocessor as Pre
        pre, plain = Pre(mean=mean, std=std, bgr_to_rgb=True), Pre()
    elif kind == 'mmseg':
        from mmseg.models import SegDataPreProcessor as Pre
        pre, plain = Pre(mean=mean, std=std, bgr_to_rgb=True), Pre()
    elif kind == 'mmpretrain':
        from mmpretrain.models import ClsDataPreprocessor as Pre
        pre, plain = Pre(mean=mean, std=std, to_rgb=True), Pre()
    else:
        from mmengine.model import ImgDataPreprocessor as Pre
        pre, plain = Pre(mean=mean, std=std, bgr_to_rgb=True), Pre()
    m, s, swaps = compat.image_normalisation(pre)
    assert m.flatten().tolist() == mean and s.flatten().tolist() == std and swaps
    assert compat.image_normalisation(plain) == (None, None, False)
    assert compat.image_normalisation(nn.Identity()) == (None, None, False)
