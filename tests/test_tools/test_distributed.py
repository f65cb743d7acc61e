"""tools/dist_train.sh and tools/dist_test.sh with 2 CPU processes (torchrun, gloo).

Claim: DDP with ``b`` images per process trains the student exactly as one process with the
global batch ``2b``. Run on ``configs/dist/resnet_r34_r18_in1k.py`` (DIST, ResNet-34 ->
ResNet-18) and the generated 32 x 32 image folders, 1 epoch = 3 iterations of 8 images:

* same data: mmengine's ``DefaultSampler`` draws one permutation of the dataset from the
  shared seed (``randomness.seed``) and gives rank ``r`` the elements ``r::world``, so
  iteration ``i`` sees the same 8 images in both runs (batch order within the batch does not
  matter for mean losses); the training pipeline is the deterministic test pipeline (no
  random crop / flip, whose draws would differ per process);
* same start: both runs ``load_from`` the same initial distiller weights;
* BatchNorm: in training mode it normalises with the statistics of each process's local
  batch, the one real difference between DDP and a big batch (SyncBN fixes it on GPUs;
  torch has no CPU SyncBN). The student here uses ``norm_eval=True`` (running statistics,
  affine parameters still trained), checked below by the unchanged running means;
* loss averaging: every loss is a mean over the local batch and DDP averages the gradients
  over the processes, which is the mean over the global batch - except DIST's intra-class
  term, a correlation over the batch: with ``gather_intra=True`` its statistics are
  all-reduced (and the gradient summed back), which restores the global gradient; with
  ``gather_intra=False`` each process uses its own 4 images, and the weights measurably
  differ (the control that shows the comparison is not trivially passing).

Tolerance: float32 sums in another order (local partial sums, gloo all-reduce) differ by
~1e-7 relative per step; after 3 SGD steps (lr 0.1, momentum 0.9) the measured largest
weight difference is ~1e-7 (the weights moved by ~1e-1). ``ATOL = 1e-5`` leaves 100x
headroom and is still ~100x below the per-process-intra control (~2e-3).

The loss value of ``DISTLoss(gather_intra=True)`` on 2 processes equal to the whole batch on
one (and its gradient) is the unit test
``tests/test_models/test_losses/test_dist_loss.py::
test_gather_intra_with_two_processes_equals_the_whole_batch``; here it is the gradient
through the distiller, DDP and the tools that is checked, via the trained weights.
"""
import os
import os.path as osp
import pickle
import re
import socket
import subprocess
import sys

import pytest
import torch

from mmkd.datasets import cls_overrides
from mmkd.models.distillers import build_model_from_cfg
from mmkd.recipes import write_config
from mmkd.testing import ROOT, run_tool

ATOL = 1e-5
BATCH = 4  # per process; the single process gets 2 * BATCH
#: CPU processes also where GPUs exist (gloo; the comparison is between CPU runs)
CPU = dict(CUDA_VISIBLE_DEVICES='')


def free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def run_dist(script: str, args, timeout: int = 300) -> str:
    """``bash tools/<script> ...`` from the repo root on a free port; returns the output."""
    for _ in range(2):
        env = dict(os.environ, PORT=free_port(), PYTHON=sys.executable, PYTHONUNBUFFERED='1',
                   **CPU)
        proc = subprocess.run(['bash', osp.join('tools', script)] + list(args), cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout)
        out = proc.stdout + proc.stderr
        # One retry, for one known transient only: a CPU (gloo) rank aborting in C++ with
        # "terminate called without an active exception" (seen once in 5 CI dry runs, the
        # same command passing on rerun). Any other failure fails at once.
        if proc.returncode == 0 or 'terminate called without an active exception' not in out:
            break
    assert proc.returncode == 0, f'{script} failed ({proc.returncode}):\n{out[-6000:]}'
    return out


def student(path: str) -> dict:
    state = torch.load(path, map_location='cpu', weights_only=False)['state_dict']
    return {k: v for k, v in state.items() if k.startswith('student.')}


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a
               if a[k].is_floating_point())


