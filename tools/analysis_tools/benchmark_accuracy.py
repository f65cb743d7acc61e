"""Accuracy of every distillation method on the synthetic shapes data, over seeds.

For each task (classification, semantic segmentation, detection) the same
protocol: generate the shapes dataset, train a larger teacher once (on a longer
schedule), then train the same small student without distillation (the
baseline) and with every method that has a shipped config for the task, once
per seed. Each method
keeps the distiller settings of its config (``configs/<method>/...``: loss
type, temperature, weights) and its ``DistillLossScheduleHook`` (warm-up /
stop), scaled to the benchmark's length (:func:`scale_count`); only models,
data and schedule are the small from-scratch ones of :mod:`mmkd.recipes`.

Pairing: runs of one seed share the student's initialisation and the order and
augmentation of its training batches. The seed is set again just before the
weights are initialised (:func:`paired_start`; without it the teacher's
construction consumed random numbers and the distilled students started from
other weights than the baseline of their seed), and every result line records
fingerprints of the initial student and of the training batches, which the
report checks.

Statistics (:func:`paired_summary`, :func:`min_detectable_difference`), per
task and method, over the n seeds that the method and the baseline share:

* paired difference d_s = method_s - baseline_s; its mean and sample sd;
* 95% confidence interval: mean(d) +/- t(0.975, n-1) * sd(d) / sqrt(n);
* verdict: "helps" if the whole interval is above 0, "hurts" if below,
  "no detectable effect" otherwise (no interval with n = 1);
* smallest detectable difference of the task (a two-sided 5% paired t-test
  with 80% power): (t(0.975, n-1) + t(0.80, n-1)) * sd_pooled / sqrt(n), with
  sd_pooled the pooled sd of the paired differences of all its methods
  (sqrt(sum((n_m - 1) sd_m^2) / sum(n_m - 1))) and n the seeds of the run.

t quantiles come from :func:`t_quantile` (no scipy needed).

Writes, in the work directory (default ``work_dirs/benchmark_accuracy`` of the
current directory), ``results.jsonl`` (one line per run; a re-run skips what
is there, lines of an earlier protocol version are ignored),
``benchmark_accuracy.md`` (per method: mean and standard deviation over seeds,
the paired difference to the baseline with its confidence interval and
verdict, the seeds on which it beat the baseline; per task: the smallest
detectable difference) and ``benchmark_accuracy.png``. The default run covers
classification, segmentation and detection (seeds: ``SEEDS``), two student runs
at a time (``--jobs``); ``--quick`` is a smoke run of KD and DIST, one seed.

    python tools/analysis_tools/benchmark_accuracy.py            # 66 min on 2 CPU cores
    python tools/analysis_tools/benchmark_accuracy.py --quick    # a few minutes
    python tools/analysis_tools/benchmark_accuracy.py --tasks det --methods rekd kd --seeds 5
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import os.path as osp
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
from mmkd.datasets import (  # noqa: E402
    cls_overrides,
    det_overrides,
    make_cls_fine,
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

#: Version of the protocol written into every result line; lines of another version are
#: ignored. 2: the student's initialisation is shared by the runs of a seed (paired_start),
#: the configs' DistillLossScheduleHook is applied (scaled). 3: segmentation that learns (FCN,
#: large shapes), classification data with confusable classes (make_cls_fine), runs in
#: parallel processes of cpu_count // jobs threads. 4: one evaluation per run (the training
#: loop no longer validates after its last epoch), detection ResNets at width 32 with 300 test
#: proposals, foreach AdamW, 10,000 classification validation images. 5: shorter student
#: schedules for segmentation (200 iterations) and detection (4 epochs), the teachers' kept
#: (500 iterations, 10 epochs; ``teacher_length``). Classification keeps 6 epochs: at 4 (measured)
#: the smallest detectable difference rose from 2.6 to 4.0 points of top-1.
VERSION = 5


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
        make: ``make(work, quick) -> dict(info, data, length, teacher_length,
            iters_per_epoch)``: the generated data, its config overrides, the student's
            and the teacher's epochs (iterations if not ``by_epoch``) and the iterations
            of one epoch.
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


# --- classification: mmpretrain ImageNet ResNets, narrow, 32x32, 20 confusable classes -------
# (make_cls_fine: 4 neighbouring colour families x 5 partly alike shapes, so that a teacher's
# soft labels carry class similarities. ResNet_CIFAR, without the stem's down-sampling,
# memorised 240 images of the 6-class set here: 100% train, 24% validation accuracy; the
# ImageNet ResNet on 4,000 images generalises. 10,000 validation images: two students that
# disagree on ~40% of the images differ by chance by sd sqrt(0.4 / n) = 0.63 points at
# n = 10,000 (1.4 at the earlier 2,000); an evaluation costs ~5 s.)
CLS_WIDTH = {'teacher': (18, 32), 'student': (18, 8)}  # (depth, base channels)


def cls_data(work: str, quick: bool) -> dict:
    num_train = 240 if quick else 4000
    info = make_cls_fine(osp.join(work, 'data'), num_train=num_train,
                         num_val=100 if quick else 10000, img_size=(32, 32), seed=0)
    data = cls_overrides(info, size=32, batch_size=32)
    return dict(info=info, data=data, length=1 if quick else 6,
                teacher_length=2 if quick else 12, iters_per_epoch=-(-num_train // 32))


def cls_model(role: str, info: dict) -> dict:
    depth, width = CLS_WIDTH[role]
    return dict(backbone=dict(depth=depth, stem_channels=width, base_channels=width),
                head=dict(num_classes=len(info['classes']), in_channels=width * 8, topk=(1, )))


# --- segmentation: FCN ResNetV1c-18-D8, narrow, 64x128 crops, 3 large shapes + background ---
# (PSPNet R50-D8 / R18-D8 with 64-channel heads, AdamW lr 1e-3, 7 classes of small shapes
# learnt background only here: mIoU 13.46 after 600 iterations. Measured to learn within
# minutes: 3 shape classes, radius 0.15-0.35 of the image height, AdamW lr 1e-2, FCN heads
# (faster and better than PSP heads at this size); the teacher ~55 mIoU, the student ~35,
# background-only ~22.)
SEG_WIDTH = {'teacher': 32, 'student': 16}  # ResNetV1c-18 stem / base channels


def seg_data(work: str, quick: bool) -> dict:
    info = make_seg(osp.join(work, 'data'), num_train=32 if quick else 400,
                    num_val=16 if quick else 200, img_size=(64, 128), num_classes=3,
                    radius=(0.15, 0.35), seed=0)
    iters = 20 if quick else 200
    data = seg_overrides(info, crop=(64, 128), scale=(128, 64), batch_size=8, max_iters=iters)
    return dict(info=info, data=data, length=iters, teacher_length=40 if quick else 500,
                iters_per_epoch=1, lr=1e-2)


def seg_model(role: str, info: dict) -> dict:
    n, w = len(info['classes']), SEG_WIDTH[role]
    return dict(
        pretrained=None, data_preprocessor=dict(size=(64, 128)),
        backbone=dict(stem_channels=w, base_channels=w, norm_eval=False),
        decode_head=dict(in_channels=8 * w, channels=2 * w, num_classes=n),
        auxiliary_head=dict(in_channels=4 * w, channels=w, num_classes=n))


# --- detection: Faster R-CNN FPN, 128x128 shapes, 6 classes --------------------------------
DET_DEPTH = {'teacher': 50, 'student': 18}


def det_data(work: str, quick: bool) -> dict:
    n = 16 if quick else 160
    info = make_det(osp.join(work, 'data'), num_train=n, num_val=8 if quick else 150,
                    img_size=(128, 128), seed=0)
    data = det_overrides(info, scale=(128, 128), batch_size=4)
    return dict(info=info, data=data, length=1 if quick else 4,
                teacher_length=2 if quick else 10, iters_per_epoch=-(-n // 4))


def det_model(role: str, info: dict) -> dict:
    return scratch_detector(DET_DEPTH[role], len(info['classes']))  # ResNets at width 32


TASKS: Dict[str, Task] = {
    t.name: t
    for t in (
        Task('cls', 'Classification (mmpretrain ResNet-18, width 32 -> width 8, 20 classes)',
             'accuracy/top1', 1.0, 'top-1 (%)', '*/resnet*_in1k.py',
             'mmpretrain::resnet/resnet18_8xb32_in1k.py', cls_data, cls_model),
        Task('seg', 'Semantic segmentation (mmseg FCN R18-D8, width 32 -> width 16)',
             'mIoU', 1.0, 'mIoU (%)', '*/pspnet_*_cityscapes.py',
             'mmseg::fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py', seg_data,
             seg_model, by_epoch=False),
        Task('det', 'Detection (mmdet Faster R-CNN R50-FPN -> R18-FPN, ResNets at width 32)',
             'coco/bbox_mAP', 100.0, 'bbox mAP (%)', '*/faster-rcnn*_coco.py',
             'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', det_data, det_model),
    )
}


DEFAULT_TASKS = ['cls', 'seg', 'det']
#: Student seeds per task in the default run (measured: 66 min in all on 2 cores, see the README).
SEEDS = {'cls': 5, 'seg': 3, 'det': 3}
#: The methods of ``--quick`` (a smoke run): two that every task has.
QUICK_METHODS = ('kd', 'dist')


# --- statistics ----------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for aa in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) +
                     b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t distribution with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (t_cdf inverted by
    bisection to ~1e-12; e.g. ``t_quantile(0.975, 2)`` = 4.3027)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f'p must be in (0, 1), got {p}')
    if not df > 0:
        raise ValueError(f'df must be > 0, got {df}')
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    while hi - lo > 1e-12 * hi:
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def paired_summary(baseline: Dict[int, float], method: Dict[int, float],
                   level: float = 0.95) -> Dict[str, Any]:
    """The paired difference ``method - baseline`` over the seeds both have.

    Args:
        baseline, method: ``seed -> value``.
        level: Confidence level of the interval. Defaults to 0.95.

    Returns:
        dict: ``seeds`` (the common seeds, sorted), ``n``, ``diffs``, ``mean``
        and ``sd`` of the differences (None without pairs / below 2 pairs),
        ``wins`` (pairs where the method is higher), ``ci`` (``(low, high)``:
        mean +/- t((1 + level) / 2, n - 1) * sd / sqrt(n); None below 2 pairs)
        and ``verdict``: ``helps`` (the whole interval above 0), ``hurts``
        (below 0), ``no detectable effect``, or why there is no interval.
    """
    seeds = sorted(set(baseline) & set(method))
    diffs = [method[s] - baseline[s] for s in seeds]
    n = len(diffs)
    out: Dict[str, Any] = dict(seeds=seeds, n=n, diffs=diffs, wins=sum(d > 0 for d in diffs),
                               mean=statistics.mean(diffs) if n else None, sd=None, ci=None)
    if n < 2:
        out['verdict'] = 'no CI: no common seed' if n == 0 else 'no CI: 1 seed'
        return out
    out['sd'] = statistics.stdev(diffs)
    half = t_quantile((1.0 + level) / 2.0, n - 1) * out['sd'] / math.sqrt(n)
    low, high = out['mean'] - half, out['mean'] + half
    out['ci'] = (low, high)
    out['verdict'] = 'helps' if low > 0 else 'hurts' if high < 0 else 'no detectable effect'
    return out


def pooled_sd(summaries: Sequence[Dict[str, Any]]) -> Optional[float]:
    """sqrt(sum((n - 1) sd^2) / sum(n - 1)) over :func:`paired_summary` results with an sd."""
    usable = [s for s in summaries if s['sd'] is not None]
    dof = sum(s['n'] - 1 for s in usable)
    if not dof:
        return None
    return math.sqrt(sum((s['n'] - 1) * s['sd']**2 for s in usable) / dof)


def min_detectable_difference(sd: float, n: int, alpha: float = 0.05,
                              power: float = 0.8) -> Optional[float]:
    """The smallest paired effect a two-sided ``alpha`` t-test over ``n`` pairs detects with
    ``power``: (t(1 - alpha / 2, n - 1) + t(power, n - 1)) * sd / sqrt(n); None if n < 2."""
    if n < 2:
        return None
    return (t_quantile(1.0 - alpha / 2.0, n - 1) + t_quantile(power, n - 1)) * sd / math.sqrt(n)


# --- the configs' distillation-loss schedules, scaled --------------------------------------
def scale_count(count: int, config_length: int, length: int) -> int:
    """``count`` epochs (or iterations) of a config whose schedule has ``config_length`` of them,
    on a schedule of ``length``: round(count / config_length * length), rounded half up, at
    least 1 if ``count`` > 0. E.g. DKD's ImageNet warm-up, 1 of 100 epochs, on 6 epochs: 1."""
    if count <= 0:
        return 0
    return max(1, math.floor(count / config_length * length + 0.5))


