"""tools/analysis_tools/benchmark_accuracy.py: its statistics by hand (t quantiles, paired
differences, confidence intervals, verdicts, the smallest detectable difference), the
scaling of the configs' loss schedules, the method discovery, the teacher's own schedule,
and the tool itself on classification in its quick mode (teacher, baseline, DKD with its
scaled warm-up, LightSKD)."""
import importlib.util
import json
import math
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


def _row(method, seed, value, minutes=1.0, **fingerprints):
    return dict(task='det', method=method, seed=seed, value=value, minutes=minutes,
                protocol='default', **fingerprints)


def test_t_quantile_known_values():
    tool = _load_tool()
    # Two-sided 95% critical values of the t tables, and the 80% one-sided ones.
    for df, t975, t80 in ((1, 12.706, 1.376), (2, 4.303, 1.061), (3, 3.182, 0.978),
                          (4, 2.776, 0.941), (9, 2.262, 0.883), (29, 2.045, 0.854)):
        assert tool.t_quantile(0.975, df) == pytest.approx(t975, abs=5e-4)
        assert tool.t_quantile(0.80, df) == pytest.approx(t80, abs=5e-4)
    # Closed forms: df=1 is Cauchy, tan(pi (p - 1/2)); df=2: (2p - 1) / sqrt(2 p (1 - p)).
    for p in (0.6, 0.8, 0.95, 0.975, 0.999):
        assert tool.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        assert tool.t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)),
                                                      rel=1e-9)
    assert tool.t_quantile(0.5, 7) == 0.0
    assert tool.t_quantile(0.025, 4) == pytest.approx(-tool.t_quantile(0.975, 4))
    assert tool.t_quantile(0.975, 10_000) == pytest.approx(1.95996, abs=1e-3)  # the normal's
    with pytest.raises(ValueError):
        tool.t_quantile(1.0, 3)
    try:
        from scipy import stats
    except ImportError:
        return
    for df in (1, 2, 3, 5, 8, 13, 30, 31, 60, 200):
        for p in (0.55, 0.8, 0.9, 0.975, 0.995):
            assert tool.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-6)


def test_paired_summary_by_hand():
    tool = _load_tool()
    # 3 seeds: differences 1, -1, 3; mean 1; sd sqrt((0 + 4 + 4) / 2) = 2;
    # CI 1 ± t(0.975, 2) * 2 / sqrt(3) = 1 ± 4.3027 * 1.1547 = 1 ± 4.9683 = [-3.968, 5.968]:
    # contains 0.
    p = tool.paired_summary({0: 10.0, 1: 12.0, 2: 14.0}, {0: 11.0, 1: 11.0, 2: 17.0})
    assert p['seeds'] == [0, 1, 2] and p['n'] == 3 and p['diffs'] == [1.0, -1.0, 3.0]
    assert p['mean'] == 1.0 and p['sd'] == pytest.approx(2.0) and p['wins'] == 2
    assert p['ci'] == pytest.approx((-3.9683, 5.9683), abs=1e-4)
    assert p['verdict'] == 'no detectable effect'
    # 4 seeds: differences 2, 1, 2, 3; mean 2; sd sqrt((0 + 1 + 0 + 1) / 3) = 0.8165;
    # CI 2 ± t(0.975, 3) * 0.8165 / 2 = 2 ± 3.1824 * 0.40825 = 2 ± 1.2992 = [0.701, 3.299] > 0.
    # The method's seed 7 has no baseline: not paired.
    p = tool.paired_summary({0: 10.0, 1: 12.0, 2: 14.0, 3: 11.0},
                            {0: 12.0, 1: 13.0, 2: 16.0, 3: 14.0, 7: 99.0})
    assert p['seeds'] == [0, 1, 2, 3] and p['mean'] == 2.0
    assert p['sd'] == pytest.approx(0.8165, abs=1e-4)
    assert p['ci'] == pytest.approx((0.7008, 3.2992), abs=1e-4) and p['verdict'] == 'helps'
    # 5 seeds: differences -2, -3, -1, -2, -2; mean -2; sd sqrt((0 + 1 + 1 + 0 + 0) / 4) = 0.7071;
    # CI -2 ± t(0.975, 4) * 0.7071 / sqrt(5) = -2 ± 2.7764 * 0.31623 = -2 ± 0.8780
    # = [-2.878, -1.122] < 0.
    p = tool.paired_summary({s: v for s, v in enumerate([10.0, 12.0, 14.0, 11.0, 13.0])},
                            {s: v for s, v in enumerate([8.0, 9.0, 13.0, 9.0, 11.0])})
    assert p['mean'] == -2.0 and p['sd'] == pytest.approx(0.7071, abs=1e-4)
    assert p['ci'] == pytest.approx((-2.8780, -1.1220), abs=1e-4) and p['verdict'] == 'hurts'
    # Missing seeds: pairs on the common seeds only (0 and 1; the baseline's 2, the method's 3
    # are left out): differences 2, 1; mean 1.5; sd 0.7071; CI 1.5 ± 12.7062 * 0.7071 / sqrt(2)
    # = 1.5 ± 6.3531.
    p = tool.paired_summary({0: 10.0, 1: 12.0, 2: 14.0}, {0: 12.0, 1: 13.0, 3: 9.0})
    assert p['seeds'] == [0, 1] and p['mean'] == 1.5
    assert p['ci'] == pytest.approx((-4.8531, 7.8531), abs=1e-4)
    # One pair: a difference, no sd, no interval, and the verdict says why (no NaN).
    p = tool.paired_summary({0: 10.0, 1: 12.0}, {0: 12.5, 5: 3.0})
    assert p['n'] == 1 and p['mean'] == 2.5 and p['sd'] is None and p['ci'] is None
    assert p['verdict'] == 'no CI: 1 seed'
    p = tool.paired_summary({0: 10.0}, {1: 12.0})
    assert p['n'] == 0 and p['mean'] is None and p['verdict'] == 'no CI: no common seed'


