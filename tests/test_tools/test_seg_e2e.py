"""tools/train.py, tools/test.py and extract_student.py on a segmentation distiller.

The shipped DIST PSPNet config runs on the generated shapes data with
``--cfg-options`` only, except for the teacher: it is named by a config string
(``mmseg::pspnet/pspnet_r101-d8...``) whose class count cannot be changed from
the command line, so a two-line teacher config file (7 classes, no
pretrained backbone) replaces it through ``model.teacher=<file>``.
"""
import os.path as osp
import pickle
import re

import pytest
import torch

from mmkd.datasets import seg_overrides
from mmkd.recipes import write_config
from mmkd.testing import cfg_options, run_tool

CONFIG = 'configs/dist/pspnet_r101_r18_cityscapes.py'
CROP = (64, 128)
SCALE = (128, 64)


def _metric(log: str, key: str) -> float:
    found = re.findall(re.escape(key) + r':\s*([0-9.]+)', log)
    assert found, f'{key} not in the output:\n{log[-3000:]}'
    return float(found[-1])


def data_options(info: dict) -> dict:
    """The Cityscapes dataloaders of the config, pointed at the generated data."""
    out = {}
    classes = '[' + ','.join(info['classes']) + ']'
    for loader, split in (('train_dataloader', 'train'), ('val_dataloader', 'val'),
                          ('test_dataloader', 'val')):
        out.update({
            f'{loader}.num_workers': 0,
            f'{loader}.persistent_workers': False,
            f'{loader}.dataset.type': 'BaseSegDataset',
            f'{loader}.dataset.data_root': osp.abspath(info['data_root']),
            f'{loader}.dataset.data_prefix.img_path': info['img_dir'].format(split=split),
            f'{loader}.dataset.data_prefix.seg_map_path': info['ann_dir'].format(split=split),
            f'{loader}.dataset.img_suffix': '.png',
            f'{loader}.dataset.seg_map_suffix': '.png',
            f'{loader}.dataset.metainfo.classes': classes,
        })
        if split == 'val':  # test pipeline: Resize is step 1
            out[f'{loader}.dataset.pipeline.1.scale'] = SCALE
    # train pipeline: RandomResize is step 2, RandomCrop step 3
    out['train_dataloader.dataset.pipeline.2.scale'] = SCALE
    out['train_dataloader.dataset.pipeline.3.crop_size'] = CROP
    return out


@pytest.mark.slow
def test_dist_pspnet_train_test_extract(seg_data, tmp_path):
    n = len(seg_data['classes'])
    teacher = write_config(
        str(tmp_path / 'teacher.py'),
        'mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
        dict(model=dict(pretrained=None, decode_head=dict(num_classes=n),
                        auxiliary_head=dict(num_classes=n))))
    options = dict(data_options(seg_data), **{
        'model.student.pretrained': None,
        'model.student.data_preprocessor.size': CROP,
        'model.student.decode_head.num_classes': n,
        'model.student.auxiliary_head.num_classes': n,
        'model.teacher': teacher,
        'model.teacher_ckpt': None,
        'train_cfg.max_iters': 2,
        'train_cfg.val_interval': 2,
        'default_hooks.checkpoint.interval': 2,
        'default_hooks.logger.interval': 1,
    })
    args = ['--cfg-options'] + list(cfg_options(options))
    work = str(tmp_path / 'work')
    log = run_tool(['tools/train.py', CONFIG, '--work-dir', work] + args)
    for key in ('decode.loss_ce', 'aux.loss_ce', 'loss_dist', 'loss_dist_aux'):
        assert re.search(re.escape(key) + r':\s*[0-9.]+', log), key
    assert 'nan' not in re.findall(r'loss\S*:\s*(\S+)', log)
    ckpt = osp.join(work, 'iter_2.pth')
    assert osp.isfile(ckpt)
    assert 0.0 <= _metric(log, 'mIoU') <= 100.0  # validation ran with mmseg's IoUMetric

    # tools/test.py on the distiller checkpoint: the student is evaluated.
    log = run_tool(['tools/test.py', CONFIG, ckpt, '--work-dir', str(tmp_path / 'test'),
                    '--out', str(tmp_path / 'distiller.pkl')] + args)
    miou = _metric(log, 'mIoU')

    # extract_student.py, then the student's own mmseg config loads it.
    student_ckpt = str(tmp_path / 'student.pth')
    out = run_tool(['tools/model_converters/extract_student.py', ckpt, student_ckpt])
    assert 'student tensors' in out
    state = torch.load(student_ckpt, map_location='cpu', weights_only=False)['state_dict']
    assert state and not any(k.startswith(('student.', 'teacher.')) for k in state)
    overrides = seg_overrides(seg_data, crop=CROP, scale=SCALE, max_iters=2)
    overrides['model'] = dict(pretrained=None, data_preprocessor=dict(size=CROP),
                              decode_head=dict(num_classes=n), auxiliary_head=dict(num_classes=n))
    student_cfg = write_config(str(tmp_path / 'student_cfg.py'),
                               'mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
                               overrides)
    log = run_tool(['tools/test.py', student_cfg, student_ckpt, '--work-dir',
                    str(tmp_path / 'test_student'), '--out', str(tmp_path / 'student.pkl')])
    assert 'do not match exactly' not in log and 'missing keys' not in log
    assert _metric(log, 'mIoU') == miou

    with open(tmp_path / 'distiller.pkl', 'rb') as f:
        by_distiller = pickle.load(f)
    with open(tmp_path / 'student.pkl', 'rb') as f:
        by_student = pickle.load(f)
    assert len(by_distiller) == len(by_student) == 4
    for a, b in zip(by_distiller, by_student):
        assert a['img_path'] == b['img_path']
        torch.testing.assert_close(a['seg_logits']['data'], b['seg_logits']['data'])
        assert torch.equal(a['pred_sem_seg']['data'], b['pred_sem_seg']['data'])