def scaled_schedule_hook(hook: dict, config_length: int, length: int, by_epoch: bool) -> dict:
    """A config's ``DistillLossScheduleHook`` on a schedule of ``length`` epochs (``by_epoch``)
    or iterations.

    ``warmup`` is scaled by :func:`scale_count`. ``stop`` is 1-based (the losses are 0 from
    epoch ``stop`` on), so the ``stop - 1`` distilled epochs are scaled: ``stop`` becomes
    ``scale_count(stop - 1, ...) + 1`` (a stop just after the config's end stays after the
    benchmark's end).
    """
    out: Dict[str, Any] = dict(type='mmkd.DistillLossScheduleHook', by_epoch=by_epoch)
    if hook.get('warmup', 0):
        out['warmup'] = scale_count(hook['warmup'], config_length, length)
    if hook.get('stop') is not None:
        out['stop'] = scale_count(hook['stop'] - 1, config_length, length) + 1
    return out


def schedule_hooks(method_cfg: str, length: int, by_epoch: bool) -> List[dict]:
    """The ``DistillLossScheduleHook`` entries of a method config's ``custom_hooks``, scaled
    from the config's schedule (``train_cfg.max_epochs`` if the hook counts epochs,
    ``train_cfg.max_iters`` if it counts iterations of an iteration-based loop) to ``length``
    (epochs if ``by_epoch``, else iterations)."""
    from mmengine.config import Config
    from mmengine.registry import LOOPS

    from mmkd.engine.hooks.distill_loss_schedule_hook import loop_counts_epochs
    cfg = Config.fromfile(method_cfg)
    hooks = [h for h in cfg.get('custom_hooks', None) or []
             if str(h.get('type', '')).split('.')[-1] == 'DistillLossScheduleHook']
    if not hooks:
        return []
    train_cfg = cfg.train_cfg
    if 'type' in train_cfg:
        loop = train_cfg['type']
        loop_epochs = loop_counts_epochs(LOOPS.get(loop) if isinstance(loop, str) else loop)
    else:  # as mmengine's Runner.build_train_loop
        loop_epochs = bool(train_cfg.get('by_epoch'))
    out = []
    for hook in hooks:
        counts_epochs = loop_epochs if hook.get('by_epoch') is None else hook['by_epoch']
        if counts_epochs:
            config_length = train_cfg['max_epochs']
        elif loop_epochs is False:
            config_length = train_cfg['max_iters']
        else:
            raise ValueError(f'{method_cfg}: its DistillLossScheduleHook counts iterations of an '
                             f'epoch-based schedule, whose length in iterations is not in the '
                             f'config; cannot scale it')
        out.append(scaled_schedule_hook(hook, config_length, length, by_epoch))
    return out


