"""No code runs from a checkpoint, whichever way mmkd loads it.

A crafted checkpoint whose unpickling would create a marker file is refused,
with an error naming the file, the type and the opt-in, and the marker never
appears, for every entry point: ``teacher_ckpt`` (a path and an http URL served
from 127.0.0.1), ``tools/train.py --resume``, ``load_from``, a pretrained
``init_cfg`` (http URL), ``tools/test.py CONFIG CKPT``, ``extract_student.py``,
and MMEngine's ``CheckpointLoader`` schemes once mmkd registered them.
Truncated and non-checkpoint files as ``teacher_ckpt`` give an error naming
``teacher_ckpt`` and the file. Real runner checkpoints of a classification
(mmpretrain ResNet), a detection (mmdet RetinaNet) and a segmentation (mmseg
PSPNet) run load with the safe loader exactly as with ``weights_only=False``
and resume exactly.
"""
import functools
import os
import os.path as osp
import pickle
import runpy
import subprocess
import sys
import threading
from collections.abc import Mapping
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn

from mmkd.datasets import cls_overrides, det_overrides, seg_overrides
from mmkd.models.distillers import load_teacher_checkpoint
from mmkd.recipes import write_config
from mmkd.testing import ROOT
from mmkd.utils import (
    ALLOWLIST,
    TRUST_ENV,
    CheckpointReadError,
    UnsafeCheckpointError,
    load_checkpoint_file,
    register_checkpoint_loader,
    safe_load,
)


class WritesMarker:
    """Unpickling this object opens ``path`` for writing: the file appears if code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, 'w')


class CallsGetattr:
    """Unpickling this calls ``getattr(HistoryBuffer, '__init__')``: not a statistics method."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


def runner_like(**extra):
    """What a runner checkpoint holds: tensors, a HistoryBuffer, numpy values."""
    return dict(meta=dict(epoch=1, iter=3, seed=np.int64(7)),
                state_dict={'student.w': torch.ones(2), 'teacher.w': torch.zeros(2)},
                message_hub=dict(log_scalars={'train/loss': HistoryBuffer([1.5, 0.5], [1, 1])},
                                 runtime_info=dict(eta=np.float64(2.5))),
                **extra)


@pytest.fixture
def evil(tmp_path):
    """A crafted checkpoint (runner-like plus one object that creates ``marker``)."""
    marker = tmp_path / 'MARKER'
    path = tmp_path / 'evil.pth'
    torch.save(runner_like(x=WritesMarker(marker)), path)
    yield str(path), marker
    assert not marker.exists(), 'code ran while loading the checkpoint'


def assert_refused(message, name, kind='io.open'):
    assert name in message and kind in message, message
    assert f'{TRUST_ENV}=1' in message and '--trust-checkpoint' in message, message


class QuietHandler(SimpleHTTPRequestHandler):

    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path, monkeypatch):
    """An http server on 127.0.0.1 serving a temporary folder: ``(folder, base URL)``."""
    root = tmp_path / 'served'
    root.mkdir()
    server = ThreadingHTTPServer(('127.0.0.1', 0),
                                 functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))  # the download cache
    monkeypatch.setenv('NO_PROXY', '127.0.0.1')
    monkeypatch.setenv('no_proxy', '127.0.0.1')
    try:
        yield root, f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --------------------------------------------------------------------- in-process entry points


def test_safe_load_reads_runner_like_checkpoints_and_restores_torchs_allowlist(tmp_path):
    path = str(tmp_path / 'ok.pth')
    torch.save(runner_like(), path)
    before = set(torch.serialization.get_safe_globals())
    ckpt = safe_load(path)
    assert set(torch.serialization.get_safe_globals()) == before  # nothing left process-wide
    assert ckpt['meta']['seed'] == 7 and ckpt['message_hub']['runtime_info']['eta'] == 2.5
    assert ckpt['message_hub']['log_scalars']['train/loss'].mean() == 1.0
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)  # torch's default still refuses numpy and HistoryBuffer
    # The legacy (non-zip) format, as mmdet's publish_model.py writes model-zoo files.
    legacy = str(tmp_path / 'legacy.pth')
    torch.save(runner_like(), legacy, _use_new_zipfile_serialization=False)
    assert safe_load(legacy)['meta']['seed'] == 7
    assert ALLOWLIST and not any(getattr(e, '__module__', '') in ('os', 'builtins')
                                 for e in ALLOWLIST)


