"""mmkd in minutes on a CPU: teacher, baseline student and distilled student.

Generates the synthetic shapes dataset (COCO format), trains a Faster R-CNN
teacher (ResNet-50 FPN), then the same ResNet-18 FPN student twice, without
and with distillation (ReKD by default), evaluates all three with mmdet's COCO
metric, prints a table and writes a plot of the loss curves and the mAPs.
Every artefact lands in one work directory, named at the end. All training
goes through ``tools/train.py`` and ``tools/test.py``, as a user runs them.
The models are trained from scratch with :mod:`mmkd.recipes` (AdamW,
64-channel FPN); the distiller takes the settings of
``configs/<method>/faster-rcnn_*.py``. The work directory defaults to
``work_dirs/demo`` of the current directory, as ``tools/train.py``'s do.

    python tools/demo.py                      # ReKD, ~15 min on 2 CPU cores
    python tools/demo.py --method dkd --quick # any method; --quick: a smoke run
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
from typing import Dict, List, Optional

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


def loss_curve(work_dir: str, key: str = 'loss') -> List[float]:
    files = sorted(
        osp.join(d, f) for d, _, fs in os.walk(work_dir) for f in fs if f == 'scalars.json')
    if not files:
        return []
    rows = [json.loads(line) for line in open(files[-1])]
    return [r[key] for r in rows if key in r and 'iter' in r and 'coco/bbox_mAP' not in r]


def count_params(cfg_path: str, student_only: bool) -> int:
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmkd.registry import MODELS
    cfg = Config.fromfile(cfg_path)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    model = model.student if student_only else model
    return sum(p.numel() for p in model.parameters())


def plot(rows: List[dict], curves: Dict[str, List[float]], out: str) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, curve in curves.items():
        ax1.plot([10 * (i + 1) for i in range(len(curve))], curve, label=name)
    ax1.set_xlabel('iteration')
    ax1.set_ylabel('total training loss')
    ax1.set_title('Training loss')
    ax1.legend()
    names = [r['model'] for r in rows]
    maps = [r['bbox_mAP'] for r in rows]
    bars = ax2.bar(names, maps, color=['#555555', '#4c72b0', '#dd8452'])
    ax2.bar_label(bars, fmt='%.3f')
    ax2.set_ylabel('COCO bbox mAP (val)')
    ax2.set_title('Synthetic shapes, COCO metric')
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


def main(argv: Optional[List[str]] = None) -> None:
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--method', default='rekd', choices=sorted(METHODS))
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'))
    parser.add_argument('--epochs', type=int, default=None,
                        help='student epochs (teacher: 2x); default 8, 1 with --quick')
    parser.add_argument('--num-train', type=int, default=None)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--quick', action='store_true', help='a smoke run of a minute or two')
    args = parser.parse_args(argv)
    quick = args.quick
    epochs = args.epochs or (1 if quick else 8)
    num_train = args.num_train or (8 if quick else 160)
    num_val = 4 if quick else 48
    batch = 4
    work = osp.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)

    print(f'mmkd demo: method {args.method}, work dir {work}', flush=True)
    info = make_det(osp.join(work, 'data'), num_train=num_train, num_val=num_val,
                    img_size=(128, 128), seed=args.seed)
    print(f'1/4 generated {num_train} + {num_val} shapes images (COCO format) in {work}/data')
    num_classes = len(info['classes'])
    iters = -(-num_train // batch)
    data = det_overrides(info, scale=(128, 128), batch_size=batch)
    data['randomness'] = dict(seed=args.seed)

    t_epochs = 2 * epochs
    teacher_model = scratch_detector(50, num_classes)
    teacher_cfg = write_config(osp.join(work, 'teacher.py'), FASTER_RCNN,
                               {**data, **schedule(iters, t_epochs), 'model': teacher_model})
    student_cfg = write_config(osp.join(work, 'student.py'), FASTER_RCNN,
                               {**data, **schedule(iters, epochs),
                                'model': scratch_detector(18, num_classes)})
    teacher_ckpt = osp.join(work, 'teacher', f'epoch_{t_epochs}.pth')
    distill_cfg = write_config(
        osp.join(work, 'distill.py'), student_cfg, {
            'custom_imports': dict(imports=['mmkd'], allow_failed_imports=False),
            'model': dict(_delete_=True, **distiller_settings(METHODS[args.method]),
                          student=student_cfg, teacher=teacher_cfg, teacher_ckpt=teacher_ckpt)
        })

    results, curves, times = [], {}, {}
    stages = [('teacher', teacher_cfg, 'teacher (R50)'),
              ('student', student_cfg, 'student (R18)'),
              ('distilled', distill_cfg, f'student + {args.method}')]
    for i, (name, cfg, label) in enumerate(stages):
        sub = osp.join(work, name)
        n_ep = t_epochs if name == 'teacher' else epochs
        print(f'{i + 2}/4 training {label} for {n_ep} epochs ({iters} iterations each)',
              flush=True)
        times[name] = run(['train.py', cfg, '--work-dir', sub],
                          osp.join(work, f'{name}_train.log'), label)
        run(['test.py', cfg, osp.join(sub, f'epoch_{n_ep}.pth'), '--work-dir', sub],
            osp.join(work, f'{name}_test.log'), label)
        curves[label] = loss_curve(sub)
        results.append(dict(model=label, bbox_mAP=bbox_map(osp.join(work, f'{name}_test.log')),
                            params_M=count_params(cfg, name == 'distilled') / 1e6,
                            train_min=times[name] / 60))

    print('\n| model | bbox mAP | params (M) | training time (min) |')
    print('|---|---|---|---|')
    for r in results:
        print(f"| {r['model']} | {r['bbox_mAP']:.3f} | {r['params_M']:.1f} | "
              f"{r['train_min']:.1f} |")
    with open(osp.join(work, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    png = plot(results, curves, osp.join(work, 'demo.png'))
    print(f'\nEverything is in {work}: results.json, {"demo.png, " if png else ""}'
          'configs (teacher.py, student.py, distill.py), logs and checkpoints.')


if __name__ == '__main__':
    main()
