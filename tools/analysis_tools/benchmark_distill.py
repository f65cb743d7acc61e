"""Benchmark the cost of distillation: one training step with and without the teacher.

For any mmkd distiller config (detection, segmentation, classification,
self-distillation) it measures, on the same batch and with the config's own
optimizer:

* ``student_step_s``: one training step of the student alone
  (``student.train_step``: preprocessing, forward, losses, backward, update);
* ``distill_step_s``: one training step of the distiller (``train_step``);
* ``teacher_forward_s``: the time the distillation step spends inside the
  teacher's modules, i.e. only what the distiller runs of the teacher (for a
  two-stage detector: backbone, neck, RoI extractor and box head on the
  student's RoIs). It is measured in extra distillation steps with forward
  hooks on every teacher module that time the outermost module calls (glue
  code between the modules, e.g. the concatenation of the FPN levels, is not
  counted); summed over the teachers with ``teachers=[...]`` (``num_teachers``);
  0 for self-distillation (no teacher);
* ``ratio = distill_step_s / (student_step_s + teacher_forward_s)``: 1.0 means
  that distillation costs exactly a student step plus a teacher forward;
* peak memory of the training steps.

Time. In one subprocess, after ``--warmup`` steps, ``--iters`` rounds of: a step
of a copy of the distiller's student, a distillation step, and a distillation
step with the teacher timed; alternating them gives the three the same machine
load (the machine may be shared). Medians are reported, and minima with their
``ratio_of_minima``. The optimizer is the config's with learning rate 0 (its
whole update still runs), so the copy and the distiller's student keep the same
weights, and each round starts from one RNG seed: the student samples the same
RoIs with and without the teacher.

Memory. Student-only and distillation steps run in two fresh subprocesses
(the distillation memory is measured before the student copy is made), over
up to 2 steps after the warm-up.
On CUDA: ``torch.cuda.max_memory_allocated`` over these steps. On the CPU:
the subprocess runs with glibc's ``MALLOC_MMAP_THRESHOLD_=65536``, so every
tensor buffer is an ``mmap`` given back to the kernel when freed and the
resident set follows the live tensors; after the warm-up steps the kernel's
peak-RSS counter is reset (``/proc/self/clear_refs``) and ``VmHWM`` is read
after the measured steps: ``peak_rss_mb``; ``step_extra_mb`` is that peak minus
the RSS before those steps (models, optimizer state and batch), i.e. the
activations, gradients and temporaries of a step. Without ``clear_refs`` the
peak is ``getrusage``'s, since process start.

Data. By default the config's training data is replaced by the generated
shapes data (:mod:`mmkd.datasets.synthetic`, no download) at a small size, and
pretrained weights / teacher checkpoints are not loaded (random weights: the
cost does not depend on them). ``--real-data`` keeps the config's dataloader.

Usage::

    python tools/analysis_tools/benchmark_distill.py CONFIG [--cfg-options k=v ...]
        [--size S] [--batch-size B] [--iters N] [--warmup W] [--threads T]
        [--device cpu|cuda] [--real-data] [--out result.json]

``--size``: detection resize scale S x S (default 128), segmentation crop
S x 2S (default 64), classification S x S (default 32).
"""
import argparse
import copy
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
from mmkd.utils.memory import reset_peak_rss, rss_mib  # noqa: E402