def test_crafted_checkpoints_are_refused(evil, tmp_path):
    path, marker = evil
    for load in (safe_load, load_checkpoint_file):
        with pytest.raises(UnsafeCheckpointError) as e:
            load(path)
        assert_refused(str(e.value), repr(path))
    # The legacy (non-zip) format, a blocked module and a getattr outside the allowed ones.
    legacy = str(tmp_path / 'legacy.pth')
    torch.save(dict(x=WritesMarker(marker)), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError) as e:
        safe_load(legacy)
    assert_refused(str(e.value), legacy)
    sneaky = str(tmp_path / 'getattr.pth')
    torch.save(dict(x=CallsGetattr()), sneaky)
    with pytest.raises(UnsafeCheckpointError) as e:
        safe_load(sneaky)
    assert_refused(str(e.value), sneaky, 'HistoryBuffer.__init__')


@pytest.fixture
def logged(monkeypatch):
    """What mmkd.utils.checkpoint logs (MMEngine's print_log), as a list of messages."""
    import mmkd.utils.checkpoint as module
    messages = []
    monkeypatch.setattr(module, 'print_log', lambda msg, *a, **k: messages.append(msg))
    return messages


def test_the_opt_in_loads_a_trusted_file_with_a_warning(evil, monkeypatch, logged):
    path, marker = evil
    monkeypatch.setenv(TRUST_ENV, '1')
    with pytest.raises(UnsafeCheckpointError):
        safe_load(path, trust=False)  # an explicit trust=False wins
    assert not logged and not marker.exists()
    ckpt = safe_load(path)
    ckpt['x'].close()
    assert marker.exists()  # it did run: that is what the opt-in means
    assert len(logged) == 1
    assert f'{path!r} holds io.open' in logged[0]
    assert 'weights_only=False because MMKD_TRUST_CHECKPOINTS=1' in logged[0]
    marker.unlink()


def test_teacher_ckpt_path_and_distiller_refuse_a_crafted_file(evil):
    path, _ = evil
    with pytest.raises(UnsafeCheckpointError) as e:
        load_teacher_checkpoint(nn.Linear(2, 2), path)
    assert_refused(str(e.value), f'teacher_ckpt {path!r}')


def test_teacher_ckpt_and_mmengine_schemes_over_http(evil, http_dir, monkeypatch):
    path, _ = evil
    root, url = http_dir
    os.replace(path, root / 'evil.pth')
    teacher = nn.Linear(2, 2)
    torch.save(dict(meta=dict(dataset_meta=dict(classes=('a', 'b'))),
                    state_dict=teacher.state_dict()), root / 'zoo.pth')  # model-zoo style
    torch.save(runner_like(), root / 'runner.pth')

    with pytest.raises(UnsafeCheckpointError) as e:
        load_teacher_checkpoint(nn.Linear(2, 2), f'{url}/evil.pth')
    assert_refused(str(e.value), f'teacher_ckpt \'{url}/evil.pth')
    other = nn.Linear(2, 2)
    load_teacher_checkpoint(other, f'{url}/zoo.pth')
    assert torch.equal(other.weight, teacher.weight)

    # MMEngine's schemes once mmkd registered its loaders (as tools/train.py does).
    register_checkpoint_loader()
    with pytest.raises(UnsafeCheckpointError) as e:
        CheckpointLoader.load_checkpoint(f'{url}/evil.pth', map_location='cpu')
    assert_refused(str(e.value), f'{url}/evil.pth')
    ckpt = CheckpointLoader.load_checkpoint(f'{url}/runner.pth', map_location='cpu')
    assert ckpt['meta']['seed'] == 7
    import mmkd.utils.checkpoint as module
    monkeypatch.setattr(module, 'get_torchvision_models', lambda: dict(resnet18=f'{url}/evil.pth'))
    monkeypatch.setattr(module, 'get_external_models', lambda: dict(r50=f'{url}/evil.pth'))
    for name in ('torchvision://resnet18', 'open-mmlab://r50'):
        with pytest.raises(UnsafeCheckpointError):
            CheckpointLoader.load_checkpoint(name, map_location='cpu')
        with pytest.raises(UnsafeCheckpointError, match=f"teacher_ckpt '{url}/evil.pth"):
            load_teacher_checkpoint(nn.Linear(2, 2), name)


