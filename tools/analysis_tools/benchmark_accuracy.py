"""Accuracy of every distillation method on the synthetic shapes data, over seeds.

For each task (classification, semantic segmentation, detection) the same
protocol: generate the shapes dataset, train a larger teacher once, then train
the same small student without distillation (the baseline) and with every
method that has a shipped config for the task, once per seed. Each method
keeps the distiller settings of its config (``configs/<method>/...``: loss
type, temperature, weights); only models, data and schedule are the small
from-scratch ones of :mod:`mmkd.recipes`. Writes, in the work directory
(default ``work_dirs/benchmark_accuracy`` of the current directory),
``results.jsonl`` (one line per run; a re-run skips what is there),
``benchmark_accuracy.md`` (mean and standard deviation over seeds, the gain
over the baseline, the seeds on which a method beat the baseline) and
``benchmark_accuracy.png``. The default run covers classification (3 seeds)
and detection (2 seeds); segmentation runs with ``--tasks seg`` but learns
background only at this budget (see ``SEG_NOTE``).

    python tools/analysis_tools/benchmark_accuracy.py            # ~1 h on 2 CPU cores
    python tools/analysis_tools/benchmark_accuracy.py --quick    # a few minutes
    python tools/analysis_tools/benchmark_accuracy.py --tasks det --methods rekd kd --seeds 5
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import os.path as osp
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
from mmkd.datasets import (  # noqa: E402
    cls_overrides,
    det_overrides,
    make_cls,
    make_det,
    make_seg,
    seg_overrides,
)
from mmkd.recipes import (  # noqa: E402
    adamw_schedule,
    distiller_settings,
    method_configs,
    scratch_detector,
    write_config,
)


@dataclass
class Task:
    """One task of the benchmark.

    Attributes:
        name: ``cls``, ``seg`` or ``det``.
        title: Its heading in the report.
        metric: The evaluator's key of the reported metric.
        scale: Factor from the metric to the reported number (100 for %).
        unit: The reported number's name.
        pattern: Glob of the method configs whose distiller settings are used, relative
            to the configs folder (:func:`mmkd.recipes.method_configs`).
        base: The config the teacher and the student inherit.
        make: ``make(work, quick) -> dict(info, data, length, iters_per_epoch)``: the
            generated data, its config overrides, the student's epochs (iterations
            if not ``by_epoch``) and the iterations of one epoch.
        model: ``model(role, info) -> model override`` for ``teacher`` / ``student``.
        by_epoch: Epoch-based training loop.
    """
    name: str
    title: str
    metric: str
    scale: float
    unit: str
    pattern: str
    base: str
    make: Callable[[str, bool], dict]
    model: Callable[[str, dict], dict]
    by_epoch: bool = True


# --- classification: mmpretrain ImageNet ResNets, narrow, 32x32 shapes, 6 classes -----------
# (ResNet_CIFAR, without the stem's down-sampling, memorised 240 images here: 100% train,
# 24% validation accuracy; on 1,200 it stayed below 35%. The ImageNet ResNet on 4,000
# images generalises.)
CLS_WIDTH = {'teacher': (18, 32), 'student': (18, 8)}  # (depth, base channels)


def cls_data(work: str, quick: bool) -> dict:
    num_train = 240 if quick else 4000
    info = make_cls(osp.join(work, 'data'), num_train=num_train, num_val=600,
                    img_size=(32, 32), seed=0)
    data = cls_overrides(info, size=32, batch_size=32)
    return dict(info=info, data=data, length=1 if quick else 6,
                iters_per_epoch=-(-num_train // 32))


def cls_model(role: str, info: dict) -> dict:
    depth, width = CLS_WIDTH[role]
    return dict(backbone=dict(depth=depth, stem_channels=width, base_channels=width),
                head=dict(num_classes=len(info['classes']), in_channels=width * 8, topk=(1, )))


# --- segmentation: PSPNet ResNetV1c-D8, 64x128 crops, 7 classes ----------------------------
SEG_DEPTH = {'teacher': 50, 'student': 18}


def seg_data(work: str, quick: bool) -> dict:
    info = make_seg(osp.join(work, 'data'), num_train=16 if quick else 400, num_val=50,
                    img_size=(64, 128), seed=0)
    iters = 20 if quick else 300
    data = seg_overrides(info, crop=(64, 128), scale=(128, 64), batch_size=4, max_iters=iters)
    return dict(info=info, data=data, length=iters, iters_per_epoch=1)


def seg_model(role: str, info: dict) -> dict:
    n = len(info['classes'])
    c4 = 512 if SEG_DEPTH[role] < 50 else 2048
    return dict(
        pretrained=None, data_preprocessor=dict(size=(64, 128)),
        backbone=dict(depth=SEG_DEPTH[role], norm_eval=False),
        decode_head=dict(in_channels=c4, channels=64, num_classes=n),
        auxiliary_head=dict(in_channels=c4 // 2, channels=32, num_classes=n))


# --- detection: Faster R-CNN FPN, 128x128 shapes, 6 classes --------------------------------
DET_DEPTH = {'teacher': 50, 'student': 18}


def det_data(work: str, quick: bool) -> dict:
    n = 16 if quick else 160
    info = make_det(osp.join(work, 'data'), num_train=n, num_val=48, img_size=(128, 128),
                    seed=0)
    data = det_overrides(info, scale=(128, 128), batch_size=4)
    return dict(info=info, data=data, length=1 if quick else 5, iters_per_epoch=-(-n // 4))


def det_model(role: str, info: dict) -> dict:
    return scratch_detector(DET_DEPTH[role], len(info['classes']))


TASKS: Dict[str, Task] = {
    t.name: t
    for t in (
        Task('cls', 'Classification (mmpretrain ResNet-18, width 32 -> width 8)',
             'accuracy/top1', 1.0, 'top-1 (%)', '*/resnet*_in1k.py',
             'mmpretrain::resnet/resnet18_8xb32_in1k.py', cls_data, cls_model),
        Task('seg', 'Semantic segmentation (mmseg PSPNet R50-D8 -> R18-D8, 64-channel heads)',
             'mIoU', 1.0, 'mIoU (%)', '*/pspnet_*_cityscapes.py',
             'mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py', seg_data,
             seg_model, by_epoch=False),
        Task('det', 'Detection (mmdet Faster R-CNN R50-FPN -> R18-FPN, 64-channel FPN)',
             'coco/bbox_mAP', 100.0, 'bbox mAP (%)', '*/faster-rcnn*_coco.py',
             'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', det_data, det_model),
    )
}


#: Segmentation is not in the default run: within minutes per model, PSPNet trained from
#: scratch here predicts background only (teacher R50-D8 600 iterations, student R18-D8 300:
#: mIoU 13.46 = the background IoU / 7 classes; AdamW lr 3e-3 or an OHEM pixel sampler did not
#: change it), so no method can be compared. ``--tasks seg`` runs it.
SEG_NOTE = 'segmentation learns background only at this budget'
DEFAULT_TASKS = ['cls', 'det']


def plain_config(task: Task, setup: dict, role: str, work: str, length: int) -> str:
    """Writes the config of a teacher or a baseline student."""
    hooks = dict(logger=dict(interval=50), checkpoint=None)
    overrides = {
        **setup['data'],
        **adamw_schedule(length, by_epoch=task.by_epoch,
                         iters_per_epoch=setup['iters_per_epoch']),
        'default_hooks': hooks,
        'log_processor': dict(window_size=10),
        'model': task.model(role, setup['info']),
    }
    return write_config(osp.join(work, f'{role}.py'), task.base, overrides)


def distill_config(task: Task, method_cfg: str, student_cfg: str, teacher_cfg: str,
                   teacher_ckpt: str, path: str) -> str:
    """Writes the config of the student distilled with ``method_cfg``'s settings."""
    settings = distiller_settings(method_cfg)
    model = dict(_delete_=True, **settings, student=student_cfg)
    if 'LightSKD' in settings['type']:  # self-distillation: no teacher
        width = CLS_WIDTH['student'][1]
        model['aux_head'] = dict(settings['aux_head'], in_channels=width * 2 ** (
            settings.get('aux_stage', 1)))
    else:
        model.update(teacher=teacher_cfg, teacher_ckpt=teacher_ckpt)
    return write_config(path, student_cfg, {
        'custom_imports': dict(imports=['mmkd'], allow_failed_imports=False),
        'model': model
    })