DEFAULT_SIZE = dict(mmdet=128, mmseg=64, mmpretrain=32)
MARK = 'BENCHMARK_RESULT '


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Cost of a distillation training step')
    parser.add_argument('config', help='distiller config file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override settings of the config, as key=value pairs')
    parser.add_argument('--size', type=int, help='input size (see the module doc)')
    parser.add_argument('--batch-size', type=int, default=2, help='images per step (2)')
    parser.add_argument('--iters', type=int, default=5, help='timed steps (5)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed first steps (2)')
    parser.add_argument('--threads', type=int, help='torch intra-op threads (torch default)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--real-data', action='store_true',
                        help="keep the config's dataloader instead of generated data")
    parser.add_argument('--out', help='also write the JSON result to this file')
    parser.add_argument('--role', choices=['student', 'distill'], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ------------------------------------------------------------------ config
def prepare_config(args, workdir: str):
    """A config file inheriting ``args.config`` (on generated data unless --real-data) and
    the input size."""
    from mmengine.config import Config

    from mmkd.datasets import cls_overrides, det_overrides, seg_overrides
    from mmkd.recipes import write_config
    cfg = Config.fromfile(args.config)
    if not isinstance(cfg.get('model'), dict) or 'student' not in cfg.model:
        raise ValueError(f'{args.config} is not a distiller config (no model.student)')
    scope = cfg.get('default_scope', 'mmdet')
    if args.real_data:
        return write_config(osp.join(workdir, 'bench.py'), args.config, {}), None
    size = args.size or DEFAULT_SIZE.get(scope, 64)
    n = max(args.batch_size, 2)
    if scope == 'mmdet':
        from mmkd.datasets import make_det
        info = make_det(osp.join(workdir, 'det'), num_train=n, num_val=1, img_size=(size, size))
        with_mask = 'mask_head' in str(cfg.model.student)
        overrides = det_overrides(info, (size, size), args.batch_size, with_mask=with_mask)
    elif scope == 'mmseg':
        from mmkd.datasets import make_seg
        info = make_seg(osp.join(workdir, 'seg'), num_train=n, num_val=1,
                        img_size=(2 * size, 4 * size))
        overrides = seg_overrides(info, (size, 2 * size), (4 * size, 2 * size), args.batch_size)
    elif scope == 'mmpretrain':
        from mmkd.datasets import make_cls
        info = make_cls(osp.join(workdir, 'cls'), num_train=6 * n, num_val=6,
                        img_size=(size, size))
        overrides = cls_overrides(info, size, args.batch_size)
    else:
        raise ValueError(f'unknown default_scope {scope!r}: use --real-data')
    overrides['train_dataloader']['sampler'] = dict(type='DefaultSampler', shuffle=False)
    return write_config(osp.join(workdir, 'bench.py'), args.config, overrides), size


def load_config(path: str, args):
    from mmengine.config import Config

    from mmkd.recipes import no_pretrained
    cfg = Config.fromfile(path)
    cfg.merge_from_dict(args.cfg_options)
    if not args.real_data:
        no_pretrained(cfg.model)
        if 'teacher_ckpt' in cfg.model:
            cfg.model.teacher_ckpt = None
        if cfg.get('default_scope') == 'mmseg':  # pad to the crop, not to 512 x 1024
            crop = cfg.crop_size
            for owner in (cfg, cfg.model, cfg.model.get('student', {})):
                pre = owner.get('data_preprocessor') if isinstance(owner, dict) else None
                if isinstance(pre, dict) and 'size' in pre:
                    pre['size'] = tuple(crop)
    return cfg


# ------------------------------------------------------------------ worker
class TeacherTimer:
    """Accumulates the wall time spent in the teacher's outermost module calls."""

    def __init__(self, teacher: torch.nn.Module, device: str) -> None:
        self.depth, self.start, self.total, self.device = 0, 0.0, 0.0, device
        self.handles = []
        for module in teacher.modules():
            self.handles.append(module.register_forward_pre_hook(self.enter))
            self.handles.append(module.register_forward_hook(self.leave))

    def sync(self):
        if self.device.startswith('cuda'):
            torch.cuda.synchronize()

    def enter(self, *_):
        if self.depth == 0:
            self.sync()
            self.start = time.perf_counter()
        self.depth += 1

    def leave(self, *_):
        self.depth -= 1
        if self.depth == 0:
            self.sync()
            self.total += time.perf_counter() - self.start

    def remove(self):
        for handle in self.handles:
            handle.remove()


def worker(args) -> dict:
    """Memory of ``args.role``'s steps; for ``distill`` also the alternated timings."""
    import resource

    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import mmkd  # noqa: F401
    from mmkd.models.distillers import build_model_from_cfg, with_preprocessor
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    if args.role == 'student':
        model_cfg = with_preprocessor(model_cfg.student, cfg.get('data_preprocessor'))
    torch.manual_seed(0)
    model = build_model_from_cfg(model_cfg).to(args.device).train()
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    if 'lr' in optim_cfg.get('optimizer', {}):
        optim_cfg.optimizer.lr = 0.0  # the weights stay those of the copy (see the doc)
    optim = build_optim_wrapper(model, copy.deepcopy(optim_cfg))
    batch = next(iter(Runner.build_dataloader(copy.deepcopy(cfg.train_dataloader), seed=0)))
    cuda = args.device.startswith('cuda')

    def step(net, opt, seed):
        torch.manual_seed(seed)
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        net.train_step(copy.deepcopy(batch), opt)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t

    # Memory: the steps of this process's model alone.
    for i in range(args.warmup):
        step(model, optim, i)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        exact = reset_peak_rss()
        base = rss_mib('VmRSS')
    for i in range(max(1, min(args.iters, 2))):
        step(model, optim, args.warmup + i)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
        result = dict(peak_allocated_mb=round(peak, 1), step_extra_mb=round(peak - base, 1))
    else:
        peak = rss_mib('VmHWM') if exact else resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 1024
        result = dict(peak_rss_mb=round(peak, 1), step_extra_mb=round(peak - base, 1))
    if args.role == 'student':
        return result

    # Time: student alone, distiller, distiller with the teacher timed, alternated, so
    # that all three see the same machine load; every step starts from the same seed.
    student = copy.deepcopy(model.student)
    student_optim = build_optim_wrapper(student, copy.deepcopy(optim_cfg))
    step(student, student_optim, 0)  # warm-up
    # every teacher (teachers=[...]): one timer each, summed; its outermost calls counted
    teachers = [m for _, m in getattr(model, 'teachers', [])]
    times = dict(student=[], distill=[], teacher=[])
    for i in range(args.iters):
        seed = args.warmup + i
        times['student'].append(step(student, student_optim, seed))
        times['distill'].append(step(model, optim, seed))
        timers = [TeacherTimer(t, args.device) for t in teachers]
        step(model, optim, seed)
        for timer in timers:
            timer.remove()
        times['teacher'].append(sum(timer.total for timer in timers))
    result['num_teachers'] = len(teachers)
    for key, values in times.items():
        result[f'{key}_s'] = statistics.median(values)
        result[f'{key}_min_s'] = min(values)
    return result


# ------------------------------------------------------------------ main
def run_role(role: str, config: str, argv) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', PYTHONUNBUFFERED='1')
    cmd = [sys.executable, __file__, config, '--role', role] + argv
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f'the {role} benchmark failed ({proc.returncode}):\n'
                           f'{(proc.stdout + proc.stderr)[-4000:]}')
    return json.loads(lines[-1][len(MARK):])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.role:
        print(MARK + json.dumps(worker(args)), flush=True)
        return
    passthrough = [a for a in argv if a != args.config]
    with tempfile.TemporaryDirectory(prefix='mmkd_bench_') as workdir:
        config, size = prepare_config(args, workdir)
        student = run_role('student', config, passthrough)
        distill = run_role('distill', config, passthrough)
    s, d, t = distill['student_s'], distill['distill_s'], distill['teacher_s']
    s_min, d_min, t_min = distill['student_min_s'], distill['distill_min_s'], \
        distill['teacher_min_s']
    result = dict(
        config=args.config, device=args.device,
        threads=args.threads or torch.get_num_threads(),
        size=size,
        batch_size=None if args.real_data else args.batch_size,
        iters=args.iters, warmup=args.warmup, num_teachers=distill['num_teachers'],
        student_step_s=round(s, 4), teacher_forward_s=round(t, 4), distill_step_s=round(d, 4),
        ratio=round(d / (s + t), 3), distill_overhead_s=round(d - s - t, 4),
        student_step_min_s=round(s_min, 4), teacher_forward_min_s=round(t_min, 4),
        distill_step_min_s=round(d_min, 4), ratio_of_minima=round(d_min / (s_min + t_min), 3),
        memory=dict(student=student,
                    distill={k: v for k, v in distill.items() if k.endswith('mb')},
                    method='torch.cuda.max_memory_allocated' if args.device.startswith('cuda')
                    else 'peak RSS (VmHWM) of a fresh subprocess, MALLOC_MMAP_THRESHOLD_=65536'))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    return result


if __name__ == '__main__':
    main()
