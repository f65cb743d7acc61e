"""Every shipped distiller config gives the recorded losses on one fixed batch.

``tests/data/config_losses.json`` holds, for each config ``configs/<method>/<name>.py``
(key ``<method>/<name>.py``), every key that ``model(inputs, data_samples, mode='loss')``
returned on one deterministic batch, recorded with the code as it was before a
refactor (commit c6cd37d; configs added later: recorded when they were added,
the RTMDet and LD configs with --write --out and merged). A change that alters
what a config computes fails here; a shipped distiller config without a recorded
entry, a stale entry, or different loss keys fail too.

The models are the configs' own (real depths and widths; teacher from its config),
built with ``teacher_ckpt=None`` and no pretrained ``init_cfg`` (no downloads),
small inputs (classification 64 x 64, CIFAR 32 x 32, detection 64 x 96,
segmentation 64 x 128 and the student's ``data_preprocessor.size`` to match), two
images, 64 RoIs from at most 100 proposals per image for the R-CNNs (the
configs: 512 / 1000), SyncBN as BN, one intra-op thread. Weights do not depend
on the order in which a distiller builds its parts: after the build every
parameter of two or more dimensions (conv, linear) and the bias beside it is
refilled with ``U(-sqrt(3 / fan_in), sqrt(3 / fan_in))`` (variance ``1 / fan_in``:
logits large enough that the distillation losses are far above ``atol``) from a
generator seeded by the parameter's name; the rest (norm layers) keep their
constant initial values. ``torch.manual_seed(0)`` precedes the forward (RoI
sampling, dropout). LightSKD's DSR compares with the previous batch, so
LightSKD configs see one other batch first.

Nothing here imports from ``mmkd`` except the registry (the batches are built
with torch), so the same code runs against an older checkout. To record the
values again (only when a change is meant to alter the losses)::

    python tests/test_tools/test_config_losses.py --write
"""
import argparse
import copy
import glob
import json
import math
import os.path as osp
import sys
import time
import zlib

import numpy as np
import pytest
import torch

from mmkd.recipes import no_pretrained

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
GOLDEN = osp.join(ROOT, 'tests', 'data', 'config_losses.json')
CONFIGS = sorted(
    osp.relpath(p, osp.join(ROOT, 'configs'))
    for p in glob.glob(osp.join(ROOT, 'configs', '*', '*.py'))
    if '_base_' not in p)
RTOL, ATOL = 1e-5, 1e-6
NUM_IMAGES = 2


# ------------------------------------------------------------------ batches
def _generator(seed):
    return torch.Generator().manual_seed(seed)


def cls_batch(size, num_classes, seed=0):
    from mmpretrain.structures import DataSample
    g = _generator(seed)
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
              for _ in range(NUM_IMAGES)]
    labels = torch.randint(0, num_classes, (NUM_IMAGES, ), generator=g).tolist()
    return dict(inputs=inputs, data_samples=[DataSample().set_gt_label(lb) for lb in labels])


def det_batch(num_classes=80, shape=(64, 96), with_mask=False, seed=0):
    """Images with 3 random boxes each (16-40 px), their labels and box-filling masks."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    g = _generator(seed)
    h, w = shape
    inputs, samples = [], []
    for i in range(NUM_IMAGES):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g))
        n = 3
        size = torch.randint(16, 41, (n, 2), generator=g)
        x1 = (torch.rand(n, generator=g) * (w - size[:, 0])).floor()
        y1 = (torch.rand(n, generator=g) * (h - size[:, 1])).floor()
        boxes = torch.stack([x1, y1, x1 + size[:, 0], y1 + size[:, 1]], 1).float()
        sample = DetDataSample(metainfo=dict(
            img_id=i, img_path=f'{i}.png', ori_shape=shape, img_shape=shape,
            scale_factor=(1.0, 1.0), flip=False, flip_direction=None))
        gt = InstanceData()
        gt.bboxes = boxes
        gt.labels = torch.randint(0, num_classes, (n, ), generator=g)
        if with_mask:
            masks = np.zeros((n, h, w), dtype=np.uint8)
            for j, (a, b, c, d) in enumerate(boxes.long().tolist()):
                masks[j, b:d, a:c] = 1
            gt.masks = BitmapMasks(masks, h, w)
        sample.gt_instances = gt
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def seg_batch(num_classes=19, shape=(64, 128), seed=0):
    """Images with random labels and an ignored (255) band of 4 rows."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = _generator(seed)
    inputs, samples = [], []
    for _ in range(NUM_IMAGES):
        inputs.append(torch.randint(0, 256, (3, *shape), dtype=torch.uint8, generator=g))
        labels = torch.randint(0, num_classes, (1, *shape), generator=g)
        labels[:, :4] = 255
        sample = SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape))
        sample.gt_sem_seg = PixelData(data=labels)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


SEG_SHAPE = (64, 128)