def train_eval(config: str, work_dir: str, seed: int, name: str,
               save: Optional[str] = None) -> Dict[str, float]:
    """Trains ``config`` in this process, evaluates it once; returns the metrics.

    The run's own output (MMEngine's log, pycocotools' tables) goes to
    ``work_dir/run.log``; on failure its end is shown with the error.
    """
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(config)
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed)
    cfg.experiment_name = f'{name}_{time.time_ns()}'  # unique: no shared logger / scope
    os.makedirs(work_dir, exist_ok=True)
    log_path = osp.join(work_dir, 'run.log')
    with open(log_path, 'w') as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        try:
            runner = Runner.from_cfg(cfg)
            runner.train()
            metrics = runner.val_loop.run()
            if save:
                runner.save_checkpoint(osp.dirname(save), osp.basename(save),
                                       save_optimizer=False, save_param_scheduler=False)
        except Exception as e:
            log.flush()
            tail = open(log_path).read()[-3000:]
            raise RuntimeError(f'{name} failed: {e}\n--- end of {log_path} ---\n{tail}') from e
    return {k: float(v) for k, v in metrics.items()}


def run_task(task: Task, work: str, methods: Optional[Sequence[str]], seeds: Sequence[int],
             quick: bool, results_file: str, done: Dict[tuple, dict]) -> None:
    protocol = 'quick' if quick else 'default'
    work = osp.join(work, task.name)
    os.makedirs(work, exist_ok=True)
    setup = task.make(work, quick)
    configs = method_configs(task.pattern)
    chosen = [m for m in configs if not methods or m in methods]
    teacher_len = setup['length'] * 2
    teacher_cfg = plain_config(task, setup, 'teacher', work, teacher_len)
    student_cfg = plain_config(task, setup, 'student', work, setup['length'])
    teacher_ckpt = osp.join(work, 'teacher.pth')
    runs = [('teacher', 0, teacher_cfg)] + [(m, s, None) for s in seeds
                                            for m in ['baseline'] + chosen]
    for method, seed, cfg in runs:
        key = (protocol, task.name, method, seed)
        if key in done:
            continue
        if method == 'teacher' and osp.exists(teacher_ckpt):
            os.remove(teacher_ckpt)  # its result line was lost: train it again
        run_dir = osp.join(work, f'{method}_seed{seed}')
        if cfg is None:
            cfg = student_cfg if method == 'baseline' else distill_config(
                task, configs[method], student_cfg, teacher_cfg, teacher_ckpt,
                osp.join(work, f'{method}.py'))
        print(f'[{task.name}] {method} (seed {seed}) ...', end=' ', flush=True)
        start = time.time()
        metrics = train_eval(cfg, run_dir, seed, f'{task.name}_{method}_{seed}',
                             save=teacher_ckpt if method == 'teacher' else None)
        row = dict(task=task.name, method=method, seed=seed,
                   value=metrics[task.metric] * task.scale, protocol=protocol,
                   minutes=(time.time() - start) / 60, config=osp.relpath(cfg, work))
        print(f"{task.unit} {row['value']:.2f} ({row['minutes']:.1f} min)", flush=True)
        done[key] = row
        with open(results_file, 'a') as f:
            f.write(json.dumps(row) + '\n')


