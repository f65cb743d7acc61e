"""tools/train.py and tools/test.py run real mmdet, mmseg and mmpretrain configs.

Each config is the task package's own, pointed at the generated data with a
small input size and no pretrained weights (nothing is downloaded).
"""
import glob
import os.path as osp
import re

import pytest
import torch

from mmkd.datasets import cls_overrides, det_overrides, seg_overrides
from mmkd.recipes import write_config
from mmkd.testing import run_tool


def _metric(log: str, key: str) -> float:
    found = re.findall(re.escape(key) + r':\s*([0-9.]+)', log)
    assert found, f'{key} not in the output:\n{log[-3000:]}'
    return float(found[-1])


@pytest.fixture(scope='module')
def faster_rcnn_cfg(det_data, tmp_path_factory):
    overrides = det_overrides(det_data, scale=(128, 128), batch_size=2, max_epochs=1)
    overrides['model'] = dict(backbone=dict(init_cfg=None),
                              roi_head=dict(bbox_head=dict(num_classes=6)))
    return write_config(str(tmp_path_factory.mktemp('cfg') / 'faster_rcnn.py'),
                        'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', overrides)


@pytest.mark.slow
def test_mmdet_faster_rcnn_train_resume_test(faster_rcnn_cfg, tmp_path):
    work = str(tmp_path / 'work')
    log = run_tool(['tools/train.py', faster_rcnn_cfg, '--work-dir', work])
    assert 'Epoch(train) [1][4/4]' in log and 'loss_rpn_cls' in log and 'loss_bbox' in log
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
    _metric(log, 'coco/bbox_mAP')  # validation ran with the COCO metric

    # Resume: continues from epoch 1 to 2, through mmkd's safe loader (allowlist).
    log = run_tool(['tools/train.py', faster_rcnn_cfg, '--work-dir', work, '--resume',
                    '--cfg-options', 'train_cfg.max_epochs=2', 'train_cfg.val_interval=2'])
    assert 'resumed epoch: 1, iter: 4' in log
    assert 'Epoch(train) [2][4/4]' in log and 'Epoch(train) [1]' not in log
    ckpt = torch.load(osp.join(work, 'epoch_2.pth'), map_location='cpu', weights_only=False)
    assert ckpt['meta']['epoch'] == 2 and ckpt['meta']['iter'] == 8

    log = run_tool(['tools/test.py', faster_rcnn_cfg, osp.join(work, 'epoch_2.pth'),
                    '--work-dir', str(tmp_path / 'test'), '--out', str(tmp_path / 'res.pkl')])
    assert 0.0 <= _metric(log, 'coco/bbox_mAP') <= 1.0
    assert osp.isfile(tmp_path / 'res.pkl')


def test_runner_checkpoints_need_the_loader(tmp_path):
    """torch >= 2.6 refuses runner checkpoints by default; our loader reads them."""
    import pickle

    import numpy as np
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader

    from mmkd.utils import register_checkpoint_loader
    path = str(tmp_path / 'ckpt.pth')
    torch.save(dict(state_dict={'w': torch.ones(2)}, message_hub=HistoryBuffer([1.0], [1]),
                    meta=dict(seed=np.int64(3))), path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    register_checkpoint_loader()
    ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    assert ckpt['meta']['seed'] == 3 and torch.equal(ckpt['state_dict']['w'], torch.ones(2))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        CheckpointLoader.load_checkpoint(str(tmp_path / 'missing.pth'))


@pytest.mark.slow
def test_mmseg_pspnet_train_test(seg_data, tmp_path):
    overrides = seg_overrides(seg_data, crop=(64, 128), scale=(128, 64), max_iters=2)
    overrides['model'] = dict(pretrained=None, data_preprocessor=dict(size=(64, 128)),
                              decode_head=dict(num_classes=7), auxiliary_head=dict(num_classes=7))
    cfg = write_config(str(tmp_path / 'pspnet.py'),
                       'mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py', overrides)
    work = str(tmp_path / 'work')
    # torchrun passes --local-rank=N (and sets LOCAL_RANK): both are accepted.
    log = run_tool(['tools/train.py', cfg, '--work-dir', work, '--local-rank=0'])
    assert 'decode.loss_ce' in log and 'aux.loss_ce' in log
    assert 'Iter(train) [2/2]' in log
    log = run_tool(['tools/test.py', cfg, osp.join(work, 'iter_2.pth'), '--work-dir', work],
                   env=dict(LOCAL_RANK='0'))
    assert 0.0 <= _metric(log, 'mIoU') <= 100.0


@pytest.mark.slow
def test_mmpretrain_resnet_train_test(cls_data, tmp_path):
    overrides = cls_overrides(cls_data, size=32, batch_size=8, max_epochs=1)
    overrides['model'] = dict(head=dict(num_classes=6))
    cfg = write_config(str(tmp_path / 'resnet.py'), 'mmpretrain::resnet/resnet18_8xb32_in1k.py',
                       overrides)
    work = str(tmp_path / 'work')
    log = run_tool(['tools/train.py', cfg, '--work-dir', work, '--local_rank', '0'])
    assert 'Epoch(train) [1][3/3]' in log
    ckpts = glob.glob(osp.join(work, 'epoch_1.pth'))
    assert ckpts
    log = run_tool(['tools/test.py', cfg, ckpts[0], '--work-dir', work])
    acc = _metric(log, 'accuracy/top1')
    assert 0.0 <= acc <= 100.0


@pytest.mark.slow
def test_test_tool_skips_the_teacher_checkpoint(cls_data, tmp_path):
    """Evaluating a distiller checkpoint never reads (or downloads) teacher_ckpt."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmkd.recipes import no_pretrained
    from mmkd.registry import MODELS
    overrides = cls_overrides(cls_data, size=32, batch_size=4)
    overrides['model'] = dict(teacher_ckpt='/nonexistent/teacher.pth')
    cfg_path = write_config(str(tmp_path / 'kd.py'), 'configs/kd/resnet_r34_r18_in1k.py',
                            overrides)
    cfg = Config.fromfile(cfg_path)
    cfg.model.teacher_ckpt = None
    init_default_scope(cfg.default_scope)
    model = MODELS.build(no_pretrained(cfg.model))
    torch.save(dict(state_dict=model.state_dict()), str(tmp_path / 'distiller.pth'))
    log = run_tool(['tools/test.py', cfg_path, str(tmp_path / 'distiller.pth'), '--work-dir',
                    str(tmp_path / 'work')])
    assert 0.0 <= _metric(log, 'accuracy/top1') <= 100.0