def test_min_detectable_difference_by_hand():
    tool = _load_tool()
    # (t(0.975, 2) + t(0.80, 2)) * 2 / sqrt(3) = (4.3027 + 1.0607) * 1.1547 = 6.1930
    assert tool.min_detectable_difference(2.0, 3) == pytest.approx(6.1930, abs=1e-4)
    # (t(0.975, 9) + t(0.80, 9)) * 1 / sqrt(10) = (2.2622 + 0.8834) / 3.1623 = 0.9947
    assert tool.min_detectable_difference(1.0, 10) == pytest.approx(0.9947, abs=1e-4)
    assert tool.min_detectable_difference(1.0, 1) is None
    # Pooled sd: sqrt(((3 - 1) * 2^2 + (2 - 1) * 0.7071^2) / (2 + 1)) = sqrt(8.5 / 3) = 1.6833;
    # a summary without an sd (one pair) adds nothing.
    summaries = [dict(n=3, sd=2.0), dict(n=2, sd=math.sqrt(0.5)), dict(n=1, sd=None)]
    assert tool.pooled_sd(summaries) == pytest.approx(1.6833, abs=1e-4)
    assert tool.pooled_sd([dict(n=1, sd=None)]) is None


def test_summary_report_by_hand():
    tool = _load_tool()
    fp = dict(student_init='a', train_data='b')
    rows = [_row('teacher', 0, 20.0, 4.0),
            _row('baseline', 0, 10.0, **fp), _row('baseline', 1, 12.0, **fp),
            _row('baseline', 2, 14.0, **fp),
            _row('kd', 0, 11.0, 2.0, **fp), _row('kd', 1, 11.0, 3.0, **fp),
            _row('kd', 2, 17.0, 4.0, student_init='c', train_data='b'),
            _row('rekd', 0, 12.0, **fp), _row('rekd', 1, 13.0, **fp), _row('rekd', 3, 9.0, **fp),
            _row('dist', 0, 15.0, **fp)]
    rows[4]['schedule'] = rows[5]['schedule'] = rows[6]['schedule'] = 'warm-up 1 ep'
    report = tool.summarise(rows, ['det'])
    lines = {line.split(' | ')[0].strip('| '): line for line in report.splitlines()
             if line.startswith('| ')}
    assert report.startswith('### Detection')
    assert lines['teacher'] == '| teacher | 20.00 ± 0.00 | 1 |  |  |  |  | 4.0 |'
    # baseline: mean 12, sample std sqrt(((-2)^2 + 0 + 2^2) / 2) = 2
    assert lines['baseline'] == '| baseline | 12.00 ± 2.00 | 3 |  |  |  |  | 1.0 |'
    # kd: mean 13, std sqrt((4 + 4 + 16) / 2) = 3.4641; paired differences 1, -1, 3: mean +1,
    # CI [-3.97, +5.97] (test_paired_summary_by_hand); higher than the baseline on seeds 0, 2.
    assert lines['kd'] == ('| kd | 13.00 ± 3.46 | 3 | +1.00 | -3.97 to +5.97 | '
                           'no detectable effect | 2/3 | 3.0 |')
    # rekd: mean of its 3 runs 11.33, std sqrt((0.667^2 + 1.667^2 + 2.333^2) / 2) = 2.08;
    # paired on seeds 0, 1 only (differences 2, 1): +1.50 ± 6.3531.
    assert lines['rekd'] == ('| rekd | 11.33 ± 2.08 | 3 | +1.50 | -4.85 to +7.85 | '
                             'no detectable effect | 2/2 | 1.0 |')
    # dist: one seed: the difference, and no interval.
    assert lines['dist'] == '| dist | 15.00 ± 0.00 | 1 | +5.00 | 1 seed | no CI | 1/1 | 1.0 |'
    # Smallest detectable difference: pooled sd of kd (n 3, sd 2) and rekd (n 2, sd 0.7071):
    # 1.6833 (test_min_detectable_difference_by_hand); n = 3 seeds:
    # (4.3027 + 1.0607) * 1.6833 / sqrt(3) = 5.21.
    assert 'Smallest detectable difference: 5.21 (bbox mAP; n = 3 seeds, pooled sd of the paired ' \
           'differences 1.68;' in report
    assert 'set to C - 1): kd (warm-up 1 ep).' in report
    # kd's seed 2 started from other weights than the baseline's seed 2: said so.
    assert 'do not share the initial student or the training batches of the baseline of their ' \
           'seed: kd seed 2.' in report
    # With one seed per method: no interval anywhere, said so.
    one = tool.summarise([_row('baseline', 0, 10.0), _row('kd', 0, 11.0)], ['det'])
    assert 'none with 1 paired seed(s) (needs 2 or more)' in one and 'nan' not in one.lower()


