"""tools/analysis_tools/benchmark_accuracy.py: its statistics by hand, the method discovery,
and the tool itself on classification in its quick mode (teacher, baseline, KD, LightSKD)."""
import importlib.util
import json
import os.path as osp
import sys

import pytest
import torch

from mmkd.recipes import distiller_settings, method_configs
from mmkd.resources import configs_dir, tools_dir
from mmkd.testing import run_tool

TOOL = 'tools/analysis_tools/benchmark_accuracy.py'


def _load_tool():
    path = osp.join(tools_dir(), 'analysis_tools', 'benchmark_accuracy.py')
    spec = importlib.util.spec_from_file_location('benchmark_accuracy', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def _row(method, seed, value, minutes=1.0):
    return dict(task='det', method=method, seed=seed, value=value, minutes=minutes,
                protocol='default')


def test_summary_statistics_by_hand():
    tool = _load_tool()
    rows = [_row('teacher', 0, 20.0, 4.0),
            _row('baseline', 0, 10.0), _row('baseline', 1, 12.0), _row('baseline', 2, 14.0),
            _row('kd', 0, 11.0, 2.0), _row('kd', 1, 11.0, 3.0), _row('kd', 2, 17.0, 4.0)]
    report = tool.summarise(rows, ['det'])
    lines = {line.split(' | ')[0].strip('| '): line for line in report.splitlines()
             if line.startswith('| ')}
    assert lines['teacher'] == '| teacher | 20.00 ± 0.00 | 20.00 - 20.00 |  |  | 1 | 4.0 |'
    # baseline: mean 12, sample std sqrt(((-2)^2 + 0 + 2^2) / 2) = 2
    assert lines['baseline'] == '| baseline | 12.00 ± 2.00 | 10.00 - 14.00 |  |  | 3 | 1.0 |'
    # kd: mean 13, std sqrt((4 + 4 + 16) / 2) = 3.4641; +1 over the baseline's mean; it
    # beats the baseline of the same seed on seeds 0 (11 > 10) and 2 (17 > 14), not on 1.
    assert lines['kd'] == '| kd | 13.00 ± 3.46 | 11.00 - 17.00 | +1.00 | 2/3 | 3 | 3.0 |'
    assert report.startswith('### Detection')


def test_method_discovery_names_and_settings():
    """A method is named by its config folder, and found in :func:`configs_dir` by default."""
    det = method_configs('*/faster-rcnn*_coco.py')
    assert sorted(det) == ['dist', 'dkd', 'kd', 'ls-kd', 'rekd', 'rld', 'sdd']
    assert det['ls-kd'] == osp.join(configs_dir(), 'ls-kd', 'faster-rcnn_r101_r50_coco.py')
    cls = method_configs('*/resnet*_in1k.py')
    assert {'lightskd', 'ls-kd', 'ls-dkd', 'sdd'} <= set(cls)
    assert cls['ls-dkd'].endswith('configs/ls-dkd/resnet_r34_r18_in1k.py')
    assert cls['ls-kd'].endswith('configs/ls-kd/resnet_r34_r18_in1k.py')
    seg = method_configs('*/pspnet_*_cityscapes.py')
    assert sorted(seg) == ['cwd', 'dist', 'dkd', 'kd', 'rekd', 'rld']
    # The benchmark takes a method's distiller settings, not its models or checkpoint.
    rekd = distiller_settings(det['rekd'])
    assert rekd['type'] == 'mmkd.TwoStageDistiller'
    assert rekd['distill_losses']['rekd']['k'] == 5
    assert not {'student', 'teacher', 'teacher_ckpt'} & set(rekd)


def test_method_discovery_in_another_folder(tmp_path):
    """``configs=`` searches another folder; ``_base_`` is skipped; two configs of one
    folder matching the pattern are an error (the folder is the name)."""
    for rel in ('kd/resnet_r34_r18_in1k.py', '_base_/resnet_x.py', 'ls-dkd/resnet_r34_r18_in1k.py',
                'ls-dkd/faster-rcnn_r101_r50_coco.py'):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text('')
    found = method_configs('*/resnet*.py', configs=str(tmp_path))
    assert found == {'kd': str(tmp_path / 'kd/resnet_r34_r18_in1k.py'),
                     'ls-dkd': str(tmp_path / 'ls-dkd/resnet_r34_r18_in1k.py')}
    (tmp_path / 'kd' / 'resnet_r50_r18_in1k.py').write_text('')
    with pytest.raises(ValueError, match='several configs of kd: resnet_r34_r18_in1k.py, '
                                         'resnet_r50_r18_in1k.py'):
        method_configs('*/resnet*.py', configs=str(tmp_path))


@pytest.mark.slow
def test_quick_classification_run_and_resume(tmp_path):
    work = str(tmp_path / 'bench')
    args = [TOOL, '--quick', '--tasks', 'cls', '--methods', 'kd', 'lightskd', '--work-dir', work]
    out = run_tool(args, timeout=1200)
    rows = [json.loads(line) for line in open(osp.join(work, 'results.jsonl'))]
    assert [(r['method'], r['seed']) for r in rows] == [('teacher', 0), ('baseline', 0),
                                                        ('kd', 0), ('lightskd', 0)]
    for r in rows:
        assert 0.0 <= r['value'] <= 100.0 and r['minutes'] > 0 and r['protocol'] == 'quick'
    # The distilled student takes its loss settings from the shipped config.
    distill_cfg = open(osp.join(work, 'cls', 'kd.py')).read()
    assert "'type': 'KDLoss'" in distill_cfg and "'loss_weight': 5.0" in distill_cfg
    assert osp.exists(osp.join(work, 'cls', 'teacher.pth'))
    report = open(osp.join(work, 'benchmark_accuracy.md')).read()
    assert '| lightskd |' in report and '| baseline |' in report and report in out
    assert osp.getsize(osp.join(work, 'benchmark_accuracy.png')) > 10_000
    # A second run finds every result and trains nothing.
    again = run_tool(args, timeout=600)
    assert '4 runs already in' in again and '[cls] kd (seed 0)' not in again
    assert len(open(osp.join(work, 'results.jsonl')).readlines()) == 4


def test_scratch_recipe_trains_every_layer(tmp_path):
    """The from-scratch detector: nothing frozen, BatchNorm in training mode, the set widths."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmkd.recipes import adamw_schedule, scratch_detector, write_config
    from mmkd.registry import MODELS
    path = write_config(str(tmp_path / 'det.py'),
                        'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
                        {'model': scratch_detector(18, 6), **adamw_schedule(5, iters_per_epoch=40)})
    cfg = Config.fromfile(path)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    model.train()
    assert all(p.requires_grad for p in model.parameters())
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.training for m in bns)
    assert model.neck.fpn_convs[0].conv.out_channels == 64
    assert model.roi_head.bbox_head.fc_cls.out_features == 7  # 6 classes + background
    assert model.rpn_head.prior_generator.base_sizes == [4, 8, 16, 32, 64]
    assert model.rpn_head.prior_generator.scales.tolist() == [4.0]
    # No validation while training; warm-up of min(50, 200 / 4) iterations, then cosine.
    assert cfg.train_cfg.val_interval == 6 and cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.param_scheduler[0].end == 50 and cfg.param_scheduler[1].T_max == 5


def test_a_failing_run_shows_its_log(tmp_path):
    """A run that fails says which, and shows the end of its own log."""
    tool = _load_tool()
    cfg = tmp_path / 'broken.py'
    cfg.write_text("model = dict(type='NoSuchModel')\n")
    with pytest.raises(RuntimeError, match=r'cls_kd_0 failed.*NoSuchModel') as info:
        tool.train_eval(str(cfg), str(tmp_path / 'run'), 0, 'cls_kd_0')
    assert str(tmp_path / 'run' / 'run.log') in str(info.value)
