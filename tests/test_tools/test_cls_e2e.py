"""tools/ end to end on a classification distillation config and generated image folders.

train (with a teacher checkpoint the test saves) -> resume -> test -> extract the student
-> test the student alone with the student's own mmpretrain config: same predictions.
"""
import os.path as osp
import pickle
import re

import pytest
import torch

from mmkd.datasets import cls_overrides
from mmkd.models.distillers import build_model_from_cfg
from mmkd.recipes import write_config
from mmkd.testing import run_tool


def _metric(log: str, key: str) -> float:
    found = re.findall(re.escape(key) + r':\s*([0-9.]+)', log)
    assert found, f'{key} not in the output:\n{log[-3000:]}'
    return float(found[-1])


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=False)


@pytest.mark.slow
def test_dkd_train_resume_test_extract(cls_data, tmp_path):
    # A ResNet-34 teacher checkpoint (random weights, saved as a model-zoo file would be).
    torch.manual_seed(0)
    teacher = build_model_from_cfg('mmpretrain::resnet/resnet34_8xb32_in1k.py')
    teacher_ckpt = str(tmp_path / 'teacher.pth')
    torch.save(dict(state_dict=teacher.state_dict()), teacher_ckpt)

    overrides = cls_overrides(cls_data, size=32, batch_size=4, max_epochs=1)
    cfg = write_config(str(tmp_path / 'dkd.py'), 'configs/dkd/resnet_r34_r18_in1k.py',
                       dict(overrides, model=dict(teacher_ckpt=teacher_ckpt)))
    work = str(tmp_path / 'work')
    log = run_tool(['tools/train.py', cfg, '--work-dir', work])
    assert 'Epoch(train) [1][6/6]' in log  # 24 images, batch 4
    assert 'loss_dkd' in log and re.search(r'\bloss: ', log)
    assert 0.0 <= _metric(log, 'accuracy/top1') <= 100.0

    log = run_tool(['tools/train.py', cfg, '--work-dir', work, '--resume', '--cfg-options',
                    'train_cfg.max_epochs=2', 'train_cfg.val_interval=2'])
    assert 'resumed epoch: 1, iter: 6' in log
    assert 'Epoch(train) [2][6/6]' in log and 'Epoch(train) [1]' not in log
    ckpt = _load(osp.join(work, 'epoch_2.pth'))
    assert ckpt['meta']['epoch'] == 2 and ckpt['meta']['iter'] == 12
    # The teacher in the distillation checkpoint is exactly the loaded one.
    for k, v in teacher.state_dict().items():
        assert torch.equal(ckpt['state_dict'][f'teacher.{k}'], v), k

    log = run_tool(['tools/test.py', cfg, osp.join(work, 'epoch_2.pth'), '--work-dir', work,
                    '--out', str(tmp_path / 'distiller.pkl')])
    acc = _metric(log, 'accuracy/top1')

    student_ckpt = str(tmp_path / 'student.pth')
    log = run_tool(['tools/model_converters/extract_student.py',
                    osp.join(work, 'epoch_2.pth'), student_ckpt])
    assert 'student tensors' in log
    state = _load(student_ckpt)['state_dict']
    assert state and not any(k.startswith(('teacher.', 'student.')) for k in state)

    # The plain mmpretrain student config loads it (strictly) and predicts the same.
    student_cfg = write_config(str(tmp_path / 'student_cfg.py'),
                               'mmpretrain::resnet/resnet18_8xb32_in1k.py', overrides)
    log = run_tool(['tools/test.py', student_cfg, student_ckpt, '--work-dir',
                    str(tmp_path / 'student_work'), '--out', str(tmp_path / 'student.pkl')])
    assert 'unexpected key' not in log and 'missing keys' not in log
    assert _metric(log, 'accuracy/top1') == acc
    with open(tmp_path / 'distiller.pkl', 'rb') as f:
        distilled = pickle.load(f)
    with open(tmp_path / 'student.pkl', 'rb') as f:
        alone = pickle.load(f)
    assert len(distilled) == len(alone) == 12
    for d, s in zip(distilled, alone):
        assert d['img_path'] == s['img_path']
        torch.testing.assert_close(d['pred_score'], s['pred_score'])