def describe_schedule(hooks: Sequence[dict]) -> str:
    """``warm-up 1 ep`` / ``stop at it 30``: the scaled hooks, for the report."""
    parts = []
    for hook in hooks:
        unit = 'ep' if hook['by_epoch'] else 'it'
        if hook.get('warmup'):
            parts.append(f"warm-up {hook['warmup']} {unit}")
        if hook.get('stop') is not None:
            parts.append(f"stop at {unit} {hook['stop']}")
    return ', '.join(parts)


def plain_config(task: Task, setup: dict, role: str, work: str, length: int) -> str:
    """Writes the config of a teacher or a baseline student."""
    hooks = dict(logger=dict(interval=50), checkpoint=None)
    overrides = {
        **setup['data'],
        **adamw_schedule(length, lr=setup.get('lr', 1e-3), by_epoch=task.by_epoch,
                         iters_per_epoch=setup['iters_per_epoch']),
        'default_hooks': hooks,
        'log_processor': dict(window_size=10),
        'model': task.model(role, setup['info']),
    }
    return write_config(osp.join(work, f'{role}.py'), task.base, overrides)


#: Classes of the distilled logits: segmentation counts the background, a Faster R-CNN RoI head
#: has one more (background) logit than the data's classes.
LOGIT_CLASSES: Dict[str, Callable[[int], int]] = {
    'cls': lambda n: n, 'seg': lambda n: n, 'det': lambda n: n + 1}