def test_schedule_scaling_by_hand(tmp_path):
    """A config's warm-up / stop of w epochs of E becomes round(w / E * length), at least 1."""
    from mmengine.config import Config
    tool = _load_tool()
    # DKD's ImageNet config: warm-up 1 of 100 epochs. On 6 epochs: 0.06 -> at least 1; on 300
    # iterations: 3; on 250: 2.5 -> 3 (half up).
    assert tool.scale_count(1, 100, 6) == 1
    assert tool.scale_count(1, 100, 300) == 3 and tool.scale_count(1, 100, 250) == 3
    # SDD's CIFAR-100 config: 20 of 200 epochs; on 6 epochs 0.6 -> 1, on 60: 6. No warm-up: 0.
    assert tool.scale_count(20, 200, 6) == 1 and tool.scale_count(20, 200, 60) == 6
    assert tool.scale_count(0, 100, 6) == 0
    # RTMDet's stop=281 of 300 epochs (280 distilled epochs): on 30 epochs 28 distilled -> 29;
    # a stop after the config's end (301) stays after the benchmark's (6 of 5 epochs).
    hook = tool.scaled_schedule_hook(dict(type='mmkd.DistillLossScheduleHook', stop=281), 300,
                                     30, True)
    assert hook == dict(type='mmkd.DistillLossScheduleHook', by_epoch=True, stop=29)
    assert tool.scaled_schedule_hook(dict(stop=301), 300, 5, True)['stop'] == 6
    # From a shipped config: its hook and train_cfg.max_epochs (DKD's ImageNet config, as
    # ls-dkd's, ReKD's, RLD's and SDD's; kd, dist, ls-kd and lightskd set no schedule: the
    # quick run below checks lightskd's); in an epoch-based benchmark and in an
    # iteration-based one (segmentation: 1% of 300 iterations).
    dkd = method_configs('*/resnet*_in1k.py')['dkd']
    assert tool.schedule_hooks(dkd, 6, True) == [
        dict(type='mmkd.DistillLossScheduleHook', by_epoch=True, warmup=1)]
    assert tool.schedule_hooks(dkd, 300, False) == [
        dict(type='mmkd.DistillLossScheduleHook', by_epoch=False, warmup=3)]
    # The distilled student's config gets it, after the student config's own custom hooks.
    student = tmp_path / 'student.py'
    student.write_text("custom_hooks = [dict(type='EMAHook')]\n")
    path = tool.distill_config(tool.TASKS['cls'], dkd, str(student), 'teacher.py',
                               'teacher.pth', str(tmp_path / 'dkd.py'), 6)
    assert Config.fromfile(path).custom_hooks == [
        dict(type='EMAHook'),
        dict(type='mmkd.DistillLossScheduleHook', by_epoch=True, warmup=1)]


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


