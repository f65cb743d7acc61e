"""Config overrides that point real mmdet / mmseg / mmpretrain configs at the shapes data.

Tests, the demo and the benchmarks train shipped configs on the datasets that
:mod:`mmkd.datasets.synthetic` generates, at small sizes. ``det_overrides``,
``seg_overrides`` and ``cls_overrides`` return the top-level overrides of a
config (nested dicts, merged into the base config the way a child config
merges into its ``_base_``): the dataloaders, the evaluators and a short
schedule. :func:`mmkd.recipes.write_config` writes them as a config file that
inherits the real one::

    from mmkd.datasets import det_overrides, make_det
    from mmkd.recipes import write_config
    from mmkd.resources import configs_dir

    info = make_det('/tmp/shapes/det', num_train=8, num_val=4)
    rekd = osp.join(configs_dir(), 'rekd', 'faster-rcnn_r101_r50_coco.py')
    path = write_config('/tmp/cfg.py', rekd, det_overrides(info, scale=(128, 128)),
                        extra="model.update(teacher_ckpt=None)")
"""
from __future__ import annotations

import os.path as osp
from typing import Any, Dict, Optional, Tuple

Overrides = Dict[str, Any]


def _seeded(overrides: Overrides, seed: Optional[int]) -> Overrides:
    """Adds ``randomness.seed``: without it MMEngine draws a new seed every run."""
    if seed is not None:
        overrides['randomness'] = dict(seed=seed)
    return overrides


def _loader(dataset: dict, batch_size: int, shuffle: bool) -> dict:
    return dict(batch_size=batch_size, num_workers=0, persistent_workers=False,
                sampler=dict(type='DefaultSampler', shuffle=shuffle), dataset=dataset)


def det_overrides(info: dict, scale: Tuple[int, int] = (128, 128), batch_size: int = 2,
                  max_epochs: int = 1, with_mask: bool = False,
                  seed: Optional[int] = 0) -> Overrides:
    """Overrides for an mmdet COCO config (Faster / Mask R-CNN, RetinaNet).

    Args:
        info (dict): What :func:`~mmkd.datasets.make_det` returned.
        scale (tuple[int, int]): Resize scale (w, h), keep ratio. Defaults to (128, 128).
        batch_size (int): Training batch size. Defaults to 2.
        max_epochs (int): Training epochs. Defaults to 1.
        with_mask (bool): Load instance masks too (Mask R-CNN). Defaults to False.
        seed (int, optional): The run's random seed (``randomness.seed``: initial weights,
            shuffling, augmentation), so that a run repeats itself on the same machine.
            ``None`` leaves MMEngine's default, a new seed each run. Defaults to 0.
    """
    root = osp.abspath(info['data_root'])
    meta = dict(classes=tuple(info['classes']))
    ann = dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask)
    train_pipeline = [
        dict(type='LoadImageFromFile'), ann,
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs')
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=scale, keep_ratio=True), ann,
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
    ]

    def dataset(split: str, pipeline: list, test_mode: bool) -> dict:
        return dict(type='CocoDataset', data_root=root, metainfo=meta,
                    ann_file=info[f'{split}_ann'], data_prefix=dict(img=info[f'{split}_img']),
                    filter_cfg=dict(filter_empty_gt=not test_mode, min_size=0),
                    test_mode=test_mode, pipeline=pipeline, _delete_=True)

    metric = ['bbox', 'segm'] if with_mask else 'bbox'
    evaluator = dict(type='CocoMetric', ann_file=osp.join(root, info['val_ann']),
                     metric=metric, format_only=False, _delete_=True)
    train = _loader(dataset('train', train_pipeline, False), batch_size, True)
    train['batch_sampler'] = None
    return _seeded(dict(
        train_dataloader=train,
        val_dataloader=_loader(dataset('val', test_pipeline, True), 1, False),
        test_dataloader=_loader(dataset('val', test_pipeline, True), 1, False),
        val_evaluator=evaluator, test_evaluator=evaluator,
        train_cfg=dict(max_epochs=max_epochs, val_interval=max_epochs),
        default_hooks=dict(logger=dict(interval=1)),
        log_processor=dict(window_size=1)), seed)