@pytest.mark.parametrize('content', ['truncated', 'random', 'text', 'empty', 'pickle'])
def test_corrupt_teacher_ckpt_names_teacher_ckpt_and_the_file(content, tmp_path):
    path = str(tmp_path / f'{content}.pth')
    if content == 'truncated':
        torch.save(runner_like(), path)
        data = open(path, 'rb').read()
        open(path, 'wb').write(data[:len(data) // 2])
    elif content == 'pickle':  # pickle.dump, not torch.save
        with open(path, 'wb') as f:
            pickle.dump(dict(w=[1.0]), f)
    else:
        data = dict(random=np.random.default_rng(0).bytes(1000), text=b'hello\n', empty=b'')
        open(path, 'wb').write(data[content])
    with pytest.raises(CheckpointReadError, match=f'teacher_ckpt {path!r} is not a readable '
                       'PyTorch checkpoint'):
        load_teacher_checkpoint(nn.Linear(2, 2), path)
    with pytest.raises(IsADirectoryError, match=f'teacher_ckpt {str(tmp_path)!r} is a directory'):
        load_teacher_checkpoint(nn.Linear(2, 2), str(tmp_path))


# --------------------------------------------------------------------------------- the tools


def tool(args, env=None):
    """Runs ``python tools/...`` like a user; returns (exit code, output)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1', NO_PROXY='127.0.0.1',
                    no_proxy='127.0.0.1', **(env or {}))
    full_env.pop(TRUST_ENV, None)
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=full_env)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def cls_cfg(cls_data, tmp_path_factory):
    overrides = cls_overrides(cls_data, size=32, batch_size=8, max_epochs=1)
    overrides['model'] = dict(head=dict(num_classes=6))
    return write_config(str(tmp_path_factory.mktemp('cfg') / 'resnet.py'),
                        'mmpretrain::resnet/resnet18_8xb32_in1k.py', overrides)


@pytest.mark.parametrize('entry', ['resume', 'load_from', 'init_cfg_url', 'test'])
def test_tools_refuse_a_crafted_checkpoint(entry, cls_cfg, evil, http_dir, tmp_path):
    path, _ = evil
    root, url = http_dir
    work = ['--work-dir', str(tmp_path / 'work')]
    args = dict(
        resume=['tools/train.py', cls_cfg, '--resume', path] + work,
        load_from=['tools/train.py', cls_cfg, '--cfg-options', f'load_from={path}'] + work,
        init_cfg_url=['tools/train.py', cls_cfg, '--cfg-options',
                      'model.backbone.init_cfg.type=Pretrained',
                      f'model.backbone.init_cfg.checkpoint={url}/evil.pth'] + work,
        test=['tools/test.py', cls_cfg, path] + work)[entry]
    if entry == 'init_cfg_url':
        os.replace(path, root / 'evil.pth')
        path = f'{url}/evil.pth'
    code, out = tool(args, env=dict(TORCH_HOME=str(tmp_path / 'torch_home')))
    assert code != 0 and 'UnsafeCheckpointError' in out, out[-3000:]
    assert_refused(out, path)
    assert 'Epoch(train)' not in out


def extract_student(args, monkeypatch):
    """Runs tools/model_converters/extract_student.py in this process (its own main)."""
    monkeypatch.setattr(sys, 'argv', ['extract_student.py'] + [str(a) for a in args])
    runpy.run_path(osp.join(ROOT, 'tools', 'model_converters', 'extract_student.py'),
                   run_name='__main__')


def test_extract_student_is_safe_by_default_and_says_so_only_when_trusted(
        evil, tmp_path, monkeypatch, capsys, logged):
    path, marker = evil
    monkeypatch.delenv(TRUST_ENV, raising=False)
    good = tmp_path / 'distiller.pth'
    torch.save(runner_like(), good)
    extract_student([good, tmp_path / 'student.pth'], monkeypatch)
    out = capsys.readouterr()
    assert 'wrote 1 student tensors' in out.out and not logged
    assert 'trust' not in (out.out + out.err).lower() and 'weights_only' not in out.out + out.err
    assert list(torch.load(tmp_path / 'student.pth')['state_dict']) == ['w']  # plain tensors

    with pytest.raises(UnsafeCheckpointError) as e:
        extract_student([path, tmp_path / 'evil_student.pth'], monkeypatch)
    assert_refused(str(e.value), repr(path))
    assert not osp.exists(tmp_path / 'evil_student.pth') and not logged

    # The opt-in, as a user runs it, on a file they trust: loaded with weights_only=False,
    # with a warning; the student checkpoint written holds tensors and plain values only.
    code, out = tool(['tools/model_converters/extract_student.py', path,
                      str(tmp_path / 'trusted.pth'), '--trust-checkpoint'])
    assert code == 0 and 'weights_only=False because MMKD_TRUST_CHECKPOINTS=1' in out, out
    assert marker.exists()
    marker.unlink()
    assert list(torch.load(tmp_path / 'trusted.pth', weights_only=True)['state_dict']) == ['w']


# ---------------------------------------------------------- real runner checkpoints resume exactly


def assert_same(a, b, path='ckpt'):
    """Equal value by value, with the same types (tensors, numpy, HistoryBuffer, containers)."""
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), path
    elif isinstance(a, Mapping):
        assert list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f'{path}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{path}[{i}]')
    elif isinstance(a, HistoryBuffer):
        assert_same(vars(a), vars(b), path)
    else:
        assert a == b, (path, a, b)


def run(cfg_path, work, name, **changes):
    """MMEngine's Runner on a config, in this process (checkpoints through mmkd's loaders).

    The default scope it sets is undone afterwards, so that later tests build as before.
    """
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    cfg = Config.fromfile(cfg_path)
    cfg.update(work_dir=str(work), experiment_name=name, val_cfg=None, val_dataloader=None,
               val_evaluator=None, **changes)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        runner = Runner.from_cfg(cfg)
        runner.train()
    return runner


TASKS = {
    'cls': ('mmpretrain::resnet/resnet18_8xb32_in1k.py', 'epoch_1.pth'),
    'det': ('mmdet::retinanet/retinanet_r18_fpn_1x_coco.py', 'epoch_1.pth'),
    'seg': ('mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py', 'iter_2.pth'),
}


@pytest.mark.parametrize('task', list(TASKS))
def test_real_runner_checkpoints_load_and_resume_exactly(task, request, tmp_path):
    base, ckpt_name = TASKS[task]
    if task == 'cls':
        overrides = cls_overrides(request.getfixturevalue('cls_data'), size=32, batch_size=8)
        overrides['model'] = dict(head=dict(num_classes=6))
    elif task == 'det':
        overrides = det_overrides(request.getfixturevalue('det_data'), scale=(64, 64))
        overrides['model'] = dict(backbone=dict(init_cfg=None), bbox_head=dict(num_classes=6))
    else:
        overrides = seg_overrides(request.getfixturevalue('seg_data'), crop=(64, 128),
                                  scale=(128, 64), max_iters=2)
        overrides['model'] = dict(pretrained=None, data_preprocessor=dict(size=(64, 128)),
                                  decode_head=dict(num_classes=7),
                                  auxiliary_head=dict(num_classes=7))
    cfg = write_config(str(tmp_path / f'{task}.py'), base, overrides)
    register_checkpoint_loader()  # as tools/train.py does
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(cfg, tmp_path / 'first', f'safety_{task}_first')
        ckpt_path = str(tmp_path / 'first' / ckpt_name)
        ckpt = safe_load(ckpt_path, map_location='cpu')
        assert_same(ckpt, torch.load(ckpt_path, map_location='cpu', weights_only=False))
        assert ckpt['message_hub']['log_scalars'] and ckpt['optimizer']['state']

        runner = run(cfg, tmp_path / 'resumed', f'safety_{task}_resumed', resume=True,
                     load_from=ckpt_path)
    finally:
        torch.set_num_threads(threads)
    assert (runner.epoch, runner.iter) == (ckpt['meta']['epoch'], ckpt['meta']['iter'])
    assert_same(dict(runner.model.state_dict()), dict(ckpt['state_dict']))
    assert_same(runner.optim_wrapper.state_dict(), ckpt['optimizer'])
    schedulers = runner.param_schedulers
    assert_same([s.state_dict() for s in schedulers], ckpt['param_schedulers'])
    for key, buffer in ckpt['message_hub']['log_scalars'].items():
        assert_same(runner.message_hub.log_scalars[key], buffer, key)