def test_teacher_trains_on_its_own_schedule(tmp_path, monkeypatch):
    """The teacher's schedule is the setup's ``teacher_length``, not a multiple of the
    students' ``length``; every student (baseline and distilled) trains ``length``. The
    training itself is replaced by a recorder: only the written configs are checked."""
    from dataclasses import replace

    from mmengine.config import Config
    tool = _load_tool()
    cls = tool.TASKS['cls']
    task = replace(cls, make=lambda work, quick: {**cls.make(work, quick), 'length': 1,
                                                  'teacher_length': 3})
    trained = {}

    def fake_train_eval(config, work_dir, seed, name, save=None):
        trained[name] = Config.fromfile(config)
        return {task.metric: 0.5}, dict(student_init='s', train_data='d')

    monkeypatch.setattr(tool, 'train_eval', fake_train_eval)
    results = str(tmp_path / 'results.jsonl')
    tool.run_task(task, str(tmp_path), ['kd'], [0], True, results, {}, jobs=1)
    assert sorted(trained) == ['cls_baseline_0', 'cls_kd_0', 'cls_teacher_0']
    assert trained['cls_teacher_0'].train_cfg.max_epochs == 3
    assert trained['cls_baseline_0'].train_cfg.max_epochs == 1
    assert trained['cls_kd_0'].train_cfg.max_epochs == 1
    assert [json.loads(line)['method'] for line in open(results)] == ['teacher', 'baseline', 'kd']


@pytest.mark.slow
def test_quick_classification_run_and_resume(tmp_path):
    work = str(tmp_path / 'bench')
    args = [TOOL, '--quick', '--tasks', 'cls', '--methods', 'dkd', 'lightskd', '--work-dir',
            work]
    out = run_tool(args, timeout=1200)
    rows = [json.loads(line) for line in open(osp.join(work, 'results.jsonl'))]
    assert [(r['method'], r['seed']) for r in rows] == [('teacher', 0), ('baseline', 0),
                                                        ('dkd', 0), ('lightskd', 0)]
    for r in rows:
        assert 0.0 <= r['value'] <= 100.0 and r['minutes'] > 0 and r['protocol'] == 'quick'
    # The students of one seed start from the same weights and see the same batches (the
    # teacher's construction does not shift the student's initialisation).
    students = rows[1:]
    assert len({r['student_init'] for r in students}) == 1
    assert len({r['train_data'] for r in students}) == 1
    assert rows[0]['student_init'] != students[0]['student_init']  # the teacher's own
    # The distilled student takes its loss settings and its scaled warm-up from the shipped
    # config (DKD: 1 of 100 epochs -> 1 of the quick run's 1 epoch).
    distill_cfg = open(osp.join(work, 'cls', 'dkd.py')).read()
    assert "'type': 'DKDLoss'" in distill_cfg and "'beta': 0.5" in distill_cfg
    assert "'type': 'mmkd.DistillLossScheduleHook', 'by_epoch': True, 'warmup': 1" in distill_cfg
    assert rows[2]['schedule'] == 'warm-up 1 ep' and rows[3]['schedule'] == ''
    assert osp.exists(osp.join(work, 'cls', 'teacher.pth'))
    report = open(osp.join(work, 'benchmark_accuracy.md')).read()
    assert '| lightskd |' in report and '| baseline |' in report and report in out
    assert '| 1 seed | no CI | ' in report and 'none with 1 paired seed(s)' in report
    assert 'do not share' not in report
    assert osp.getsize(osp.join(work, 'benchmark_accuracy.png')) > 10_000
    # A second run finds every result and trains nothing.
    again = run_tool(args, timeout=600)
    assert '4 runs already in' in again and '[cls] dkd (seed 0)' not in again
    assert len(open(osp.join(work, 'results.jsonl')).readlines()) == 4


