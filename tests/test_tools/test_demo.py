"""The README's main job: tools/demo.py in its quick mode, through the real tools."""
import json
import os.path as osp
import sys

import pytest
from mmengine.config import Config

from mmkd.testing import run_tool

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', '..', 'tools'))
import demo  # noqa: E402

TASK_KEYS = ['loss_bbox', 'loss_cls', 'loss_rpn_bbox', 'loss_rpn_cls']


def rows(distilled_map, teacher_map=0.213):
    rs = [dict(model=demo.TEACHER, method=None, bbox_mAP=teacher_map, train_min=5.9,
               params_M=24.4),
          dict(model=demo.STUDENT, method=None, bbox_mAP=0.146, train_min=2.0, params_M=11.8),
          dict(model='student + dist', method='dist', bbox_mAP=distilled_map, train_min=2.3,
               params_M=11.8)]
    demo.add_gains(rs)
    return rs


def test_summary_follows_the_numbers():
    gain = demo.summary(rows(0.165), seed=0, quick=False)
    assert 'student + dist: +1.9 mAP points over the same student trained alone' in gain
    assert 'closed 28% of the 6.7-point gap' in gain and 'Training time +15%' in gain
    assert 'One seed (--seed 0)' in gain and 'benchmark_accuracy.py' in gain
    assert '-0.6 mAP points, below the same student' in demo.summary(rows(0.140), 0, False)
    assert 'no change in mAP' in demo.summary(rows(0.146), 0, False)
    assert 'no gap to close' in demo.summary(rows(0.150, teacher_map=0.1), 0, False)
    assert '| student + dist | 0.165 | +1.9 | 11.8 | 2.3 |' in demo.table(rows(0.165))
    split = demo.split_loss_keys(TASK_KEYS + ['loss_dist'], TASK_KEYS, ['loss_dist'])
    assert split == dict(task=TASK_KEYS, distill=['loss_dist'])
    # A declared key is a distillation loss even where the baseline logs the same name.
    split = demo.split_loss_keys(TASK_KEYS, TASK_KEYS, ['loss_cls'])
    assert split['distill'] == ['loss_cls'] and 'loss_cls' not in split['task']


@pytest.mark.slow
def test_demo_quick(tmp_path):
    work = str(tmp_path / 'demo')
    out = run_tool(['tools/demo.py', '--quick', '--seed', '1', '--work-dir', work], timeout=1200)
    rows = json.load(open(osp.join(work, 'results.json')))
    # The default method is DIST.
    assert [r['model'] for r in rows] == ['teacher (R50)', 'student (R18)', 'student + dist']
    for r in rows:
        assert 0.0 <= r['bbox_mAP'] <= 1.0 and r['train_min'] > 0
        assert r['gain_points'] == round(100 * (r['bbox_mAP'] - rows[1]['bbox_mAP']), 1)
    # The distilled model's parameters are the student's (the teacher is not counted).
    assert rows[1]['params_M'] == rows[2]['params_M'] < rows[0]['params_M']
    # The distiller's loss key is told apart from the student's own.
    assert rows[2]['loss_keys'] == dict(task=TASK_KEYS, distill=['loss_dist'])
    assert rows[1]['loss_keys'] == dict(task=TASK_KEYS, distill=[])
    assert '| model | bbox mAP | vs student (mAP points) | params (M) |' in out
    assert '| student + dist |' in out and '| student (R18) | ' in out
    assert 'student + dist: ' in out and 'the same student trained alone' in out
    assert 'One seed (--seed 1)' in out and f'Everything is in {work}' in out
    # --seed reaches every run (the data's and the training's seed).
    for name in ('teacher.py', 'student.py', 'distill_dist.py'):
        assert Config.fromfile(osp.join(work, name)).randomness == dict(seed=1), name
    curves = json.load(open(osp.join(work, 'curves.json')))
    assert set(curves) == {'student (R18)', 'student + dist'}
    for c in curves.values():
        assert len(c['task_loss']) == len(c['iter']) > 0
    assert curves['student (R18)']['distill_loss'] == {}
    assert len(curves['student + dist']['distill_loss']['loss_dist']) > 0
    assert osp.getsize(osp.join(work, 'demo.png')) > 10_000
    for name in ('teacher.py', 'student.py', 'distill_dist.py', 'teacher/epoch_2.pth'):
        assert osp.exists(osp.join(work, name)), name
