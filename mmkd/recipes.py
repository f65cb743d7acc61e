"""Small from-scratch training recipes, as used by ``tools/demo.py`` and the accuracy benchmark.

A recipe is a set of top-level overrides of a shipped config (nested dicts,
merged the way a child config merges into its ``_base_``);
:func:`write_config` writes one as a config file that inherits the shipped
config, :func:`no_pretrained` drops the pretrained weights a config would
download, :func:`method_configs` finds mmkd's method configs (in a checkout or
an installed wheel) and :func:`distiller_settings` takes a method's distiller
settings out of its config, to be put on other models. The data overrides for
the synthetic shapes datasets are in :mod:`mmkd.datasets`.

The shipped configs assume ImageNet-pretrained backbones and hundreds of
thousands of iterations. On the synthetic shapes data, trained from scratch on
2 CPU cores within minutes, they hardly learn: with SGD (lr 0.02), a frozen
random stem and BatchNorm in eval mode, Faster R-CNN R18 reached 0.013 bbox mAP
after 240 iterations. These overrides make the same models learn in that
budget (0.11 bbox mAP after 240 iterations, 2.4x faster per iteration):

* every backbone stage trains, BatchNorm in training mode (nothing is
  pretrained, so nothing should be frozen);
* AdamW (lr 1e-3, weight decay 0.05) with a linear warm-up and cosine decay;
* detection: 64-channel FPN / RPN / RoI features, a 128-wide box head and
  anchors of half the COCO size (the shapes are 20-56 px).

The distillation losses, the distillers and the task models are untouched:
only widths, optimiser and schedule differ from the shipped configs.
"""
from __future__ import annotations

import glob
import os
import os.path as osp
import pprint
from typing import Any, Dict, Optional

from .resources import configs_dir

Overrides = Dict[str, Any]


def scratch_detector(depth: int, num_classes: int, channels: int = 64,
                     fc_channels: int = 128, width: int = 32) -> Overrides:
    """A Faster R-CNN ``model`` override: ResNet-``depth`` FPN, trained from scratch.

    Args:
        depth (int): ResNet depth (18, 34, 50 or 101).
        num_classes (int): Object classes.
        channels (int): FPN, RPN and RoI feature channels. Defaults to 64.
        fc_channels (int): Width of the box head's two FC layers. Defaults to 128.
        width (int): The ResNet's stem and base channels: half the standard 64, about a
            quarter of its FLOPs (the benchmark's and the demo's detectors). Defaults to 32.
    """
    expansion = 1 if depth < 50 else 4
    in_channels = [width * expansion * 2**i for i in range(4)]
    return dict(
        backbone=dict(depth=depth, frozen_stages=-1, norm_eval=False, init_cfg=None,
                      stem_channels=width, base_channels=width),
        neck=dict(in_channels=in_channels, out_channels=channels),
        rpn_head=dict(in_channels=channels, feat_channels=channels,
                      anchor_generator=dict(scales=[4])),
        roi_head=dict(
            bbox_roi_extractor=dict(out_channels=channels),
            bbox_head=dict(in_channels=channels, fc_out_channels=fc_channels,
                           num_classes=num_classes)),
        train_cfg=dict(rcnn=dict(sampler=dict(num=128))),
        # A few objects per image: 300 proposals instead of 1,000 (a third of the RoI head's
        # test-time cost).
        test_cfg=dict(rpn=dict(max_per_img=300)))