@pytest.mark.slow
def test_quick_segmentation_and_detection_in_parallel(tmp_path):
    """The quick mode of the two other tasks, two runs at a time (spawned processes): every
    run recorded once, the pairs of a seed start alike, the report covers both tasks."""
    work = str(tmp_path / 'bench')
    out = run_tool([TOOL, '--quick', '--tasks', 'seg', 'det', '--methods', 'kd', 'cwd',
                    '--jobs', '2', '--work-dir', work], timeout=1800)
    rows = [json.loads(line) for line in open(osp.join(work, 'results.jsonl'))]
    version = _load_tool().VERSION
    assert [(r['task'], r['method']) for r in rows] == [
        ('seg', 'teacher'), ('seg', 'baseline'), ('seg', 'cwd'), ('seg', 'kd'),
        ('det', 'teacher'), ('det', 'baseline'), ('det', 'kd')]  # no CWD config for det
    for task in ('seg', 'det'):
        students = [r for r in rows if r['task'] == task and r['method'] != 'teacher']
        assert len({r['student_init'] for r in students}) == 1
        assert len({r['train_data'] for r in students}) == 1
        assert all(0.0 <= r['value'] <= 100.0 and r['version'] == version for r in students)
    # The segmentation recipe: FCN heads, 3 shapes + background, lr 1e-2, the config's CWD.
    seg_cfg = open(osp.join(work, 'seg', 'cwd.py')).read()
    assert "'type': 'ChannelWiseDivergence'" in seg_cfg and "'loss_weight': 5.0" in seg_cfg
    student = open(osp.join(work, 'seg', 'student.py')).read()
    assert "mmseg::fcn/fcn_r18-d8" in student and "'lr': 0.01" in student
    assert "'num_classes': 4" in student
    report = open(osp.join(work, 'benchmark_accuracy.md')).read()
    assert '### Semantic segmentation' in report and '### Detection' in report
    assert report in out and '2 at a time' in out


def test_fit_to_classes_by_hand():
    """ReKD's top-k of a config made for 19 or 1000 classes, on fewer classes: k = C - 1 only
    where k >= C; other losses and settings untouched."""
    tool = _load_tool()
    settings = dict(type='mmkd.SegDistiller', distill_losses=dict(
        rekd=dict(type='ReKDLoss', k=5, alpha=1.0), kd=dict(type='KDLoss', temperature=1.0)))
    fitted, note = tool.fit_to_classes(settings, 4)
    assert fitted['distill_losses']['rekd'] == dict(type='ReKDLoss', k=3, alpha=1.0)
    assert fitted['distill_losses']['kd'] == settings['distill_losses']['kd']
    assert note == 'k 5 -> 3 of 4 classes' and settings['distill_losses']['rekd']['k'] == 5
    assert tool.fit_to_classes(settings, 6) == (settings, '')  # k = 5 < 6: kept
    assert tool.fit_to_classes(settings, 5)[1] == 'k 5 -> 4 of 5 classes'