def fit_to_classes(settings: dict, num_logits: int) -> Tuple[dict, str]:
    """A config's distiller settings on logits of ``num_logits`` classes: a loss whose top-``k``
    (ReKD) is not below the class count (k = C leaves no non-target class to distil) gets
    ``k = C - 1``; everything else is kept. Returns the settings and a note of what changed
    (e.g. ``k 5 -> 3 of 4 classes``; empty if nothing)."""
    notes = []
    losses = dict(settings.get('distill_losses') or {})
    for name, loss in losses.items():
        k = loss.get('k') if isinstance(loss, dict) else None
        if k is not None and k >= num_logits:
            losses[name] = dict(loss, k=num_logits - 1)
            notes.append(f'k {k} -> {num_logits - 1} of {num_logits} classes')
    return (dict(settings, distill_losses=losses) if notes else settings), ', '.join(notes)


def distill_config(task: Task, method_cfg: str, student_cfg: str, teacher_cfg: str,
                   teacher_ckpt: Optional[str], path: str, length: int,
                   hooks: Optional[List[dict]] = None,
                   num_logits: Optional[int] = None) -> str:
    """Writes the config of the student distilled with ``method_cfg``'s settings: its
    distiller settings (fitted to ``num_logits`` classes by :func:`fit_to_classes` if given)
    and its ``DistillLossScheduleHook`` scaled to ``length`` (the student's epochs, or
    iterations if not ``task.by_epoch``; ``hooks``: already scaled)."""
    from mmengine.config import Config
    settings = distiller_settings(method_cfg)
    if num_logits is not None:
        settings = fit_to_classes(settings, num_logits)[0]
    model = dict(_delete_=True, **settings, student=student_cfg)
    if 'LightSKD' in settings['type']:  # self-distillation: no teacher
        width = CLS_WIDTH['student'][1]
        model['aux_head'] = dict(settings['aux_head'], in_channels=width * 2 ** (
            settings.get('aux_stage', 1)))
    else:
        model.update(teacher=teacher_cfg, teacher_ckpt=teacher_ckpt)
    overrides = {
        'custom_imports': dict(imports=['mmkd'], allow_failed_imports=False),
        'model': model
    }
    if hooks is None:
        hooks = schedule_hooks(method_cfg, length, task.by_epoch)
    if hooks:
        overrides['custom_hooks'] = list(Config.fromfile(student_cfg).get('custom_hooks', None)
                                         or []) + hooks
    return write_config(path, student_cfg, overrides)


