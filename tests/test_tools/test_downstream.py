"""A downstream project using mmkd: projects/example_downstream, run from outside the repo.

The project folder is copied into a temporary directory (the working directory of every
command, nothing of the mmkd checkout on PYTHONPATH) and used as its README says, on the
generated 6-class image folders (``SHAPES_ROOT``):

1. its teacher config (mmpretrain's ResNet-34, our classes) trains with mmkd's
   ``tools/train.py``;
2. ``rekd_resnet34_resnet18_shapes.py`` inherits ``mmkd::rekd/resnet_r34_r18_in1k.py`` (by
   package, found in the installed package's ``.mim/configs``) and trains with the
   ``tools/train.py`` the package ships (``<mmkd>/.mim/tools``);
3. ``dist_resnet34_resnet18_shapes.py`` inherits ``$MMKD_ROOT/configs/dist/...`` (by path)
   and trains with mmpretrain's own ``tools/train.py``: ``custom_imports`` alone brings mmkd.

Each distillation run: the student has our 6 classes, the teacher in the checkpoint is the
one trained in step 1, and the final config merges the project's loss settings into mmkd's.

And a wheel built with ``pip wheel`` ships ``mmkd/.mim/configs`` and ``tools`` (symlinks in
the checkout), so ``mmkd::`` resolves inside a non-editable install.
"""
import glob
import os
import os.path as osp
import shutil
import subprocess
import sys
import zipfile

import mmpretrain
import pytest
import torch
from mmengine.config import Config

import mmkd
from mmkd.models.distillers import build_model_from_cfg
from mmkd.testing import ROOT

PROJECT = osp.join(ROOT, 'projects', 'example_downstream')
#: 1 epoch of 3 iterations, data loaded in the main process
FAST = ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'train_dataloader.batch_size=8'] + [
    f'{split}_dataloader.{k}' for split in ('train', 'val', 'test')
    for k in ('num_workers=0', 'persistent_workers=False')]


def load(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


@pytest.fixture(scope='module')
def project(cls_data, tmp_path_factory):
    """The copied project, its environment, and its trained teacher."""
    root = str(tmp_path_factory.mktemp('downstream') / 'my_project')
    shutil.copytree(PROJECT, root)
    assert not osp.realpath(root).startswith(osp.realpath(ROOT) + os.sep)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(SHAPES_ROOT=cls_data['data_root'], MMKD_ROOT=ROOT, PYTHONUNBUFFERED='1')

    def run(script, config, work_dir, *options, flags=()):
        cmd = [sys.executable, script, config, '--work-dir', work_dir, *flags, '--cfg-options',
               *FAST, *options]
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                              timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f'{cmd} failed ({proc.returncode}):\n{out[-6000:]}'
        return out

    # (--auto-scale-lr: mmpretrain's auto_scale_lr has no `enable` key, mmkd's tool copes)
    log = run(osp.join(ROOT, 'tools', 'train.py'), 'configs/resnet34_shapes.py',
              'work_dirs/resnet34_shapes', flags=['--auto-scale-lr'])
    teacher = osp.join(root, 'work_dirs', 'resnet34_shapes', 'epoch_1.pth')
    env['TEACHER_CKPT'] = teacher  # the configs' {{$TEACHER_CKPT:...}} (default: epoch 20)
    return dict(root=root, run=run, teacher=teacher, teacher_log=log,
                data_root=cls_data['data_root'])


def check_distilled(project, work_dir, log, loss_key):
    assert 'Epoch(train) [1][3/3]' in log and loss_key in log  # 24 images, batch 8
    assert 'accuracy/top1' in log
    state = load(osp.join(project['root'], work_dir, 'epoch_1.pth'))
    assert state['student.head.fc.weight'].shape == (6, 512)  # our classes
    teacher = load(project['teacher'])
    assert state['teacher.head.fc.weight'].shape == (6, 512)
    for k, v in teacher.items():  # exactly the teacher trained in the project
        assert torch.equal(state[f'teacher.{k}'], v), k
    # the configuration the run used, as the Runner dumped it
    name = [f for f in os.listdir(osp.join(project['root'], work_dir)) if f.endswith('.py')]
    return Config.fromfile(osp.join(project['root'], work_dir, name[0]))


@pytest.mark.slow
def test_teacher_trains_on_the_project_data(project):
    assert 'Epoch(train) [1][3/3]' in project['teacher_log']
    assert 'lr: 1.5625e-03' in project['teacher_log']  # 0.05 * 8 / 256 (auto-scaled)
    assert load(project['teacher'])['head.fc.weight'].shape == (6, 512)


@pytest.mark.slow
def test_config_inheriting_by_package_trains_with_the_packaged_tools(project):
    tools = osp.join(osp.dirname(mmkd.__file__), '.mim', 'tools', 'train.py')
    work = 'work_dirs/rekd_resnet34_resnet18_shapes'
    log = project['run'](tools, 'configs/rekd_resnet34_resnet18_shapes.py', work)
    cfg = check_distilled(project, work, log, 'loss_rekd')
    assert cfg.model.type == 'mmkd.ClsDistiller'
    # the project's k, temperature and weight; mmkd's alpha, beta, gamma and top-k source
    assert dict(cfg.model.distill_losses.rekd) == dict(
        type='ReKDLoss', k=2, alpha=1.0, beta=1.0, gamma=0.0, temperature=2.0,
        topk_source='teacher', loss_weight=2.0)
    assert [h.type for h in cfg.custom_hooks] == ['mmkd.DistillLossScheduleHook']  # mmkd's
    assert cfg.train_dataloader.dataset.data_root == project['data_root']  # $SHAPES_ROOT
    # and the built loss carries them
    model = build_model_from_cfg(
        osp.join(project['root'], work, 'rekd_resnet34_resnet18_shapes.py'))
    loss = model.distill_losses['rekd']
    assert (loss.k, loss.temperature, loss.loss_weight) == (2, 2.0, 2.0)


@pytest.mark.slow
def test_config_inheriting_by_path_trains_with_mmpretrain_tools(project):
    tools = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'train.py')
    work = 'work_dirs/dist_resnet34_resnet18_shapes'
    log = project['run'](tools, 'configs/dist_resnet34_resnet18_shapes.py', work)
    cfg = check_distilled(project, work, log, 'loss_dist')
    assert dict(cfg.model.distill_losses.dist) == dict(
        type='DISTLoss', beta=1.0, gamma=2.0, tau=1.0, loss_weight=1.0)


