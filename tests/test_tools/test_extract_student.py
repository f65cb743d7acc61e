"""extract_student.py: the EMA student by default from an EMA hook's checkpoint (StudentEMAHook,
or mmengine's EMAHook around a whole distiller), the raw one with --no-ema, what it prints,
and ``meta['mmkd_student_weights']``."""
import importlib.util
import os.path as osp
import sys
from types import SimpleNamespace

import pytest
import torch
from mmengine.hooks import EMAHook
from mmengine.runner import weights_to_cpu

from mmkd.engine import StudentEMAHook
from mmkd.models.distillers import ClsDistiller
from mmkd.registry import MODELS
from mmkd.testing import ROOT
from mmkd.testing.batches import tiny_classifier

TOOL = osp.join(ROOT, 'tools/model_converters/extract_student.py')


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('extract_student', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trained(hook_type):
    """A tiny distiller after two 'iterations' under ``hook_type``, and its checkpoint."""
    torch.manual_seed(0)
    model = ClsDistiller(student=tiny_classifier(10, 18, 8), teacher=tiny_classifier(10, 18, 8),
                         distill_losses=dict(kd=dict(type='KDLoss')))
    hook = hook_type(momentum=0.5, update_buffers=True) if hook_type else None
    runner = SimpleNamespace(model=model, iter=0, epoch=0)
    if hook:
        hook.before_run(runner)
    for it in range(2):
        with torch.no_grad():
            for p in model.student.parameters():
                p.add_(torch.randn_like(p))
        runner.iter = it
        if hook:
            hook.after_train_iter(runner, batch_idx=it)
    checkpoint = dict(meta=dict(epoch=1, iter=2, seed=0, dataset_meta=dict(classes=['a'])),
                      state_dict=weights_to_cpu(model.state_dict()))
    if hook:
        hook.before_save_checkpoint(runner, checkpoint)
    return model, hook, checkpoint


def run_main(tool, monkeypatch, capsys, args):
    capsys.readouterr()  # the logs of building the checkpoint
    monkeypatch.setattr(sys, 'argv', ['extract_student.py'] + args)
    tool.main()
    return capsys.readouterr().out


@pytest.mark.parametrize('hook_type', [StudentEMAHook, EMAHook])
def test_ema_student_by_default_raw_with_no_ema(tool, tmp_path, monkeypatch, capsys, hook_type):
    model, hook, checkpoint = trained(hook_type)
    src = str(tmp_path / 'distill.pth')
    torch.save(checkpoint, src)
    ema_model = hook.ema_model.module
    ema = (ema_model.student if hook_type is EMAHook else ema_model).state_dict()
    raw = model.student.state_dict()
    assert not torch.equal(ema['backbone.conv1.weight'], raw['backbone.conv1.weight'])

    out = run_main(tool, monkeypatch, capsys, [src, str(tmp_path / 'ema.pth')])
    assert out.strip() == (f'wrote {len(raw)} EMA student tensors to {tmp_path / "ema.pth"} '
                           f'(--no-ema for the raw ones)')
    out = run_main(tool, monkeypatch, capsys, [src, str(tmp_path / 'raw.pth'), '--no-ema'])
    assert out.strip() == (f'wrote {len(raw)} raw (not averaged) student tensors to '
                           f'{tmp_path / "raw.pth"} (--no-ema)')

    for name, want, kind in (('ema.pth', ema, 'ema'), ('raw.pth', raw, 'raw')):
        written = torch.load(tmp_path / name, map_location='cpu', weights_only=True)
        assert written['meta'] == dict(epoch=1, iter=2, dataset_meta=dict(classes=['a']),
                                       mmkd_student_weights=kind)
        assert list(written['state_dict']) == list(want)
        for k, v in want.items():
            assert torch.equal(written['state_dict'][k], v), (name, k)
        MODELS.build(tiny_classifier(10, 18, 8)).load_state_dict(written['state_dict'])


def test_a_checkpoint_without_ema_gives_the_student_and_says_so(tool, tmp_path, monkeypatch,
                                                                capsys):
    model, _, checkpoint = trained(None)
    src = str(tmp_path / 'distill.pth')
    torch.save(checkpoint, src)
    raw = model.student.state_dict()
    for flags in ([], ['--no-ema']):
        dst = str(tmp_path / 'student.pth')
        out = run_main(tool, monkeypatch, capsys, [src, dst] + flags)
        assert out.strip() == f'wrote {len(raw)} student tensors to {dst} (no EMA in this ' \
                              f'checkpoint)'
        written = torch.load(dst, map_location='cpu', weights_only=True)
        assert written['meta']['mmkd_student_weights'] == 'raw'
        for k, v in raw.items():
            assert torch.equal(written['state_dict'][k], v), k


def test_no_ema_refuses_an_ema_state_dict_without_the_student(tool):
    _, _, checkpoint = trained(StudentEMAHook)
    checkpoint['ema_state_dict'] = {'steps': torch.tensor(2)}
    assert tool.extract_student(checkpoint)['meta']['mmkd_student_weights'] == 'ema'
    with pytest.raises(ValueError, match='ema_state_dict does not hold the student'):
        tool.extract_student(checkpoint, ema=False)