def paired_start(seed: int):
    """A hook that makes the runs of one seed start alike, and fingerprints their start.

    Registered last in ``before_run``, it sets the seed again just before the runner
    initialises the weights, so that the student's initialisation does not depend on what
    was built after it (a teacher, an auxiliary head). Its ``fingerprints`` hold an MD5 of
    the student's weights when training starts (``student_init``) and of every training
    batch as loaded, before preprocessing (``train_data``: their order and augmentation).
    """
    return _paired_start_class()(seed)


@functools.cache
def _paired_start_class() -> type:
    # mmengine.hooks imports mmengine.runner (seconds): only when training.
    from mmengine.hooks import Hook
    from mmengine.runner.utils import set_random_seed

    class PairedStart(Hook):
        priority = 'LOWEST'

        def __init__(self, seed: int) -> None:
            self.seed = seed
            self.data = hashlib.md5()
            self.fingerprints: Dict[str, str] = {}

        def before_run(self, runner) -> None:
            set_random_seed(self.seed)

        def before_train(self, runner) -> None:
            model = getattr(runner.model, 'module', runner.model)
            student = getattr(model, 'student', model)
            init = hashlib.md5()
            for key, value in sorted(student.state_dict().items()):
                init.update(key.encode())
                init.update(value.detach().cpu().contiguous().numpy().tobytes())
            self.fingerprints['student_init'] = init.hexdigest()[:12]

        def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
            inputs = data_batch['inputs'] if isinstance(data_batch, dict) else data_batch
            for x in inputs if isinstance(inputs, (list, tuple)) else [inputs]:
                self.data.update(x.detach().cpu().contiguous().numpy().tobytes())

        def after_train(self, runner) -> None:
            self.fingerprints['train_data'] = self.data.hexdigest()[:12]

    return PairedStart