@pytest.mark.slow
def test_a_wheel_ships_the_configs_and_tools(tmp_path):
    """``pip wheel``: mmkd/.mim/{configs,tools} are copied (a symlink in the checkout), and
    ``mmkd::`` configs resolve inside the installed copy."""
    src = tmp_path / 'src'
    src.mkdir()
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy(osp.join(ROOT, name), src / name)
    for name in ('mmkd', 'configs', 'tools'):
        shutil.copytree(osp.join(ROOT, name), src / name, symlinks=True,
                        ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    pip = [sys.executable, '-m', 'pip', '-q']
    subprocess.run(pip + ['wheel', str(src), '--no-deps', '--no-build-isolation', '-w',
                          str(tmp_path / 'dist')], check=True, cwd=tmp_path, timeout=300)
    (wheel, ) = glob.glob(str(tmp_path / 'dist' / 'mmkd-*.whl'))
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                                                        recursive=True)}
    assert len(configs) > 40 and {f'mmkd/.mim/{c}' for c in configs} <= names
    for tool in ('train.py', 'test.py', 'dist_train.sh', 'model_converters/extract_student.py'):
        assert f'mmkd/.mim/tools/{tool}' in names
    assert 'mmkd/.mim/model-index.yml' in names

    site = tmp_path / 'site'
    subprocess.run(pip + ['install', '--no-deps', '--target', str(site), wheel], check=True,
                   timeout=300)
    config = osp.join(PROJECT, 'configs', 'rekd_resnet34_resnet18_shapes.py')
    code = '\n'.join([
        'import mmkd', 'from mmengine.config import Config', 'print(mmkd.__file__)',
        "print(Config._get_cfg_path('mmkd::rekd/resnet_r34_r18_in1k.py', 'x.py')[0])",
        f'print(Config.fromfile({config!r}).model.distill_losses.rekd.k)'])
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True, timeout=300).stdout.split('\n')
    assert out[0] == str(site / 'mmkd' / '__init__.py')
    assert out[1] == str(site / 'mmkd' / '.mim' / 'configs' / 'rekd' / 'resnet_r34_r18_in1k.py')
    assert osp.isfile(out[1]) and not osp.islink(osp.dirname(osp.dirname(out[1])))
    assert out[2] == '2'


def test_coco_model_zoo_teacher_distils_a_student_on_our_three_classes():
    """The example config: mmdet's COCO-80 Faster R-CNN R101 teaches an R50 on 3 classes.

    Built as the config says (the teacher's 80 names from its config's CocoDataset; no
    download: teacher_ckpt None), then one training step on a generated batch."""
    from mmdet.datasets import CocoDataset
    from mmengine.registry import init_default_scope

    from mmkd.registry import MODELS
    from mmkd.testing.batches import det_batch
    cfg = Config.fromfile(osp.join(PROJECT, 'configs', 'kd_faster-rcnn_coco80_r50_ours3.py'))
    assert cfg.train_dataloader.dataset.metainfo.classes == ('person', 'bicycle', 'car')
    model_cfg = cfg.model
    model_cfg.teacher_ckpt = None
    model_cfg.student.backbone.init_cfg = None  # no pretrained download
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(model_cfg).train()
    coco = list(CocoDataset.METAINFO['classes'])
    assert model.teacher.roi_head.bbox_head.num_classes == 80
    assert model.class_index('teacher').tolist() == [coco.index(c) for c in
                                                     ('person', 'bicycle', 'car')]
    inputs, samples = det_batch()
    losses = model.loss(inputs, samples)
    assert torch.isfinite(losses['loss_kd']) and losses['loss_kd'] > 0