def adamw_schedule(max_iters: int, lr: float = 1e-3, by_epoch: bool = True,
                   iters_per_epoch: int = 1, warmup: int = 50) -> Overrides:
    """AdamW with a linear warm-up and a cosine decay to 5% of ``lr``.

    Args:
        max_iters (int): Training length: epochs if ``by_epoch``, else iterations.
        lr (float): Peak learning rate. Defaults to 1e-3.
        by_epoch (bool): Epoch-based (mmdet, mmpretrain) or iteration-based
            (mmseg) training loop. Defaults to True.
        iters_per_epoch (int): Iterations of one epoch, to bound the warm-up.
            Defaults to 1.
        warmup (int): Warm-up iterations. Defaults to 50.
    """
    total_iters = max_iters * iters_per_epoch if by_epoch else max_iters
    loop = dict(max_epochs=max_iters) if by_epoch else dict(max_iters=max_iters)
    return dict(
        # No validation during training: the caller evaluates once at the end. (MMEngine's
        # loops validate after the last epoch / iteration whatever ``val_interval`` says;
        # only ``val_begin`` past the end turns that off.)
        train_cfg=dict(**loop, val_begin=max_iters + 1, val_interval=max_iters + 1),
        optim_wrapper=dict(
            _delete_=True, type='OptimWrapper',
            # foreach: one kernel per step for all tensors (torch's default only on CUDA);
            # on the CPU it saved ~5% of a detector's training step here.
            optimizer=dict(type='AdamW', lr=lr, weight_decay=0.05, foreach=True),
            clip_grad=dict(max_norm=10.0)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                 end=max(1, min(warmup, total_iters // 4))),
            dict(type='CosineAnnealingLR', by_epoch=by_epoch, begin=0, end=max_iters,
                 T_max=max_iters, eta_min=lr * 0.05)
        ])


def method_configs(pattern: str, configs: Optional[str] = None) -> Dict[str, str]:
    """The shipped method configs matching ``pattern``, by method name.

    The method name is the config's folder (``rekd/faster-rcnn_r101_r50_coco.py``
    -> ``rekd``, ``ls-kd/resnet_r34_r18_in1k.py`` -> ``ls-kd``); folders whose
    name starts with ``_`` (``_base_``) are skipped.

    Args:
        pattern (str): A glob relative to the configs folder, e.g.
            ``'*/faster-rcnn_*_coco.py'``.
        configs (str, optional): The configs folder. Defaults to
            :func:`mmkd.resources.configs_dir` (the checkout's ``configs/`` or
            the installed package's copy).

    Raises:
        ValueError: If a folder has several configs matching ``pattern`` (the
            name would not say which one).
    """
    found: Dict[str, str] = {}
    root = configs_dir() if configs is None else configs
    for path in sorted(glob.glob(osp.join(root, pattern))):
        method = osp.basename(osp.dirname(path))
        if method.startswith('_'):
            continue
        if method in found:
            raise ValueError(f'{pattern!r} matches several configs of {method}: '
                             f'{osp.basename(found[method])}, {osp.basename(path)}')
        found[method] = path
    return found


def distiller_settings(config_path: str) -> Overrides:
    """A method config's distiller settings, without its student and teacher.

    Returns the ``model`` dict of the config (``type``, ``distill_losses`` and
    the distiller's other options) less ``student``, ``teacher``,
    ``teacher_ckpt`` and ``data_preprocessor``, to be put on other models.
    """
    from mmengine.config import Config

    import mmkd  # noqa: F401  (registers the mmkd:: config scope)
    model = Config.fromfile(config_path).model.to_dict()
    for key in ('student', 'teacher', 'teacher_ckpt', 'data_preprocessor'):
        model.pop(key, None)
    return model


def no_pretrained(cfg: Any) -> Any:
    """Removes pretrained weights from a model config (recursively, in place).

    Clears every ``init_cfg`` of type ``Pretrained`` (mmdet, mmpretrain) and
    every string ``pretrained=`` (mmseg's ``EncoderDecoder``).
    """
    if isinstance(cfg, dict):
        init = cfg.get('init_cfg')
        if isinstance(init, dict) and init.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        if isinstance(cfg.get('pretrained'), str):
            cfg['pretrained'] = None
        for v in cfg.values():
            no_pretrained(v)
    elif isinstance(cfg, (list, tuple)):
        for v in cfg:
            no_pretrained(v)
    return cfg


def write_config(path: str, base: str, overrides: Overrides,
                 extra: Optional[str] = None) -> str:
    """Writes a config file that inherits ``base`` and applies ``overrides``.

    Args:
        path (str): Where to write the config.
        base (str): The base config: a file path, or ``'mmdet::...'``.
        overrides (dict): Top-level keys to merge into the base.
        extra (str, optional): Python lines appended verbatim (they may use
            ``_base_``). Defaults to None.
    """
    base_ref = base if '::' in base else osp.abspath(base)
    lines = [f'_base_ = [{base_ref!r}]']
    for key, value in overrides.items():
        lines.append(f'{key} = {pprint.pformat(value, width=100, sort_dicts=False)}')
    if extra:
        lines.append(extra)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path