def train_eval(config: str, work_dir: str, seed: int, name: str,
               save: Optional[str] = None) -> Tuple[Dict[str, float], Dict[str, str]]:
    """Trains ``config`` in this process, evaluates it once; returns the metrics and the
    :func:`paired_start` fingerprints of the run.

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
    start = paired_start(seed)
    with open(log_path, 'w') as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        try:
            runner = Runner.from_cfg(cfg)
            runner.register_hook(start)
            runner.train()
            metrics = runner.val_loop.run()
            if save:
                runner.save_checkpoint(osp.dirname(save), osp.basename(save),
                                       save_optimizer=False, save_param_scheduler=False)
        except Exception as e:
            log.flush()
            tail = open(log_path).read()[-3000:]
            raise RuntimeError(f'{name} failed: {e}\n--- end of {log_path} ---\n{tail}') from e
    return {k: float(v) for k, v in metrics.items()}, start.fingerprints


def _worker_init(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
    warnings.filterwarnings('ignore')


def _timed_train_eval(config: str, work_dir: str, seed: int,
                      name: str) -> Tuple[Dict[str, float], Dict[str, str], float]:
    start = time.time()
    metrics, fingerprints = train_eval(config, work_dir, seed, name)
    return metrics, fingerprints, (time.time() - start) / 60


def run_task(task: Task, work: str, methods: Optional[Sequence[str]], seeds: Sequence[int],
             quick: bool, results_file: str, done: Dict[tuple, dict], jobs: int = 1) -> None:
    """Trains the teacher (if not done), then the baseline and every method once per seed,
    ``jobs`` runs at a time (each in its own process with ``cpu_count // jobs`` threads)."""
    protocol = 'quick' if quick else 'default'
    work = osp.join(work, task.name)
    os.makedirs(work, exist_ok=True)
    setup = task.make(work, quick)
    configs = method_configs(task.pattern)
    chosen = [m for m in configs if not methods or m in methods]
    teacher_cfg = plain_config(task, setup, 'teacher', work, setup['teacher_length'])
    student_cfg = plain_config(task, setup, 'student', work, setup['length'])
    teacher_ckpt = osp.join(work, 'teacher.pth')

    def record(method: str, seed: int, cfg: str, schedule: str, metrics: Dict[str, float],
               fingerprints: Dict[str, str], minutes: float) -> None:
        row = dict(task=task.name, method=method, seed=seed,
                   value=metrics[task.metric] * task.scale, protocol=protocol,
                   minutes=minutes, config=osp.relpath(cfg, work), schedule=schedule,
                   version=VERSION, **fingerprints)
        print(f"[{task.name}] {method} (seed {seed}): {task.unit} {row['value']:.2f} "
              f"({row['minutes']:.1f} min)", flush=True)
        done[(protocol, task.name, method, seed)] = row
        with open(results_file, 'a') as f:
            f.write(json.dumps(row) + '\n')

    if (protocol, task.name, 'teacher', 0) not in done:
        if osp.exists(teacher_ckpt):
            os.remove(teacher_ckpt)  # its result line was lost: train it again
        print(f'[{task.name}] teacher ...', flush=True)
        start = time.time()
        metrics, fingerprints = train_eval(teacher_cfg, osp.join(work, 'teacher_seed0'), 0,
                                           f'{task.name}_teacher_0', save=teacher_ckpt)
        record('teacher', 0, teacher_cfg, '', metrics, fingerprints,
               (time.time() - start) / 60)
    todo = []
    num_logits = LOGIT_CLASSES[task.name](len(setup['info']['classes']))
    for seed in seeds:
        for method in ['baseline'] + chosen:
            if (protocol, task.name, method, seed) in done:
                continue
            cfg, schedule = student_cfg, ''
            if method != 'baseline':
                hooks = schedule_hooks(configs[method], setup['length'], task.by_epoch)
                fitted = fit_to_classes(distiller_settings(configs[method]), num_logits)[1]
                schedule = ', '.join(x for x in (describe_schedule(hooks), fitted) if x)
                cfg = distill_config(task, configs[method], student_cfg, teacher_cfg,
                                     teacher_ckpt, osp.join(work, f'{method}.py'),
                                     setup['length'], hooks, num_logits)
            todo.append((method, seed, cfg, schedule))
    if not todo:
        return
    print(f'[{task.name}] {len(todo)} student runs, {jobs} at a time ...', flush=True)
    if jobs <= 1:
        for method, seed, cfg, schedule in todo:
            record(method, seed, cfg, schedule, *_timed_train_eval(
                cfg, osp.join(work, f'{method}_seed{seed}'), seed,
                f'{task.name}_{method}_{seed}'))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context('spawn'),
                             initializer=_worker_init, initargs=(threads, )) as pool:
        futures = [(pool.submit(_timed_train_eval, cfg, osp.join(work, f'{method}_seed{seed}'),
                                seed, f'{task.name}_{method}_{seed}'), method, seed, cfg,
                    schedule) for method, seed, cfg, schedule in todo]
        for future, method, seed, cfg, schedule in futures:  # recorded in submission order
            record(method, seed, cfg, schedule, *future.result())


