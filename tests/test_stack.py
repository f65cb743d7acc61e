"""The OpenMMLab stack that tools/install.sh sets up imports and computes correctly."""
import pytest
import torch


def test_versions():
    import mmcv
    import mmdet
    import mmengine
    import mmpretrain
    import mmseg
    import torchvision
    assert mmcv.__version__ == '2.1.0'
    assert mmengine.__version__ == '0.10.7'
    assert (mmdet.__version__, mmseg.__version__, mmpretrain.__version__) == ('3.3.0', '1.2.2',
                                                                             '1.2.0')
    assert torch.__version__.startswith('2.13.0')
    assert torchvision.__version__.startswith('0.28.0')


def test_mmcv_nms_hand_made():
    from mmcv.ops import nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.],
                          [0., 0., 10., 5.]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # IoU(box0, box1) = 81 / (100 + 100 - 81) = 0.68 > 0.5: box1 suppressed;
    # IoU(box0, box3) = 50 / 100 = 0.5, not > 0.5: box3 kept.
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2, 3]
    assert torch.allclose(dets[:, 4], torch.tensor([0.9, 0.7, 0.6]))
    _, keep = nms(boxes, scores, iou_threshold=0.7)
    assert keep.tolist() == [0, 1, 2, 3]


def test_mmcv_roi_align_hand_made():
    from mmcv.ops import RoIAlign
    feat = torch.arange(16.).view(1, 1, 4, 4)  # feat[y, x] = 4 y + x
    rois = torch.tensor([[0., 0., 0., 4., 4.], [0., 1., 1., 3., 3.]])
    out = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2, aligned=True)(feat, rois)
    # aligned=True shifts by -0.5: roi 0 covers [-0.5, 3.5]^2, bins of 2 px,
    # 2x2 samples at pixel centres {0, 1} / {2, 3}: each bin is the mean of a
    # 2x2 block, e.g. (0 + 1 + 4 + 5) / 4 = 2.5.
    assert torch.allclose(out[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    # roi 1 covers [0.5, 2.5]^2: bin (0, 0) samples at 0.75 and 1.25 in x and y,
    # bilinear values 4 y + x averaged: 4 * 1.0 + 1.0 = 5.0.
    assert torch.allclose(out[1, 0], torch.tensor([[5.0, 6.0], [9.0, 10.0]]))


def test_torchvision_ops_on_cpu():
    from torchvision.ops import nms
    keep = nms(torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.]]), torch.tensor([0.9, 0.8]),
               0.5)
    assert keep.tolist() == [0]


@pytest.mark.parametrize('scope,names', [
    ('mmdet', ['FasterRCNN', 'MaskRCNN', 'RetinaNet', 'StandardRoIHead', 'CocoDataset']),
    ('mmseg', ['EncoderDecoder', 'PSPHead', 'ASPPHead', 'BaseSegDataset']),
    ('mmpretrain', ['ImageClassifier', 'ResNet', 'MobileNetV2', 'CustomDataset']),
])
def test_task_packages_register_modules(scope, names):
    from mmengine.registry import DATASETS, MODELS, DefaultScope
    with DefaultScope.overwrite_default_scope(scope):
        for name in names:
            registry = DATASETS if name.endswith('Dataset') else MODELS
            with registry.switch_scope_and_registry(scope) as reg:
                assert reg.get(name) is not None, f'{scope} does not register {name}'


def test_mmkd_registries_are_children_of_mmengine():
    from mmengine.registry import MODELS as ROOT

    import mmkd
    assert mmkd.MODELS.parent is ROOT
    assert mmkd.MODELS.scope == 'mmkd'
    # Reachable with the scope prefix from the root, as configs use it.
    assert ROOT.get('mmkd.DistillLossScheduleHook') is None  # a hook, not a model
    from mmengine.registry import HOOKS
    assert HOOKS.get('mmkd.DistillLossScheduleHook') is not None


def test_import_mmkd_without_task_packages():
    """`import mmkd` must not import mmdet / mmseg / mmpretrain."""
    import subprocess
    import sys
    code = ('import sys, mmkd, mmkd.models; '
            'bad = [m for m in ("mmdet", "mmseg", "mmpretrain") if m in sys.modules]; '
            'assert not bad, bad')
    subprocess.run([sys.executable, '-c', code], check=True)
