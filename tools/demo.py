"""mmkd in minutes on a CPU: teacher, baseline student and distilled student(s).

Generates the synthetic shapes dataset (COCO format), trains a Faster R-CNN
teacher (ResNet-50 FPN), then the same ResNet-18 FPN student without
distillation (the baseline) and with it (DIST by default: the method that
showed a clear gain on this data; ``--method rekd`` for the flagship ReKD, or
several methods at once), evaluates every model with mmdet's COCO metric and
prints a table (bbox mAP, change vs the baseline student in mAP points,
parameters, training time) and a few sentences computed from it: the gain or
loss of each distilled student, the share of the teacher-student gap it
closed, and that this is one seed (the accuracy benchmark measures seed
noise). ``demo.png`` plots the students' task losses, the distillation
loss(es) apart, and the mAPs. Every artefact lands in one work directory,
named at the end. All training goes through ``tools/train.py`` and
``tools/test.py``, as a user runs them. The models are trained from scratch
with :mod:`mmkd.recipes` (AdamW, 64-channel FPN); the distiller takes the
settings of ``configs/<method>/faster-rcnn_*.py``. The work directory defaults
to ``work_dirs/demo`` of the current directory, as ``tools/train.py``'s do.

    python tools/demo.py                        # DIST, ~8 min on 2 idle CPU cores
    python tools/demo.py --method rekd          # the flagship ReKD config instead
    python tools/demo.py --method dist rekd     # several distilled students, one table
    python tools/demo.py --method dkd --quick   # --quick: a smoke run of a few minutes
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
from mmkd.datasets import det_overrides, make_det  # noqa: E402
from mmkd.recipes import (  # noqa: E402
    adamw_schedule,
    distiller_settings,
    method_configs,
    scratch_detector,
    write_config,
)
from mmkd.resources import tools_dir  # noqa: E402

#: Every method with a Faster R-CNN config; the demo takes its distiller settings.
METHODS: Dict[str, str] = method_configs('*/faster-rcnn*_coco.py')
FASTER_RCNN = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
DEFAULT_METHOD = 'dist'
TEACHER, STUDENT = 'teacher (R50)', 'student (R18)'


def schedule(iters_per_epoch: int, epochs: int) -> dict:
    """AdamW with warm-up and cosine decay; a checkpoint at the end only."""
    return dict(**adamw_schedule(epochs, iters_per_epoch=iters_per_epoch),
                default_hooks=dict(logger=dict(interval=10),
                                   checkpoint=dict(interval=epochs)))


def run(args: List[str], log_path: str, label: str) -> float:
    """Runs ``tools/<args>``, mirroring its progress lines; returns the wall time."""
    start = time.time()
    with open(log_path, 'w') as log:
        tool = osp.join(tools_dir(), args[0])
        proc = subprocess.Popen([sys.executable, tool] + args[1:], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED='1'))
        for line in proc.stdout:
            log.write(line)
            m = re.search(r'Epoch\(train\)\s+\[(\d+)\]\[\s*(\d+)/(\d+)\].*?loss: ([0-9.]+)', line)
            if m:
                print(f'  [{label}] epoch {m[1]} iter {m[2]}/{m[3]} loss {m[4]} '
                      f'({time.time() - start:.0f}s)', flush=True)
        if proc.wait() != 0:
            raise RuntimeError(f'{label} failed; see {log_path}')
    return time.time() - start


def bbox_map(log_path: str) -> float:
    found = re.findall(r'coco/bbox_mAP:\s*([0-9.]+)', open(log_path).read())
    if not found:
        raise RuntimeError(f'no coco/bbox_mAP in {log_path}')
    return float(found[-1])


def train_log(work_dir: str) -> List[dict]:
    """The training rows of the run's ``scalars.json`` (the logged iterations, in order)."""
    files = sorted(
        osp.join(d, f) for d, _, fs in os.walk(work_dir) for f in fs if f == 'scalars.json')
    if not files:
        return []
    rows = [json.loads(line) for line in open(files[-1]) if line.strip()]
    return [r for r in rows if 'iter' in r and not any(k.startswith('coco/') for k in r)]


