"""tools/analysis_tools/benchmark_distill.py: the teacher timer, and the tool on one
detection, one segmentation and one self-distillation config (generated data, CPU)."""
import importlib.util
import json
import os.path as osp
import time

import pytest
import torch
from torch import nn

from mmkd.testing import ROOT, run_tool

TOOL = 'tools/analysis_tools/benchmark_distill.py'


def _load_tool():
    spec = importlib.util.spec_from_file_location('benchmark_distill', osp.join(ROOT, TOOL))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Sleep(nn.Module):

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


def test_teacher_timer_counts_outermost_calls_once():
    tool = _load_tool()
    teacher = nn.Sequential(Sleep(0.05), nn.Sequential(Sleep(0.05), nn.Identity()))
    other = Sleep(0.1)
    timer = tool.TeacherTimer(teacher, 'cpu')
    teacher(torch.zeros(1))   # nested modules: 0.1 s, counted once
    teacher[1](torch.zeros(1))  # a submodule called directly: 0.05 s
    other(torch.zeros(1))     # not the teacher
    timer.remove()
    assert 0.15 <= timer.total < 0.2
    teacher(torch.zeros(1))
    assert timer.total < 0.2  # hooks removed


@pytest.mark.slow
@pytest.mark.parametrize('config,size,teacher', [
    ('configs/dist/retinanet_r101_r50_coco.py', 64, True),
    ('configs/kd/pspnet_r101_r18_cityscapes.py', 32, True),
    ('configs/lightskd/resnet_r18_in1k.py', 32, False),
])
def test_benchmark_json(config, size, teacher, tmp_path):
    out = str(tmp_path / 'bench.json')
    log = run_tool([TOOL, config, '--size', str(size), '--iters', '1', '--warmup', '0',
                    '--threads', '1', '--out', out], env=dict(OMP_NUM_THREADS='1'))
    with open(out) as f:
        result = json.load(f)
    assert json.loads(log[log.index('{'):log.rindex('}') + 1]) == result
    assert result['config'] == config and result['size'] == size and result['threads'] == 1
    s, t, d = result['student_step_s'], result['teacher_forward_s'], result['distill_step_s']
    assert s > 0 and d > 0 and (t > 0) == teacher and result['num_teachers'] == int(teacher)
    # The times are rounded to 1e-4 s in the JSON, the ratio (from unrounded
    # times) to 1e-3: recomputing it from the rounded times can differ by 1e-3.
    assert abs(result['ratio'] - d / (s + t)) <= 1.5e-3
    assert abs(result['distill_overhead_s'] - (d - s - t)) < 1e-3
    for role in ('student', 'distill'):
        memory = result['memory'][role]
        assert memory['peak_rss_mb'] > 100 and 0 < memory['step_extra_mb'] < memory['peak_rss_mb']
    # The distiller holds a teacher (or an auxiliary head): more resident memory.
    assert result['memory']['distill']['peak_rss_mb'] > result['memory']['student']['peak_rss_mb']


def test_refuses_a_plain_model_config(tmp_path):
    tool = _load_tool()
    cfg = tmp_path / 'plain.py'
    cfg.write_text("_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']\n")
    with pytest.raises(ValueError, match='not a distiller config'):
        tool.main([str(cfg)])
