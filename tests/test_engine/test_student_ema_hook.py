"""StudentEMAHook: the EMA of the distiller's student only (no teacher copy), EMAHook's
behaviour kept for it (formula, begin_iter, val/test swap, checkpoint swap under
``student.`` keys, resume, strict_load), and tools/train.py refusing mmengine's EMAHook
on a teacher-student distiller."""
import copy
import importlib.util
import math
import os.path as osp
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import EMAHook, Hook
from mmengine.runner import Runner, weights_to_cpu
from mmpretrain.structures import DataSample

from mmkd.engine import StudentEMAHook, check_ema_hooks
from mmkd.models.distillers import ClsDistiller
from mmkd.registry import HOOKS, MODELS
from mmkd.testing import ROOT
from mmkd.testing.batches import tiny_classifier
from mmkd.utils import register_checkpoint_loader

EMA = dict(ema_type='mmdet.ExpMomentumEMA', momentum=0.01, gamma=4, update_buffers=True)
W = 'backbone.conv1.weight'  # the parameter followed by hand
B = 'backbone.bn1.running_mean'  # a buffer (averaged with update_buffers=True)


def distiller_cfg():
    return dict(type='mmkd.ClsDistiller', student=tiny_classifier(10, 18, 8),
                teacher=tiny_classifier(10, 18, 8), distill_losses=dict(kd=dict(type='KDLoss')))


def distiller(seed=0):
    torch.manual_seed(seed)
    cfg = distiller_cfg()
    cfg.pop('type')
    return ClsDistiller(**cfg)


def fake_runner(model, it=0, epoch=0, resume=False):
    return SimpleNamespace(model=model, iter=it, epoch=epoch, _resume=resume)


