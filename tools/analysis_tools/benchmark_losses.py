"""Benchmark the mmkd losses against the same math written the textbook way.

For every loss, on classification-size logits (256 x 1000) and on
Cityscapes-size dense logits (8 x 19 x 128 x 256), it measures one forward +
backward pass of

* ``mmkd``: the registered loss module (or, for SDD, its functional core on
  precomputed local logits), and
* ``textbook``: the same math as the papers' official code writes it: dense
  logits permuted and reshaped to rows, separate ``softmax`` / ``log`` /
  ``log_softmax`` tensors, float masks built with ``zeros_like().scatter_``,
  subsets masked by subtracting 1000 (RLD: ``masked_fill(-1e9)``), and
  ``F.kl_div(..., reduction='batchmean')``.

and prints one JSON document with the figures and the ratios mmkd/textbook.

How it measures (CPU):

* Every (loss, case, implementation) runs in a fresh subprocess, so that no
  allocation of one measurement survives into the next.
* Peak memory: the subprocess runs with glibc's ``MALLOC_MMAP_THRESHOLD_``
  fixed at 64 KiB, so every tensor buffer is a private ``mmap`` that is given
  back to the kernel as soon as it is freed (PyTorch's CPU allocator does not
  cache), and the resident set size therefore follows the live tensor memory.
  After a small warm-up call (which loads kernels and thread pools) and after
  creating the inputs, it resets the kernel's peak-RSS counter (``echo 5 >
  /proc/self/clear_refs``), records the current RSS, runs one forward +
  backward and reads ``VmHWM``. The figure reported is the peak minus the
  baseline: the extra memory the loss needs on top of its inputs, including
  the gradient of the student logits. Where ``clear_refs`` is unavailable it
  falls back to ``getrusage`` (high-water mark since process start, which can
  only overestimate the baseline). With ``--device cuda`` it uses
  ``torch.cuda.max_memory_allocated`` instead.
* Time: in one more fresh process per (loss, case), the two implementations
  run alternately (one warm-up round, then ``--repeat`` timed rounds), so that
  both see the same machine load; the median (and the minimum) wall-clock
  time of a forward + backward pass is reported, with the default number of
  torch threads.

Usage::

    python tools/analysis_tools/benchmark_losses.py [--repeat 5] \\
        [--cases cls dense] [--losses KDLoss DKDLoss ...] [--out result.json]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES = ['KDLoss', 'DISTLoss', 'DKDLoss', 'ReKDLoss', 'RLDLoss', 'SDDLoss', 'DRGLoss', 'DSRLoss']
CASES = {
    'cls': (256, 1000),
    'dense': (8, 19, 128, 256),
}
T = 4.0


# ---------------------------------------------------------------------------
# textbook implementations (the papers' style)
# ---------------------------------------------------------------------------
def _rows(x: Tensor) -> Tensor:
    """(N, C, *S) -> (N * prod(S), C) by permute + reshape (a copy)."""
    if x.dim() == 2:
        return x
    return x.permute(0, *range(2, x.dim()), 1).reshape(-1, x.shape[1])


def _kl_batchmean(log_p_s: Tensor, p_t: Tensor) -> Tensor:
    return F.kl_div(log_p_s, p_t, reduction='batchmean')


def textbook_kd(s, t, target=None, temperature=T):
    s, t = _rows(s), _rows(t)
    p_t = F.softmax(t / temperature, dim=1)
    log_p_s = F.log_softmax(s / temperature, dim=1)
    return _kl_batchmean(log_p_s, p_t) * temperature**2


def textbook_dist(s, t, target=None, beta=1.0, gamma=1.0, tau=1.0):
    s, t = _rows(s), _rows(t)

    def pearson(a, b, eps=1e-8):
        a = a - a.mean(1).unsqueeze(1)
        b = b - b.mean(1).unsqueeze(1)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)

    y_s = (s / tau).softmax(dim=1)
    y_t = (t / tau).softmax(dim=1)
    inter = 1 - pearson(y_s, y_t).mean()
    intra = 1 - pearson(y_s.transpose(0, 1), y_t.transpose(0, 1)).mean()
    return tau**2 * (beta * inter + gamma * intra)


def _gt_mask(logits, target):
    return torch.zeros_like(logits).scatter_(1, target.unsqueeze(1), 1).bool()


def _other_mask(logits, target):
    return torch.ones_like(logits).scatter_(1, target.unsqueeze(1), 0).bool()


def _two_way(p, mask1, mask2):
    return torch.cat([(p * mask1).sum(1, keepdim=True), (p * mask2).sum(1, keepdim=True)], dim=1)


def _textbook_dkd_rows(s, t, target, alpha=1.0, beta=8.0, temperature=T):
    gt, other = _gt_mask(s, target), _other_mask(s, target)
    p_s = F.softmax(s / temperature, dim=1)
    p_t = F.softmax(t / temperature, dim=1)
    b_s, b_t = _two_way(p_s, gt, other), _two_way(p_t, gt, other)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction='sum') * temperature**2 / s.shape[0]
    p_t2 = F.softmax(t / temperature - 1000.0 * gt, dim=1)
    log_p_s2 = F.log_softmax(s / temperature - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_p_s2, p_t2, reduction='sum') * temperature**2 / s.shape[0]
    return alpha * tckd + beta * nckd


def textbook_dkd(s, t, target):
    return _textbook_dkd_rows(_rows(s), _rows(t), target.reshape(-1))


def textbook_rekd(s, t, target=None, k=5, temperature=T):
    s, t = _rows(s), _rows(t)
    index = t.topk(k, dim=1).indices
    top = torch.zeros_like(t).scatter_(1, index, 1.0)
    rest = 1.0 - top
    p_t_top = F.softmax(t / temperature - 1000.0 * rest, dim=1)
    log_p_s_top = F.log_softmax(s / temperature - 1000.0 * rest, dim=1)
    p_t_rest = F.softmax(t / temperature - 1000.0 * top, dim=1)
    log_p_s_rest = F.log_softmax(s / temperature - 1000.0 * top, dim=1)
    tisd = _kl_batchmean(log_p_s_top, p_t_top)
    ntid = _kl_batchmean(log_p_s_rest, p_t_rest)
    return (tisd + ntid) * temperature**2


def textbook_rld(s, t, target, alpha=1.0, beta=8.0, temperature=T):
    s, t, target = _rows(s), _rows(t), target.reshape(-1)
    top1 = t.argmax(dim=1)
    p_s = F.softmax(s / temperature, dim=1)
    p_t = F.softmax(t / temperature, dim=1)
    b_s = _two_way(p_s, _gt_mask(s, target), _other_mask(s, target))
    b_t = _two_way(p_t, _gt_mask(t, top1), _other_mask(t, top1))
    scd = _kl_batchmean(torch.log(b_s), b_t) * temperature**2
    ge = t >= t.gather(1, target.unsqueeze(1))
    log_p_s2 = F.log_softmax((s / temperature).masked_fill(ge, -1e9), dim=1)
    p_t2 = F.softmax((t / temperature).masked_fill(ge, -1e9), dim=1)
    mcd = _kl_batchmean(log_p_s2, p_t2) * temperature**2
    return alpha * scd + beta * mcd


def textbook_sdd(local_s, local_t, target, complementary_weight=2.0):
    """Multi-scale DKD on (B, C, N) local logits, as the official SDD code."""
    B, C, N = local_s.shape
    s = local_s.permute(2, 0, 1).reshape(N * B, C)
    t = local_t.permute(2, 0, 1).reshape(N * B, C)
    target_r = target.repeat(N)
    gt, other = _gt_mask(s, target_r), _other_mask(s, target_r)
    p_s = F.softmax(s / T, dim=1)
    p_t = F.softmax(t / T, dim=1)
    b_s, b_t = _two_way(p_s, gt, other), _two_way(p_t, gt, other)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(1)
    p_t2 = F.softmax(t / T - 1000.0 * gt, dim=1)
    log_p_s2 = F.log_softmax(s / T - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_p_s2, p_t2, reduction='none').sum(1)
    loss = (tckd + 8.0 * nckd) * T**2
    ok = t.argmax(dim=1) == target_r
    ok_global = ok[:B].repeat(N)
    weight = torch.where(ok == ok_global, 1.0, complementary_weight)
    return (loss * weight).sum() / (B * N)


def textbook_drg(final, aux, target=None, weight=0.2):
    final, aux = _rows(final), _rows(aux)
    return weight * torch.nn.KLDivLoss(reduction='batchmean')(
        F.log_softmax(final / T, dim=1), F.softmax(aux.detach() / T, dim=1)) * T * T


def textbook_dsr(final, prev_sorted, target=None):
    final = _rows(final)
    return torch.nn.KLDivLoss(reduction='batchmean')(
        F.log_softmax(torch.sort(final)[0] / T, dim=1), F.softmax(
            _rows(prev_sorted).detach() / T, dim=1)) * T * T


TEXTBOOK: Dict[str, Callable] = {
    'KDLoss': textbook_kd,
    'DISTLoss': textbook_dist,
    'DKDLoss': textbook_dkd,
    'ReKDLoss': textbook_rekd,
    'RLDLoss': textbook_rld,
    'SDDLoss': textbook_sdd,
    'DRGLoss': textbook_drg,
    'DSRLoss': textbook_dsr,
}
NEEDS_TARGET = ('DKDLoss', 'RLDLoss', 'SDDLoss')


# ---------------------------------------------------------------------------
# one measurement (runs in a subprocess)
# ---------------------------------------------------------------------------
def _make_inputs(loss: str, case: str, device: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    shape = CASES[case]
    if loss == 'SDDLoss':  # precomputed local logits (B, C, N)
        shape = (256, 1000, 21) if case == 'cls' else (8, 19, 128 * 256)
    s = (torch.randn(shape, generator=gen) * 3).to(device).requires_grad_()
    t = (torch.randn(shape, generator=gen) * 3).to(device)
    if loss == 'DSRLoss':
        t = t.sort(dim=1).values
    num_classes = shape[1]
    row_shape = (shape[0], ) if loss == 'SDDLoss' else (shape[0], ) + tuple(shape[2:])
    target = torch.randint(0, num_classes, row_shape, generator=gen).to(device)
    return s, t, target


def _make_step(loss: str, impl: str, t: Tensor, target: Tensor) -> Callable[[Tensor], Tensor]:
    if impl == 'textbook':
        fn = TEXTBOOK[loss]
        return lambda s: fn(s, t, target)
    from mmkd.models.losses import sdd_loss
    from mmkd.registry import MODELS
    if loss == 'SDDLoss':
        return lambda s: sdd_loss(s, t, target).mean()
    module = MODELS.build(dict(type=loss))
    if loss == 'DSRLoss':

        def step(s):
            module.prev_sorted = t  # the previous batch's sorted logits
            return module(s)

        return step
    if loss in NEEDS_TARGET:
        return lambda s: module(s, t, target)
    return lambda s: module(s, t)


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def measure_memory(loss: str, case: str, impl: str, device: str) -> dict:
    """Peak extra memory of one forward + backward (run in a fresh process)."""
    # warm-up on a tiny input: loads kernels, thread pools, autograd engine
    s, t, target = _make_inputs(loss, 'cls', device, seed=1)
    s, t = s[:4].detach().requires_grad_(), t[:4]
    _make_step(loss, impl, t, target[:4])(s).backward()
    del s, t, target

    s, t, target = _make_inputs(loss, case, device)
    step = _make_step(loss, impl, t, target)
    if device == 'cuda':
        _sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(s).backward()
        _sync(device)
        return dict(peak_mib=(torch.cuda.max_memory_allocated() - base) / 2**20,
                    method='torch.cuda.max_memory_allocated')
    from mmkd.utils.memory import reset_peak_rss, rss_mib
    if reset_peak_rss():
        base = rss_mib('VmRSS')
        step(s).backward()
        return dict(peak_mib=rss_mib('VmHWM') - base,
                    method='VmHWM after clear_refs, minus VmRSS')
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step(s).backward()
    return dict(peak_mib=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
                method='getrusage ru_maxrss')


def measure_time(loss: str, case: str, repeat: int, device: str) -> dict:
    """Forward + backward times of both implementations, interleaved.

    Alternating the two in one process exposes them to the same machine load.
    """
    s, t, target = _make_inputs(loss, case, device)
    steps = {impl: _make_step(loss, impl, t, target) for impl in ('mmkd', 'textbook')}
    times = {impl: [] for impl in steps}
    for i in range(repeat + 1):
        for impl, step in steps.items():
            s.grad = None
            _sync(device)
            start = time.perf_counter()
            step(s).backward()
            _sync(device)
            if i:  # the first round is a warm-up
                times[impl].append(time.perf_counter() - start)
    return {
        impl: dict(time_ms=statistics.median(ts) * 1e3, min_time_ms=min(ts) * 1e3)
        for impl, ts in times.items()
    }


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------
def run_isolated(*worker_args: str, repeat: int, device: str, threads: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', *worker_args,
           '--repeat', str(repeat), '--device', device, '--threads', str(threads)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--losses', nargs='+', default=LOSSES, choices=LOSSES)
    parser.add_argument('--cases', nargs='+', default=list(CASES), choices=list(CASES))
    parser.add_argument('--repeat', type=int, default=7, help='timed runs (median reported)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument(
        '--threads', type=int, default=0,
        help='torch intra-op threads (default: torch\'s choice); 1 gives stable CPU timings '
        'on a shared machine, where threads wait for each other at every op')
    parser.add_argument('--out', help='also write the JSON to this file')
    parser.add_argument('--worker', nargs='+', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        kind, loss, case, *impl = args.worker
        if kind == 'memory':
            print(json.dumps(measure_memory(loss, case, impl[0], args.device)))
        else:
            print(json.dumps(measure_time(loss, case, args.repeat, args.device)))
        return

    results = []
    for case in args.cases:
        for loss in args.losses:
            row = dict(loss=loss, case=case)
            if loss == 'SDDLoss':
                row['shape'] = [256, 1000, 21] if case == 'cls' else [8, 19, 128 * 256]
                row['note'] = 'sdd_loss on precomputed (B, C, N) local logits'
            else:
                row['shape'] = list(CASES[case])
            times = run_isolated('time', loss, case, repeat=args.repeat, device=args.device,
                                 threads=args.threads)
            for impl in ('mmkd', 'textbook'):
                memory = run_isolated('memory', loss, case, impl, repeat=1, device=args.device,
                                      threads=args.threads)
                row[impl] = dict(
                    time_ms=round(times[impl]['time_ms'], 2),
                    min_time_ms=round(times[impl]['min_time_ms'], 2),
                    peak_mib=round(memory['peak_mib'], 2))
                method = memory['method']
            row['time_ratio'] = round(row['mmkd']['time_ms'] / row['textbook']['time_ms'], 3)
            row['memory_ratio'] = round(
                row['mmkd']['peak_mib'] / max(row['textbook']['peak_mib'], 1e-9), 3)
            row['memory_method'] = method
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    report = dict(
        device=args.device,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        repeat=args.repeat,
        temperature=T,
        results=results)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')


if __name__ == '__main__':
    main()
