"""The README's main job: tools/demo.py in its quick mode, through the real tools."""
import json
import os.path as osp

import pytest

from mmkd.testing import run_tool


@pytest.mark.slow
def test_demo_quick(tmp_path):
    work = str(tmp_path / 'demo')
    out = run_tool(['tools/demo.py', '--quick', '--method', 'rekd', '--work-dir', work],
                   timeout=1200)
    rows = json.load(open(osp.join(work, 'results.json')))
    assert [r['model'] for r in rows] == ['teacher (R50)', 'student (R18)', 'student + rekd']
    for r in rows:
        assert 0.0 <= r['bbox_mAP'] <= 1.0 and r['train_min'] > 0
    # The distilled model's parameters are the student's (the teacher is not counted).
    assert rows[1]['params_M'] == rows[2]['params_M'] < rows[0]['params_M']
    assert '| student + rekd |' in out and f'Everything is in {work}' in out
    assert osp.getsize(osp.join(work, 'demo.png')) > 10_000
    for name in ('teacher.py', 'student.py', 'distill.py', 'teacher/epoch_2.pth'):
        assert osp.exists(osp.join(work, name)), name