def perturb(module, seed):
    """New values for every floating tensor of ``module`` (as a training step would)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for v in module.state_dict().values():
            if v.dtype.is_floating_point:
                v.copy_(torch.randn(v.shape, generator=g))


def two_updates(hook, model, src):
    """Two training iterations: ``src`` (the averaged module) gets new values, then the hook."""
    seen = []
    for it in range(2):
        perturb(src, seed=10 + it)
        seen.append({k: v.clone() for k, v in src.state_dict().items()})
        hook.after_train_iter(fake_runner(model, it=it), batch_idx=it)
    return seen


def test_averages_the_student_only_by_the_exp_momentum_formula():
    model = distiller()
    teacher = copy.deepcopy(model.teacher.state_dict())
    hook = StudentEMAHook(**EMA)
    hook.before_run(fake_runner(model))
    ema = hook.ema_model.module
    assert hook.src_model is model.student and hook.prefix == 'student.'
    assert list(ema.state_dict()) == list(model.student.state_dict())
    assert sum(p.numel() for p in ema.parameters()) == \
        sum(p.numel() for p in model.student.parameters()) < \
        sum(p.numel() for p in model.parameters())
    assert not hasattr(ema, 'teacher') and not hasattr(ema, 'student')

    seen = two_updates(hook, model, model.student)
    # ExpMomentumEMA: step 0 copies, step 1 lerps with (1 - m) exp(-(1 + 1) / gamma) + m.
    m = (1 - 0.01) * math.exp(-2 / 4) + 0.01
    for key in (W, B):
        want = (1 - m) * seen[0][key] + m * seen[1][key]
        torch.testing.assert_close(ema.state_dict()[key], want, rtol=1e-6, atol=1e-6)
        assert not torch.allclose(want, seen[1][key])
    assert int(hook.ema_model.steps) == 2
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher[k]), k

    # mmengine's EMAHook on the whole distiller: the same student average, plus a teacher copy.
    whole = distiller()
    ref = EMAHook(**EMA)
    ref.before_run(fake_runner(whole))
    assert any(k.startswith('teacher.') for k in ref.ema_model.module.state_dict())
    two_updates(ref, whole, whole.student)
    for k, v in ema.state_dict().items():
        assert torch.equal(ref.ema_model.module.student.state_dict()[k], v), k


def test_begin_iter_copies_the_student_until_then():
    model = distiller()
    hook = StudentEMAHook(begin_iter=2, momentum=0.5)
    hook.before_run(fake_runner(model))
    values = []
    for it in range(3):
        perturb(model.student, seed=it)
        values.append(model.student.state_dict()[W].clone())
        hook.after_train_iter(fake_runner(model, it=it), batch_idx=it)
        if it == 0:  # not started: a copy, no step counted
            assert torch.equal(hook.ema_model.module.state_dict()[W], values[0])
            assert int(hook.ema_model.steps) == 0
    # started at iteration 1 (runner.iter + 1 >= 2): a copy there, then the average.
    torch.testing.assert_close(hook.ema_model.module.state_dict()[W], 0.5 * (values[1] + values[2]))
    with pytest.raises(AssertionError, match='should not be both set'):
        StudentEMAHook(begin_iter=1, begin_epoch=1)


def saved_checkpoint(model, hook):
    checkpoint = dict(meta=dict(epoch=1, iter=2), state_dict=weights_to_cpu(model.state_dict()))
    hook.before_save_checkpoint(fake_runner(model), checkpoint)
    return checkpoint


def test_checkpoint_holds_the_ema_student_and_resumes_exactly():
    model = distiller()
    hook = StudentEMAHook(**EMA)
    hook.before_run(fake_runner(model))
    two_updates(hook, model, model.student)
    raw = {k: v.clone() for k, v in model.student.state_dict().items()}
    ema = {k: v.clone() for k, v in hook.ema_model.module.state_dict().items()}
    assert not torch.equal(raw[W], ema[W])

    checkpoint = saved_checkpoint(model, hook)
    state, ema_state = checkpoint['state_dict'], checkpoint['ema_state_dict']
    assert set(ema_state) == {'steps'} | {f'module.{k}' for k in raw}
    for k in raw:
        assert torch.equal(state[f'student.{k}'], ema[k]), k
        assert torch.equal(ema_state[f'module.{k}'], raw[k]), k
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(state[f'teacher.{k}'], v), k
    # Saving did not change the model or the average.
    assert torch.equal(model.student.state_dict()[W], raw[W])
    assert torch.equal(hook.ema_model.module.state_dict()[W], ema[W])

    # Resume into a fresh distiller (other weights): raw back in state_dict, the EMA restored.
    resumed = distiller(seed=1)
    hook2 = StudentEMAHook(**EMA)
    hook2.before_run(fake_runner(resumed))
    loaded = copy.deepcopy(checkpoint)
    hook2.after_load_checkpoint(fake_runner(resumed, resume=True), loaded)
    resumed.load_state_dict(loaded['state_dict'])  # what the runner does next
    for k in raw:
        assert torch.equal(resumed.student.state_dict()[k], raw[k]), k
        assert torch.equal(hook2.ema_model.module.state_dict()[k], ema[k]), k
    assert int(hook2.ema_model.steps) == 2

    # load_from (no resume) with an EMA checkpoint: model and average both start from the EMA.
    fresh = StudentEMAHook(**EMA)
    fresh.before_run(fake_runner(distiller(seed=2)))
    fresh.after_load_checkpoint(fake_runner(None), copy.deepcopy(checkpoint))
    for k in raw:
        assert torch.equal(fresh.ema_model.module.state_dict()[k], ema[k]), k
    assert int(fresh.ema_model.steps) == 0


def test_resume_without_ema_state_dict_and_strict_load():
    model = distiller()
    checkpoint = dict(state_dict=weights_to_cpu(model.state_dict()))
    other = distiller(seed=1)
    hook = StudentEMAHook(**EMA)
    hook.before_run(fake_runner(other))
    hook.after_load_checkpoint(fake_runner(other, resume=True), copy.deepcopy(checkpoint))
    for k, v in model.student.state_dict().items():
        assert torch.equal(hook.ema_model.module.state_dict()[k], v), k

    del checkpoint['state_dict'][f'student.{W}']
    lenient = StudentEMAHook(**EMA)
    lenient.before_run(fake_runner(other))
    lenient.after_load_checkpoint(fake_runner(other, resume=True), copy.deepcopy(checkpoint))
    assert torch.equal(lenient.ema_model.module.state_dict()[B],
                       model.student.state_dict()[B])
    strict = StudentEMAHook(strict_load=True, **EMA)
    strict.before_run(fake_runner(other))
    with pytest.raises(RuntimeError, match=r'missing keys.*backbone\.conv1\.weight'):
        strict.after_load_checkpoint(fake_runner(other, resume=True), copy.deepcopy(checkpoint))


def test_a_whole_distiller_ema_checkpoint_is_refused_on_resume_by_name():
    model = distiller()
    ref = EMAHook(**EMA)
    ref.before_run(fake_runner(model))
    two_updates(ref, model, model.student)
    checkpoint = saved_checkpoint(model, ref)
    hook = StudentEMAHook(**EMA)
    hook.before_run(fake_runner(distiller()))
    with pytest.raises(ValueError, match=r"no entry in the checkpoint's state_dict.*"
                                       r"'student\.student\.backbone"):
        hook.after_load_checkpoint(fake_runner(None, resume=True), checkpoint)


def test_a_plain_model_is_averaged_whole_as_by_emahook():
    torch.manual_seed(0)
    plain = MODELS.build(tiny_classifier(10, 18, 8))
    other = copy.deepcopy(plain)
    hooks = []
    for kind, model in ((StudentEMAHook, plain), (EMAHook, other)):
        hook = kind(**EMA)
        hook.before_run(fake_runner(model))
        two_updates(hook, model, model)
        hooks.append((hook, model))
    assert hooks[0][0].prefix == '' and hooks[0][0].src_model is plain
    ours, theirs = (saved_checkpoint(model, hook) for hook, model in hooks)
    for part in ('state_dict', 'ema_state_dict'):
        assert list(ours[part]) == list(theirs[part])
        for k, v in ours[part].items():
            assert torch.equal(v, theirs[part][k]), (part, k)
    for (hook, model), ckpt in zip(hooks, (ours, theirs)):
        hook.after_load_checkpoint(fake_runner(model, resume=True), ckpt)
    for k, v in ours['state_dict'].items():
        assert torch.equal(v, theirs['state_dict'][k]), k


# ----------------------------------------------------------------------------- a real run
def samples(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [dict(inputs=torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g),
                 data_samples=DataSample().set_gt_label(i % 10)) for i in range(n)]


class Recorder(Hook):
    """Records the student's and the averaged weight ``W`` during val / test."""

    priority = 'LOWEST'  # after StudentEMAHook's swap

    def __init__(self):
        self.seen = []

    def _record(self, runner):
        ema_hook = next(h for h in runner.hooks if isinstance(h, StudentEMAHook))
        self.seen.append(dict(student=runner.model.student.state_dict()[W].clone(),
                              ema=ema_hook.ema_model.module.state_dict()[W].clone()))

    def before_val_epoch(self, runner):
        self._record(runner)

    def before_test_epoch(self, runner):
        self._record(runner)