@pytest.mark.slow
@pytest.mark.parametrize('task', ['cls', 'seg', 'det'])
def test_every_method_builds_on_the_benchmark_models(tmp_path, task):
    """Every method of every task, as the benchmark writes it (its settings fitted to the
    task's classes), builds on the benchmark's teacher and student (a random teacher here):
    no run of the default benchmark fails on a setting (ReKD's k=5 on the 4 segmentation
    classes did, before :func:`fit_to_classes`)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmkd.registry import MODELS
    tool = _load_tool()
    spec = tool.TASKS[task]
    setup = spec.make(str(tmp_path), True)
    teacher = tool.plain_config(spec, setup, 'teacher', str(tmp_path), 2)
    student = tool.plain_config(spec, setup, 'student', str(tmp_path), 1)
    num_logits = tool.LOGIT_CLASSES[task](len(setup['info']['classes']))
    methods = method_configs(spec.pattern)
    assert len(methods) >= 6
    for method, path in methods.items():
        cfg_path = tool.distill_config(spec, path, student, teacher, None,
                                       str(tmp_path / f'{method}.py'), 1, num_logits=num_logits)
        cfg = Config.fromfile(cfg_path)
        init_default_scope(cfg.get('default_scope', 'mmengine'))
        model = MODELS.build(cfg.model)
        assert model.distill_losses, method
        if method == 'rekd':
            assert model.distill_losses['rekd'].k == (3 if task == 'seg' else 5)


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
    # ResNets at width 32 by default; the FPN takes exactly the stage widths they give.
    assert model.backbone.conv1.out_channels == 32 and cfg.model.test_cfg.rpn.max_per_img == 300
    for depth in (18, 50):
        net = MODELS.build(Config.fromfile(write_config(
            str(tmp_path / f'r{depth}.py'), 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
            {'model': scratch_detector(depth, 6)})).model)
        with torch.no_grad():
            feats = net.backbone(torch.zeros(1, 3, 64, 64))
        assert [f.shape[1] for f in feats] == [c.conv.in_channels for c in net.neck.lateral_convs]
        assert feats[0].shape[1] == (32 if depth == 18 else 128)
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


@pytest.mark.parametrize('by_epoch', [True, False])
def test_schedule_does_not_validate_during_training(tmp_path, by_epoch):
    """adamw_schedule leaves the evaluation to the caller: MMEngine's loops validate after the
    last epoch / iteration whatever ``val_interval`` says (every benchmark run was evaluated
    twice), so the schedule must put ``val_begin`` past the end. A toy runner counts the
    validations of ``train()``."""
    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    from mmkd.recipes import adamw_schedule

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            out = self.w(inputs)
            return dict(loss=out.pow(2).mean()) if mode == 'loss' else [out]

    class Count(BaseMetric):
        calls = 0

        def process(self, data_batch, data_samples):
            self.results.append(0)

        def compute_metrics(self, results):
            Count.calls += 1
            return dict(n=len(results))

    loader = dict(dataset=[dict(inputs=torch.ones(2))] * 8, batch_size=4,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
    schedule = adamw_schedule(2 if by_epoch else 4, by_epoch=by_epoch, iters_per_epoch=2)
    train_cfg = dict(schedule['train_cfg'], **({} if by_epoch else dict(type='IterBasedTrainLoop')))
    if by_epoch:
        train_cfg['by_epoch'] = True
    runner = Runner(model=Toy(), work_dir=str(tmp_path), train_dataloader=loader,
                    val_dataloader=loader, val_evaluator=[Count()], val_cfg=dict(),
                    train_cfg=train_cfg,
                    optim_wrapper={k: v for k, v in schedule['optim_wrapper'].items()
                                   if k != '_delete_'},
                    param_scheduler=schedule['param_scheduler'],
                    default_hooks=dict(checkpoint=None, logger=None), default_scope='mmengine')
    runner.train()
    assert runner.train_loop.iter == 4 and Count.calls == 0
    assert runner.val_loop.run() == dict(n=2) and Count.calls == 1  # the caller's one (2 batches)