def _signed(x: float) -> str:
    return f'{x:+.2f}'


def summarise(rows: List[dict], tasks: Sequence[str]) -> str:
    """The Markdown report: per task, a table (each arm's mean ± std over seeds; each
    method's paired difference to the baseline with its 95% CI and verdict) and the smallest
    detectable difference (see the module's docstring)."""
    out = []
    for name in tasks:
        task = TASKS[name]
        mine = [r for r in rows if r['task'] == name]
        if not mine:
            continue
        by_method: Dict[str, Dict[int, dict]] = {}
        for r in mine:
            by_method.setdefault(r['method'], {})[r['seed']] = r
        base = {s: r['value'] for s, r in by_method.get('baseline', {}).items()}
        out += [f'### {task.title}', '',
                f'| method | {task.unit}: mean ± std | seeds | paired diff. to baseline | '
                '95% CI | verdict | beats baseline | min / run |',
                '|---|---|---|---|---|---|---|---|']
        summaries, unpaired, schedules = [], [], []
        for m, runs in by_method.items():
            vals = [r['value'] for r in runs.values()]
            mean = statistics.mean(vals)
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            minutes = statistics.mean(r['minutes'] for r in runs.values())
            cells = [''] * 4
            if m not in ('teacher', 'baseline'):
                p = paired_summary(base, {s: r['value'] for s, r in runs.items()})
                summaries.append(p)
                ci = (f'{_signed(p["ci"][0])} to {_signed(p["ci"][1])}' if p['ci'] else
                      p['verdict'][len('no CI: '):])
                verdict = 'no CI' if p['ci'] is None else p['verdict']
                cells = ['' if p['mean'] is None else _signed(p['mean']), ci, verdict,
                         f"{p['wins']}/{p['n']}"]
                for s in p['seeds']:
                    a, b = by_method['baseline'][s], runs[s]
                    if any(a.get(k) != b.get(k) for k in ('student_init', 'train_data')):
                        unpaired.append(f'{m} seed {s}')
                if any(r.get('schedule') for r in runs.values()):
                    schedules.append(f"{m} ({next(iter(runs.values())).get('schedule')})")
            out.append(f'| {m} | {mean:.2f} ± {std:.2f} | {len(vals)} | ' + ' | '.join(cells) +
                       f' | {minutes:.1f} |')
        out.append('')
        n = max((p['n'] for p in summaries), default=0)
        sd = pooled_sd(summaries)
        mdd = None if sd is None else min_detectable_difference(sd, n)
        if mdd is None:
            out.append(f'Smallest detectable difference: none with {n} paired seed(s) (needs 2 '
                       'or more).')
        else:
            name = task.unit.rsplit(' (', 1)[0]  # 'bbox mAP (%)' -> 'bbox mAP'
            out.append(f'Smallest detectable difference: {mdd:.2f} ({name}; '
                       f'n = {n} seeds, pooled sd of the paired differences {sd:.2f}; '
                       f'(t(0.975, n-1) + t(0.80, n-1)) · sd / √n: a two-sided 5% paired test '
                       f'with 80% power).')
        if schedules:
            out.append('Adapted to this benchmark (the configs\' DistillLossScheduleHook '
                       'scaled; a top-k not below the class count set to C - 1): ' +
                       '; '.join(schedules) + '.')
        if unpaired:
            out.append('**Warning**: these runs do not share the initial student or the training '
                       'batches of the baseline of their seed: ' + ', '.join(unpaired) + '.')
        out.append('')
    if out:
        out += ['Paired diff.: the method minus the baseline of the same seed (same initial '
                'student, same training batches), averaged over the seeds both have; 95% CI: '
                'mean ± t(0.975, n-1) · sd / √n; verdict: helps / hurts if the whole CI is '
                'above / below 0, otherwise no detectable effect; beats baseline: pairs where '
                'the method is higher.', '']
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
                        help=f'default: {" ".join(DEFAULT_TASKS)}')
    parser.add_argument('--methods', nargs='+', default=None,
                        help='method names (config folders); default: all of each task (with '
                        f'--quick: {" ".join(QUICK_METHODS)})')
    parser.add_argument('--seeds', type=int, default=None,
                        help='student seeds per method; default ' + ', '.join(
                            f'{n} ({t})' for t, n in SEEDS.items()) + '; 1 with --quick')
    parser.add_argument('--jobs', type=int, default=min(2, os.cpu_count() or 1),
                        help='student runs at a time, each in its own process with '
                        'cpu_count // jobs threads. Defaults to 2 (1 on one core)')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run of a few minutes: short training, one seed, '
                        'two methods per task (numbers mean little)')
    args = parser.parse_args(argv)
    if args.quick and args.methods is None:
        args.methods = list(QUICK_METHODS)
    warnings.filterwarnings('ignore')
    work = osp.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    results_file = osp.join(work, 'results.jsonl')
    done: Dict[tuple, dict] = {}
    if osp.exists(results_file):
        old = 0
        for line in open(results_file):
            r = json.loads(line)
            if r.get('version') != VERSION:
                old += 1
                continue
            done[(r['protocol'], r['task'], r['method'], r['seed'])] = r
        print(f'{len(done)} runs already in {results_file}: skipping them' +
              (f' ({old} of an earlier protocol version ignored)' if old else ''))
    start = time.time()
    for name in args.tasks:
        seeds = args.seeds or (1 if args.quick else SEEDS[name])
        run_task(TASKS[name], work, args.methods, list(range(seeds)), args.quick,
                 results_file, done, jobs=args.jobs)
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