def runner(work_dir, max_epochs, resume=False, load_from=None, name='run'):
    loader = dict(batch_size=2, num_workers=0, collate_fn=dict(type='pseudo_collate'),
                  sampler=dict(type='DefaultSampler', shuffle=False))
    return Runner(
        model=distiller_cfg(), work_dir=work_dir, experiment_name=f'{name}_{max_epochs}',
        train_dataloader=dict(loader, dataset=samples(6, seed=0)),
        val_dataloader=dict(loader, dataset=samples(2, seed=1)),
        test_dataloader=dict(loader, dataset=samples(2, seed=1)),
        val_evaluator=dict(type='mmpretrain.Accuracy'),
        test_evaluator=dict(type='mmpretrain.Accuracy'),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs, val_interval=1),
        val_cfg=dict(), test_cfg=dict(),
        custom_hooks=[dict(type='mmkd.StudentEMAHook', **EMA), Recorder()],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=100)),
        randomness=dict(seed=0), resume=resume, load_from=load_from,
        default_scope='mmpretrain')


def hooks_of(run):
    return (next(h for h in run.hooks if isinstance(h, StudentEMAHook)),
            next(h for h in run.hooks if isinstance(h, Recorder)))


def load(path):
    return torch.load(path, map_location='cpu', weights_only=False)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Two epochs uninterrupted, and one epoch then resumed to two, in other work dirs."""
    register_checkpoint_loader()
    full_dir, part_dir = (str(tmp_path_factory.mktemp(n)) for n in ('full', 'part'))
    full = runner(full_dir, 2, name='full')
    teacher = copy.deepcopy(full.model.teacher.state_dict())
    full.train()
    runner(part_dir, 1, name='part').train()
    resumed = runner(part_dir, 2, resume=True, name='resumed')
    resumed.train()
    return SimpleNamespace(full=full, resumed=resumed, teacher=teacher,
                           ckpt=osp.join(full_dir, 'epoch_2.pth'),
                           resumed_ckpt=osp.join(part_dir, 'epoch_2.pth'))


def test_val_runs_the_ema_student_and_restores_the_raw_one(runs):
    hook, recorder = hooks_of(runs.full)
    assert len(recorder.seen) == 2  # one validation per epoch
    last = recorder.seen[-1]
    student = runs.full.model.student.state_dict()[W]
    ema = hook.ema_model.module.state_dict()[W]
    assert not torch.equal(student, ema)
    assert torch.equal(last['student'], ema)  # during val: the EMA weights
    assert torch.equal(last['ema'], student)  # (the raw ones parked in the EMA model)
    for k, v in runs.full.model.teacher.state_dict().items():
        assert torch.equal(v, runs.teacher[k]), k


def test_saved_checkpoint_holds_the_ema_student_and_the_raw_one(runs):
    hook, _ = hooks_of(runs.full)
    ckpt = load(runs.ckpt)
    raw = runs.full.model.student.state_dict()
    ema = hook.ema_model.module.state_dict()
    for k in raw:
        assert torch.equal(ckpt['state_dict'][f'student.{k}'], ema[k]), k
        assert torch.equal(ckpt['ema_state_dict'][f'module.{k}'], raw[k]), k
    for k, v in runs.teacher.items():
        assert torch.equal(ckpt['state_dict'][f'teacher.{k}'], v), k
    assert int(ckpt['ema_state_dict']['steps']) == 6  # 3 iterations x 2 epochs


def test_resume_continues_as_the_uninterrupted_run(runs):
    assert runs.resumed.iter == runs.full.iter == 6
    want, got = load(runs.ckpt), load(runs.resumed_ckpt)
    for part in ('state_dict', 'ema_state_dict'):
        assert list(got[part]) == list(want[part])
        for k, v in want[part].items():
            assert torch.equal(got[part][k], v), (part, k)
    (hook_a, _), (hook_b, _) = hooks_of(runs.full), hooks_of(runs.resumed)
    assert torch.equal(hook_b.ema_model.module.state_dict()[W],
                       hook_a.ema_model.module.state_dict()[W])
    assert int(hook_b.ema_model.steps) == int(hook_a.ema_model.steps) == 6


def test_test_runs_the_ema_student_of_a_checkpoint(runs, tmp_path):
    run = runner(str(tmp_path), 2, load_from=runs.ckpt, name='test')
    run.test()
    _, recorder = hooks_of(run)
    ema = load(runs.ckpt)['state_dict'][f'student.{W}']
    assert torch.equal(recorder.seen[-1]['student'], ema)
    assert torch.equal(run.model.student.state_dict()[W], ema)  # load_from: EMA as the model


def test_extract_student_from_the_run_gives_the_ema_or_the_raw_student(runs):
    spec = importlib.util.spec_from_file_location(
        'extract_student', osp.join(ROOT, 'tools/model_converters/extract_student.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    hook, _ = hooks_of(runs.full)
    ckpt = load(runs.ckpt)
    ema, raw = module.extract_student(ckpt), module.extract_student(ckpt, ema=False)
    assert ema['meta']['mmkd_student_weights'] == 'ema'
    assert raw['meta']['mmkd_student_weights'] == 'raw'
    for k, v in hook.ema_model.module.state_dict().items():
        assert torch.equal(ema['state_dict'][k], v), k
    for k, v in runs.full.model.student.state_dict().items():
        assert torch.equal(raw['state_dict'][k], v), k


# ------------------------------------------------------------------ tools/train.py refusal
@pytest.mark.parametrize('hook', ['EMAHook', 'mmdet.EMAHook', 'mmengine.EMAHook',
                                  'mmpretrain.EMAHook', EMAHook])
def test_mmengines_ema_hook_on_a_distiller_is_refused(hook):
    cfg = Config(dict(model=distiller_cfg(), default_scope='mmdet', custom_hooks=[
        dict(type='PipelineSwitchHook', switch_epoch=1), dict(type=hook, momentum=0.0002)]))
    name = hook if isinstance(hook, str) else 'EMAHook'
    with pytest.raises(ValueError, match=rf"custom_hooks\[1\]: {name} would average the whole "
                                         r"distiller ClsDistiller, teacher included.*"
                                         r"dict\(type='mmkd\.StudentEMAHook', \.\.\.\)"):
        check_ema_hooks(cfg)


def test_student_ema_hook_plain_models_and_lightskd_are_accepted():
    hooks = [dict(type='mmkd.StudentEMAHook', ema_type='mmdet.ExpMomentumEMA')]
    check_ema_hooks(Config(dict(model=distiller_cfg(), custom_hooks=hooks)))
    check_ema_hooks(Config(dict(model=distiller_cfg(), custom_hooks=[StudentEMAHook()])))
    ema = [dict(type='EMAHook')]
    check_ema_hooks(Config(dict(model=tiny_classifier(), custom_hooks=ema)))
    check_ema_hooks(Config(dict(model=dict(type='RTMDet'), default_scope='mmdet',
                                custom_hooks=ema)))
    check_ema_hooks(Config(dict(model=dict(type='mmkd.LightSKD'), custom_hooks=ema)))
    # the registered hook builds as a StudentEMAHook
    assert isinstance(HOOKS.build(dict(type='mmkd.StudentEMAHook')), StudentEMAHook)


def test_train_py_refuses_emahook_on_a_distiller_before_building(tmp_path):
    cfg = tmp_path / 'ema.py'
    cfg.write_text(f'model = {distiller_cfg()!r}\n'
                   "custom_hooks = [dict(type='EMAHook', ema_type='ExpMomentumEMA', "
                   "momentum=0.0002, update_buffers=True, priority=49)]\n")
    proc = subprocess.run([sys.executable, 'tools/train.py', str(cfg), '--work-dir',
                           str(tmp_path / 'work')], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert ("ValueError: mmkd: custom_hooks[0]: EMAHook would average the whole distiller "
            "ClsDistiller, teacher included") in out, out[-3000:]
    assert "use dict(type='mmkd.StudentEMAHook', ...) with the same arguments" in out
    assert 'Epoch(train)' not in out and 'teacher: no checkpoint' not in out