@pytest.fixture(scope='module')
def runs(cls_data, tmp_path_factory):
    """One 1-process run (batch 8) and two 2-process runs (batch 4 each), same start."""
    tmp = tmp_path_factory.mktemp('dist')
    torch.manual_seed(0)
    teacher = build_model_from_cfg('mmpretrain::resnet/resnet34_8xb32_in1k.py')
    torch.save(dict(state_dict=teacher.state_dict()), str(tmp / 'teacher.pth'))

    overrides = cls_overrides(cls_data, size=32, batch_size=2 * BATCH, max_epochs=1)
    train = overrides['train_dataloader']
    train['dataset']['pipeline'] = overrides['test_dataloader']['dataset']['pipeline']
    overrides.update(
        randomness=dict(seed=0),
        model=dict(teacher_ckpt=str(tmp / 'teacher.pth'),
                   student=dict(backbone=dict(norm_eval=True)),
                   distill_losses=dict(dist=dict(gather_intra=True))))
    cfg = write_config(str(tmp / 'dist.py'), 'configs/dist/resnet_r34_r18_in1k.py', overrides)

    # The shared start: the distiller as the Runner builds it, initialised.
    torch.manual_seed(1)
    model = build_model_from_cfg(cfg)
    model.init_weights()
    init = str(tmp / 'init.pth')
    torch.save(dict(state_dict=model.state_dict()), init)

    work = {k: str(tmp / k) for k in ('one', 'two', 'two_local')}
    logs = dict(one=run_tool(['tools/train.py', cfg, '--work-dir', work['one'],
                              '--cfg-options', f'load_from={init}'], env=CPU))
    for name, gather in (('two', True), ('two_local', False)):
        logs[name] = run_dist('dist_train.sh', [
            cfg, '2', '--work-dir', work[name], '--cfg-options', f'load_from={init}',
            f'train_dataloader.batch_size={BATCH}',
            f'model.distill_losses.dist.gather_intra={gather}'])
    return dict(cfg=cfg, init=init, work=work, logs=logs, tmp=tmp)


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_the_whole_batch(runs):
    logs, work = runs['logs'], runs['work']
    assert 'Distributed training: True' in logs['two']
    assert 'Distributed training: False' in logs['one']
    # 24 images: 3 iterations of 8 on one process, of 2 x 4 on two
    for name in ('one', 'two'):
        assert 'Epoch(train) [1][3/3]' in logs[name] and 'loss_dist' in logs[name]
    init = student(runs['init'])
    one = student(osp.join(work['one'], 'epoch_1.pth'))
    two = student(osp.join(work['two'], 'epoch_1.pth'))
    moved = max_diff(init, one)
    assert moved > 1e-2  # the student did train
    for k in one:  # norm_eval: BatchNorm statistics untouched in both runs
        if k.endswith(('running_mean', 'running_var')):
            assert torch.equal(one[k], init[k]) and torch.equal(two[k], init[k]), k
    mismatch = max_diff(one, two)
    assert mismatch < ATOL, (mismatch, moved)


@pytest.mark.slow
def test_intra_class_term_per_process_differs(runs):
    """Control: ``gather_intra=False`` correlates each process's 4 images only."""
    work = runs['work']
    one = student(osp.join(work['one'], 'epoch_1.pth'))
    local = student(osp.join(work['two_local'], 'epoch_1.pth'))
    assert max_diff(one, local) > 10 * ATOL


@pytest.mark.slow
def test_dist_test_evaluates_with_two_processes(runs):
    """dist_test.sh on 11 images (the sampler pads rank 1): the 1-process predictions."""
    tmp, cfg = runs['tmp'], runs['cfg']
    ckpt = osp.join(runs['work']['two'], 'epoch_1.pth')
    opts = ['--cfg-options', 'test_dataloader.dataset.indices=11', 'test_dataloader.batch_size=2']
    log2 = run_dist('dist_test.sh', [cfg, ckpt, '2', '--work-dir', str(tmp / 'test_two'),
                                     '--out', str(tmp / 'two.pkl')] + opts)
    log1 = run_tool(['tools/test.py', cfg, ckpt, '--work-dir', str(tmp / 'test_one'),
                     '--out', str(tmp / 'one.pkl')] + opts, env=CPU)
    assert 'Distributed training: True' in log2

    def top1(log):
        return float(re.findall(r'accuracy/top1:\s*([0-9.]+)', log)[-1])

    assert top1(log2) == top1(log1)
    with open(tmp / 'two.pkl', 'rb') as f:
        two = pickle.load(f)
    with open(tmp / 'one.pkl', 'rb') as f:
        one = pickle.load(f)
    assert len(two) == len(one) == 11  # the padded duplicate is dropped
    for a, b in zip(two, one):
        assert a['img_path'] == b['img_path']
        torch.testing.assert_close(a['pred_score'], b['pred_score'])