def task_of(path):
    """``(task, batch function)`` from the config name's dataset suffix."""
    name = osp.basename(path)
    if name.endswith('_coco.py'):
        return 'det', lambda seed=0: det_batch(with_mask=name.startswith('mask-rcnn'),
                                               seed=seed)
    if name.endswith('_cityscapes.py'):
        return 'seg', lambda seed=0: seg_batch(shape=SEG_SHAPE, seed=seed)
    if name.endswith('_cifar100.py'):
        return 'cls', lambda seed=0: cls_batch(32, 100, seed)
    if name.endswith('_in1k.py'):
        return 'cls', lambda seed=0: cls_batch(64, 1000, seed)
    raise ValueError(f'no batch for the dataset of {path}')


# ------------------------------------------------------------------- models
def model_cfg(cfg, task):
    """The config's ``model`` as the Runner builds it, on the small settings."""
    model = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    assert str(model.type).startswith('mmkd.'), model.type
    if 'teacher_ckpt' in model:
        model.teacher_ckpt = None
    no_pretrained(model)
    student = model.student
    if task == 'det' and 'rcnn' in student.get('train_cfg', {}):
        student.train_cfg.rcnn.sampler.num = 64
        student.train_cfg.rpn_proposal.max_per_img = 100
    if task == 'seg':
        student.data_preprocessor.size = SEG_SHAPE
    return model


@torch.no_grad()
def reinit(model):
    """Name-seeded ``U(+-sqrt(3 / fan_in))`` of conv / linear weights and their biases."""
    for mod_name, module in model.named_modules():
        params = dict(module.named_parameters(recurse=False))
        weight = params.get('weight')
        if weight is None or weight.dim() < 2:
            weight = None
        for name, p in params.items():
            if p.dim() < 2 and not (name == 'bias' and weight is not None):
                continue
            fan_in = (weight if p.dim() < 2 else p)[0].numel()
            bound = math.sqrt(3 / max(fan_in, 1))
            g = _generator(zlib.crc32(f'{mod_name}.{name}'.encode()))
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)


def as_floats(value):
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in as_floats(v)]
    return torch.as_tensor(value).detach().double().flatten().tolist()


def config_losses(path):
    """``{key: [floats]}`` of one training-mode loss call of ``configs/<path>``."""
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope

    from mmkd.registry import MODELS
    task, make_batch = task_of(path)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmengine')):
            torch.manual_seed(0)
            model = revert_sync_batchnorm(MODELS.build(model_cfg(cfg, task)))
            reinit(model)
            model.train()
            batches = [make_batch(seed=1)] if 'LightSKD' in cfg.model.type else []
            for data in batches + [make_batch(seed=0)]:
                torch.manual_seed(0)
                data = model.data_preprocessor(data, True)
                losses = model(data['inputs'], data['data_samples'], mode='loss')
    finally:
        torch.set_num_threads(threads)
    return {k: as_floats(v) for k, v in sorted(losses.items())}


def load_golden():
    with open(GOLDEN) as f:
        return json.load(f)


# -------------------------------------------------------------------- tests
def test_every_config_has_golden_losses():
    golden = load_golden()
    assert sorted(golden) == CONFIGS, (
        f'configs without recorded losses: {sorted(set(CONFIGS) - set(golden))}; '
        f'recorded losses without a config: {sorted(set(golden) - set(CONFIGS))}')


@pytest.mark.parametrize('path', CONFIGS)
def test_config_losses_unchanged(path):
    expected = load_golden().get(path)
    assert expected is not None, f'no recorded losses for configs/{path}'
    losses = config_losses(path)
    assert sorted(losses) == sorted(expected), f'loss keys changed for configs/{path}'
    for key, values in losses.items():
        assert all(math.isfinite(v) for v in values), (path, key, values)
        np.testing.assert_allclose(values, expected[key], rtol=RTOL, atol=ATOL,
                                   err_msg=f'configs/{path}: {key}')


def main(argv=None):
    parser = argparse.ArgumentParser(description='Record (--write) or check the losses of '
                                     'every shipped distiller config on one fixed batch.')
    parser.add_argument('--write', action='store_true', help=f'write {GOLDEN}')
    parser.add_argument('--out', default=GOLDEN, help='where --write writes')
    parser.add_argument('paths', nargs='*', help='configs/<path> keys (default: all)')
    args = parser.parse_args(argv)
    import mmkd
    print(f'mmkd from {mmkd.__file__}', flush=True)
    golden = {} if args.write else load_golden()
    results, failed = {}, []
    for path in args.paths or CONFIGS:
        start = time.perf_counter()
        results[path] = losses = config_losses(path)
        status = ''
        if not args.write:
            ok = sorted(losses) == sorted(golden.get(path, {})) and all(
                np.allclose(v, golden[path][k], rtol=RTOL, atol=ATOL) for k, v in losses.items())
            status = 'ok' if ok else 'DIFFERS'
            if not ok:
                failed.append(path)
        print(f'{path}: {time.perf_counter() - start:.1f}s {status}', flush=True)
    if args.write:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1, sort_keys=True)
            f.write('\n')
        print(f'wrote {len(results)} configs to {args.out}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
