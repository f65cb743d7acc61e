"""mmkd.resources finds the shipped configs/ and tools/; with mmkd.recipes and the data overrides
of mmkd.datasets it works from a checkout and from an installed wheel alike."""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

from mmkd.recipes import method_configs
from mmkd.resources import configs_dir, project_dir, tools_dir

CHECKOUT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_a_checkout_finds_its_own_folders():
    """In a checkout, mmkd/.mim/{configs,tools} are links to the repository's folders."""
    assert configs_dir() == osp.realpath(osp.join(CHECKOUT, 'configs'))
    assert tools_dir() == osp.realpath(osp.join(CHECKOUT, 'tools'))
    assert project_dir() == osp.realpath(CHECKOUT)
    assert osp.isfile(osp.join(project_dir(), 'tools', 'train.py'))


# Run by the installed copy, in a folder outside the checkout; prints what it found as JSON.
WHEEL_CHECK = '''
import json, os.path as osp, subprocess, sys
import mmkd
from mmengine.config import Config
from mmkd.datasets import cls_overrides, make_cls
from mmkd.recipes import distiller_settings, method_configs, no_pretrained, write_config
from mmkd.resources import configs_dir, project_dir, tools_dir
from mmkd.testing import ROOT

det = method_configs('*/faster-rcnn*_coco.py')
info = make_cls('data', num_train=6, num_val=6, img_size=(32, 32))
path = write_config('kd.py', osp.join(configs_dir(), 'kd', 'resnet_r34_r18_in1k.py'),
                    cls_overrides(info))
cfg = Config.fromfile(path)
no_pretrained(cfg.model)
helps = [subprocess.run([sys.executable, osp.join(tools_dir(), tool), '--help'],
                        capture_output=True, text=True).stdout
         for tool in ('demo.py', 'analysis_tools/benchmark_accuracy.py')]
print(json.dumps(dict(
    mmkd=mmkd.__file__, configs=configs_dir(), tools=tools_dir(), project=project_dir(),
    root=ROOT, det=det, rekd=distiller_settings(det['rekd'])['type'],
    data_root=cfg.train_dataloader.dataset.data_root, loss=cfg.model.distill_losses.kd.type,
    helps=helps)))
'''


def test_an_installed_wheel_finds_its_copies(tmp_path):
    """``pip wheel`` + ``pip install --target``: the helpers find the package's own copies of
    configs/ and tools/ (not the checkout, not site-packages itself), and the demo and the
    accuracy benchmark start from there."""
    src = tmp_path / 'src'  # a copy: building in the checkout would leave build/ in it
    src.mkdir()
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy(osp.join(CHECKOUT, name), src / name)
    for name in ('mmkd', 'configs', 'tools'):
        shutil.copytree(osp.join(CHECKOUT, name), src / name, symlinks=True,
                        ignore=shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info'))
    pip = [sys.executable, '-m', 'pip', '-q']
    subprocess.run(pip + ['wheel', str(src), '--no-deps', '--no-build-isolation', '-w',
                          str(tmp_path / 'dist')], check=True, cwd=tmp_path, timeout=300)
    (wheel, ) = (tmp_path / 'dist').glob('mmkd-*.whl')
    site = tmp_path / 'site'
    subprocess.run(pip + ['install', '--no-deps', '--target', str(site), str(wheel)],
                   check=True, timeout=300)

    run_dir = tmp_path / 'elsewhere'
    run_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONUNBUFFERED='1')
    proc = subprocess.run([sys.executable, '-c', WHEEL_CHECK], cwd=run_dir, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])

    assert found['mmkd'] == str(site / 'mmkd' / '__init__.py')
    pkg = osp.realpath(site / 'mmkd')  # what the helpers return: symlinks resolved
    assert found['configs'] == osp.join(pkg, '.mim', 'configs')
    assert found['tools'] == osp.join(pkg, '.mim', 'tools')
    assert found['project'] == found['root'] == osp.join(pkg, '.mim')
    for key in ('configs', 'tools'):
        assert osp.isdir(found[key]) and not osp.islink(found[key])
    # The same methods as in the checkout, each config a file of the installed copy.
    assert sorted(found['det']) == sorted(method_configs('*/faster-rcnn*_coco.py'))
    for path in found['det'].values():
        assert path.startswith(pkg + os.sep) and osp.isfile(path)
    assert found['rekd'] == 'mmkd.TwoStageDistiller' and found['loss'] == 'KDLoss'
    assert found['data_root'] == osp.realpath(run_dir / 'data')
    demo_help, bench_help = found['helps']
    assert '--method' in demo_help and 'rekd' in demo_help
    assert '--tasks' in bench_help