def seg_overrides(info: dict, crop: Tuple[int, int] = (64, 128),
                  scale: Tuple[int, int] = (128, 64), batch_size: int = 2, max_iters: int = 4,
                  seed: Optional[int] = 0) -> Overrides:
    """Overrides for an mmseg Cityscapes config (PSPNet, DeepLabV3).

    Args:
        info (dict): What :func:`~mmkd.datasets.make_seg` returned.
        crop (tuple[int, int]): Training crop (h, w). Defaults to (64, 128).
        scale (tuple[int, int]): Resize scale (w, h). Defaults to (128, 64).
        batch_size (int): Training batch size. Defaults to 2.
        max_iters (int): Training iterations. Defaults to 4.
        seed (int, optional): The run's random seed (``randomness.seed``: initial weights,
            shuffling, augmentation), so that a run repeats itself on the same machine.
            ``None`` leaves MMEngine's default, a new seed each run. Defaults to 0.
    """
    root = osp.abspath(info['data_root'])
    meta = dict(classes=tuple(info['classes']), palette=[list(c) for c in info['palette']])
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='RandomResize', scale=scale, ratio_range=(0.75, 1.5), keep_ratio=True),
        dict(type='RandomCrop', crop_size=crop, cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackSegInputs')
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs')
    ]

    def dataset(split: str, pipeline: list) -> dict:
        return dict(type='BaseSegDataset', data_root=root, metainfo=meta, img_suffix='.png',
                    seg_map_suffix='.png', reduce_zero_label=False,
                    data_prefix=dict(img_path=info['img_dir'].format(split=split),
                                     seg_map_path=info['ann_dir'].format(split=split)),
                    pipeline=pipeline, _delete_=True)

    evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'], _delete_=True)
    return _seeded(dict(
        crop_size=crop,
        train_dataloader=_loader(dataset('train', train_pipeline), batch_size, True),
        val_dataloader=_loader(dataset('val', test_pipeline), 1, False),
        test_dataloader=_loader(dataset('val', test_pipeline), 1, False),
        val_evaluator=evaluator, test_evaluator=evaluator,
        train_cfg=dict(max_iters=max_iters, val_interval=max_iters),
        default_hooks=dict(logger=dict(interval=1),
                           checkpoint=dict(interval=max_iters, by_epoch=False)),
        param_scheduler=[dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters,
                              by_epoch=False)],
        log_processor=dict(window_size=1)), seed)


def cls_overrides(info: dict, size: int = 32, batch_size: int = 4, max_epochs: int = 1,
                  seed: Optional[int] = 0) -> Overrides:
    """Overrides for an mmpretrain ImageNet / CIFAR config (image-folder data).

    Args:
        info (dict): What :func:`~mmkd.datasets.make_cls` returned.
        size (int): Input size. Defaults to 32.
        batch_size (int): Training batch size. Defaults to 4.
        max_epochs (int): Training epochs. Defaults to 1.
        seed (int, optional): The run's random seed (``randomness.seed``: initial weights,
            shuffling, augmentation), so that a run repeats itself on the same machine.
            ``None`` leaves MMEngine's default, a new seed each run. Defaults to 0.
    """
    root = osp.abspath(info['data_root'])
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='RandomResizedCrop', scale=size, crop_ratio_range=(0.6, 1.0)),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        dict(type='PackInputs')
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(size, size)),
        dict(type='PackInputs')
    ]

    def dataset(prefix: str, pipeline: list) -> dict:
        return dict(type='CustomDataset', data_root=root, data_prefix=prefix, with_label=True,
                    metainfo=dict(classes=tuple(info['classes'])), pipeline=pipeline,
                    _delete_=True)

    evaluator = dict(type='Accuracy', topk=(1, ), _delete_=True)
    return _seeded(dict(
        train_dataloader=_loader(dataset(info['train_prefix'], train_pipeline), batch_size, True),
        val_dataloader=_loader(dataset(info['val_prefix'], test_pipeline), batch_size, False),
        test_dataloader=_loader(dataset(info['val_prefix'], test_pipeline), batch_size, False),
        val_evaluator=evaluator, test_evaluator=evaluator,
        train_cfg=dict(max_epochs=max_epochs, val_interval=max_epochs),
        default_hooks=dict(logger=dict(interval=1)),
        log_processor=dict(window_size=1)), seed)