def loss_keys(rows: List[dict]) -> List[str]:
    """The logged ``loss_*`` keys (``loss`` itself, the total, is not one)."""
    return sorted({k for r in rows for k in r if k.startswith('loss_')})


def split_loss_keys(distilled: Sequence[str], baseline: Sequence[str],
                    declared: Sequence[str]) -> Dict[str, List[str]]:
    """The distilled student's loss keys: its own task losses and the distillation losses.

    ``declared`` are the keys the distiller says its losses add (its
    ``distill_loss_keys``, see :func:`build_info`); a key that the baseline student does
    not log is a distillation loss too.
    """
    distill = [k for k in distilled if k in declared or k not in baseline]
    return dict(task=[k for k in distilled if k not in distill], distill=distill)


def curves_of(rows: List[dict], keys: Dict[str, List[str]]) -> dict:
    """Per logged iteration: the task loss (sum of the task keys), each distillation loss."""
    rows = [r for r in rows if all(k in r for k in keys['task'] + keys['distill'])]
    return dict(iter=[r['iter'] for r in rows],
                task_loss=[sum(r[k] for k in keys['task']) for r in rows],
                distill_loss={k: [r[k] for r in rows] for k in keys['distill']},
                total_loss=[r.get('loss') for r in rows])


def build_info(cfg_path: str, student_only: bool) -> Tuple[int, List[str]]:
    """Builds a config's model: its parameters (the student's only if ``student_only``) and
    the loss keys its distillation losses add (the distiller's ``distill_loss_keys``)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmkd.registry import MODELS
    cfg = Config.fromfile(cfg_path)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    declared = [k for name in getattr(model, 'distill_losses', None) or {}
                for k in model.distill_loss_keys(name)]
    model = model.student if student_only else model
    return sum(p.numel() for p in model.parameters()), declared


def points(value: float) -> str:
    """A change of mAP (0-1) in mAP points with its sign: ``+1.9``, ``-0.4``, ``0.0``."""
    p = round(100 * value, 1)
    return '0.0' if p == 0 else f'{p:+.1f}'


def add_gains(results: List[dict]) -> None:
    """Adds ``gain_points`` (vs the baseline student) and, for the distilled
    students, ``gap_closed`` (the share of the teacher-student gap; ``None``
    when the teacher is not better than the student)."""
    teacher = next(r['bbox_mAP'] for r in results if r['model'] == TEACHER)
    student = next(r['bbox_mAP'] for r in results if r['model'] == STUDENT)
    gap = teacher - student
    for r in results:
        r['gain_points'] = round(100 * (r['bbox_mAP'] - student), 1)
        if r.get('method'):
            r['gap_closed'] = (r['bbox_mAP'] - student) / gap if gap > 0 else None


def table(results: List[dict]) -> str:
    lines = ['| model | bbox mAP | vs student (mAP points) | params (M) | training time (min) |',
             '|---|---|---|---|---|']
    for r in results:
        change = '(baseline)' if r['model'] == STUDENT else points(r['gain_points'] / 100)
        lines.append(f"| {r['model']} | {r['bbox_mAP']:.3f} | {change} | {r['params_M']:.1f} "
                     f"| {r['train_min']:.1f} |")
    return '\n'.join(lines)


def summary(results: List[dict], seed: int, quick: bool) -> str:
    """Plain sentences computed from the measured numbers: per distilled student its
    gain (or loss, or no change) over the baseline, the share of the teacher-student
    gap it closed, its training-time overhead; then what one seed can and cannot say."""
    teacher = next(r for r in results if r['model'] == TEACHER)
    student = next(r for r in results if r['model'] == STUDENT)
    gap = round(100 * (teacher['bbox_mAP'] - student['bbox_mAP']), 1)
    t_pts, s_pts = 100 * teacher['bbox_mAP'], 100 * student['bbox_mAP']
    out = []
    for r in (r for r in results if r.get('method')):
        g = r['gain_points']
        if g > 0:
            what = f'{points(g / 100)} mAP points over the same student trained alone'
        elif g < 0:
            what = f'{points(g / 100)} mAP points, below the same student trained alone'
        else:
            what = 'no change in mAP from the same student trained alone'
        s = f"{r['model']}: {what} (student {s_pts:.1f}, teacher {t_pts:.1f})"
        if gap > 0 and g > 0:
            s += f"; it closed {100 * r['gap_closed']:.0f}% of the {gap:.1f}-point gap " \
                 'between the student and the teacher'
        elif gap > 0 and g < 0:
            s += f"; the gap to the teacher grew from {gap:.1f} to {gap - g:.1f} points"
        elif gap <= 0:
            s += '; the teacher is not better than the student here, so there is no gap ' \
                 'to close'
        overhead = r['train_min'] / student['train_min'] - 1 if student['train_min'] else 0
        out.append(f'{s}. Training time {100 * overhead:+.0f}%.')
    methods = ' '.join(r['method'] for r in results if r.get('method'))
    out.append(f'One seed (--seed {seed}): whether a gain is beyond seed-to-seed noise is what '
               f'`python tools/analysis_tools/benchmark_accuracy.py --tasks det --methods '
               f'{methods}` measures (paired 95% confidence intervals over seeds).')
    if quick:
        out.append('--quick is a smoke run: too little training for these mAPs to mean '
                   'anything; run without --quick for the comparison.')
    return '\n'.join(out)


def plot(results: List[dict], curves: Dict[str, dict], out: str) -> Optional[str]:
    """Task loss of the students | distillation loss(es) of the distilled ones | mAPs."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    colors = ['#555555', '#4c72b0', '#dd8452', '#55a868', '#c44e52', '#8172b2', '#937860']
    color = {r['model']: colors[i % len(colors)] for i, r in enumerate(results)}
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
    for name, c in curves.items():
        ax1.plot(c['iter'], c['task_loss'], marker='.', label=name, color=color[name])
        for key, series in c['distill_loss'].items():
            label = f'{name}: {key}' if len(curves) > 2 or len(c['distill_loss']) > 1 else key
            ax2.plot(c['iter'], series, marker='.', label=label, color=color[name])
    ax1.set_xlabel('iteration')
    ax1.set_ylabel('sum of the detector\'s own loss_* terms')
    ax1.set_title('Task loss (the student\'s own losses)')
    ax1.legend()
    ax2.set_xlabel('iteration')
    ax2.set_ylabel('distillation loss (as added to the total)')
    ax2.set_title('Distillation loss (distilled student only)')
    if ax2.lines:
        ax2.legend()
    names = [r['model'] for r in results]
    bars = ax3.bar(names, [r['bbox_mAP'] for r in results], color=[color[n] for n in names])
    ax3.bar_label(bars, fmt='%.3f')
    ax3.set_ylabel('COCO bbox mAP (val)')
    ax3.set_title('Synthetic shapes, COCO metric')
    ax3.tick_params(axis='x', labelrotation=15)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: Optional[List[str]] = None) -> None:
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        epilog='Prints a table (bbox mAP, change vs the baseline student in mAP points, '
        'params, training time) and the gain of each distilled student in words; writes '
        'results.json, curves.json and demo.png in the work directory.')
    parser.add_argument('--method', nargs='+', default=[DEFAULT_METHOD], choices=sorted(METHODS),
                        metavar='METHOD',
                        help=f'distillation method(s), each with the settings of its Faster '
                        f'R-CNN config: {", ".join(sorted(METHODS))}; default '
                        f'{DEFAULT_METHOD} (the clear gain on this data); rekd: the flagship')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'))
    parser.add_argument('--epochs', type=int, default=None,
                        help='student epochs (teacher: 2x); default 5 (200 iterations; '
                        '8.3 min in all on 2 cores), 1 with --quick')
    parser.add_argument('--num-train', type=int, default=None)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--quick', action='store_true', help='a smoke run of a few minutes')
    args = parser.parse_args(argv)
    methods = list(dict.fromkeys(args.method))
    quick = args.quick
    epochs = args.epochs or (1 if quick else 5)
    num_train = args.num_train or (8 if quick else 160)
    num_val = 4 if quick else 48
    batch = 4
    work = osp.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    n_steps = 3 + len(methods)

    print(f'mmkd demo: method {" ".join(methods)}, work dir {work}', flush=True)
    info = make_det(osp.join(work, 'data'), num_train=num_train, num_val=num_val,
                    img_size=(128, 128), seed=args.seed)
    print(f'1/{n_steps} generated {num_train} + {num_val} shapes images (COCO format) in '
          f'{work}/data')
    num_classes = len(info['classes'])
    iters = -(-num_train // batch)
    data = det_overrides(info, scale=(128, 128), batch_size=batch, seed=args.seed)

    t_epochs = 2 * epochs
    teacher_model = scratch_detector(50, num_classes)
    teacher_cfg = write_config(osp.join(work, 'teacher.py'), FASTER_RCNN,
                               {**data, **schedule(iters, t_epochs), 'model': teacher_model})
    student_cfg = write_config(osp.join(work, 'student.py'), FASTER_RCNN,
                               {**data, **schedule(iters, epochs),
                                'model': scratch_detector(18, num_classes)})
    teacher_ckpt = osp.join(work, 'teacher', f'epoch_{t_epochs}.pth')
    stages = [('teacher', teacher_cfg, TEACHER, None),
              ('student', student_cfg, STUDENT, None)]
    for method in methods:
        settings = distiller_settings(METHODS[method])
        cfg = write_config(
            osp.join(work, f'distill_{method}.py'), student_cfg, {
                'custom_imports': dict(imports=['mmkd'], allow_failed_imports=False),
                'model': dict(_delete_=True, **settings, student=student_cfg,
                              teacher=teacher_cfg, teacher_ckpt=teacher_ckpt)
            })
        stages.append((f'distilled_{method}', cfg, f'student + {method}', method))

    results, curves, logs = [], {}, {}
    for i, (name, cfg, label, method) in enumerate(stages):
        sub = osp.join(work, name)
        n_ep = t_epochs if name == 'teacher' else epochs
        print(f'{i + 2}/{n_steps} training {label} for {n_ep} epochs ({iters} iterations '
              'each)', flush=True)
        train_s = run(['train.py', cfg, '--work-dir', sub],
                      osp.join(work, f'{name}_train.log'), label)
        run(['test.py', cfg, osp.join(sub, f'epoch_{n_ep}.pth'), '--work-dir', sub],
            osp.join(work, f'{name}_test.log'), label)
        logs[name] = train_log(sub)
        keys = loss_keys(logs[name])
        params, declared = build_info(cfg, method is not None)
        if method:
            split = split_loss_keys(keys, loss_keys(logs['student']), declared)
        else:
            split = dict(task=keys, distill=[])
        if name != 'teacher':
            curves[label] = curves_of(logs[name], split)
        results.append(dict(model=label, method=method,
                            bbox_mAP=bbox_map(osp.join(work, f'{name}_test.log')),
                            params_M=params / 1e6,
                            train_min=train_s / 60, loss_keys=split))
    add_gains(results)

    print('\n' + table(results) + '\n')
    print(summary(results, args.seed, quick))
    with open(osp.join(work, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    with open(osp.join(work, 'curves.json'), 'w') as f:
        json.dump(curves, f, indent=2)
    png = plot(results, curves, osp.join(work, 'demo.png'))
    cfgs = ', '.join(['teacher.py', 'student.py'] + [f'distill_{m}.py' for m in methods])
    print(f'\nEverything is in {work}: results.json, curves.json, '
          f'{"demo.png (task loss | distillation loss | mAP), " if png else ""}'
          f'configs ({cfgs}), logs and checkpoints.')


if __name__ == '__main__':
    main()