def summarise(rows: List[dict], tasks: Sequence[str]) -> str:
    """The Markdown report: one table per task."""
    out = []
    for name in tasks:
        task = TASKS[name]
        mine = [r for r in rows if r['task'] == name]
        if not mine:
            continue
        base = {r['seed']: r['value'] for r in mine if r['method'] == 'baseline'}
        base_mean = statistics.mean(base.values()) if base else float('nan')
        out += [f'### {task.title}', '',
                f'| method | {task.unit}: mean ± std | min - max | vs baseline | '
                'beats baseline | seeds | min / run |', '|---|---|---|---|---|---|---|']
        methods = list(dict.fromkeys(r['method'] for r in mine))
        for m in methods:
            vals = [r['value'] for r in mine if r['method'] == m]
            seeds = [r['seed'] for r in mine if r['method'] == m]
            mean = statistics.mean(vals)
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            wins = sum(1 for r in mine if r['method'] == m and r['seed'] in base and
                       r['value'] > base[r['seed']])
            gain = '' if m in ('teacher', 'baseline') else f'{mean - base_mean:+.2f}'
            beats = '' if m in ('teacher', 'baseline') else f'{wins}/{len(vals)}'
            minutes = statistics.mean(r['minutes'] for r in mine if r['method'] == m)
            out.append(f'| {m} | {mean:.2f} ± {std:.2f} | {min(vals):.2f} - {max(vals):.2f} | '
                       f'{gain} | {beats} | {len(seeds)} | {minutes:.1f} |')
        out.append('')
    return '\n'.join(out)


def plot(rows: List[dict], tasks: Sequence[str], path: str) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    tasks = [t for t in tasks if any(r['task'] == t for r in rows)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, name in zip(axes[0], tasks):
        mine = [r for r in rows if r['task'] == name]
        methods = [m for m in dict.fromkeys(r['method'] for r in mine) if m != 'teacher']
        vals = [[r['value'] for r in mine if r['method'] == m] for m in methods]
        means = [statistics.mean(v) for v in vals]
        stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in vals]
        colors = ['#4c72b0' if m == 'baseline' else '#dd8452' for m in methods]
        ax.bar(methods, means, yerr=stds, capsize=3, color=colors)
        for i, v in enumerate(vals):
            ax.scatter([i] * len(v), v, s=8, color='black', zorder=3)
        teacher = [r['value'] for r in mine if r['method'] == 'teacher']
        if teacher:
            ax.axhline(teacher[0], color='#555555', ls='--', lw=1, label='teacher')
            ax.legend(loc='lower right')
        lo = min(min(v) for v in vals)
        ax.set_ylim(bottom=max(0.0, lo - 0.3 * (max(means) - lo + 1e-6) - 1))
        ax.set_title(TASKS[name].title.split(' (')[0])
        ax.set_ylabel(TASKS[name].unit)
        ax.tick_params(axis='x', rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'benchmark_accuracy'))
    parser.add_argument('--tasks', nargs='+', default=DEFAULT_TASKS, choices=list(TASKS),
                        help=f'default: {" ".join(DEFAULT_TASKS)} (seg: see SEG_NOTE)')
    parser.add_argument('--methods', nargs='+', default=None,
                        help='method names (config folders); default: all of each task')
    parser.add_argument('--seeds', type=int, default=None,
                        help='student seeds per method; default 3 (cls, seg) / 2 (det), 1 '
                        'with --quick')
    parser.add_argument('--quick', action='store_true', help='a few minutes: short training')
    args = parser.parse_args(argv)
    warnings.filterwarnings('ignore')
    work = osp.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    results_file = osp.join(work, 'results.jsonl')
    done: Dict[tuple, dict] = {}
    if osp.exists(results_file):
        for line in open(results_file):
            r = json.loads(line)
            done[(r['protocol'], r['task'], r['method'], r['seed'])] = r
        print(f'{len(done)} runs already in {results_file}: skipping them')
    start = time.time()
    for name in args.tasks:
        seeds = args.seeds or (1 if args.quick else (2 if name == 'det' else 3))
        run_task(TASKS[name], work, args.methods, list(range(seeds)), args.quick,
                 results_file, done)
    protocol = 'quick' if args.quick else 'default'
    rows = [r for r in done.values() if r['protocol'] == protocol and r['task'] in args.tasks and
            (not args.methods or r['method'] in args.methods + ['teacher', 'baseline'])]
    report = summarise(rows, args.tasks)
    with open(osp.join(work, 'benchmark_accuracy.md'), 'w') as f:
        f.write(report)
    png = plot(rows, args.tasks, osp.join(work, 'benchmark_accuracy.png'))
    print('\n' + report)
    print(f'{(time.time() - start) / 60:.1f} min; results in {work}: results.jsonl, '
          f'benchmark_accuracy.md{", benchmark_accuracy.png" if png else ""}')


if __name__ == '__main__':
    main()
