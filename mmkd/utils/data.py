"""Checks of the training data that mmkd's tools run before training starts."""
from __future__ import annotations

import copy
from typing import Any


def _unserialized(cfg: Any) -> Any:
    """The dataset config with ``serialize_data=False`` on every leaf dataset, so that an
    empty one builds (MMEngine's serialisation concatenates the samples and fails on
    none with numpy's "need at least one array to concatenate")."""
    cfg = copy.deepcopy(cfg)
    if 'dataset' in cfg:
        cfg['dataset'] = _unserialized(cfg['dataset'])
    elif 'datasets' in cfg:
        cfg['datasets'] = [_unserialized(c) for c in cfg['datasets']]
    else:
        cfg['serialize_data'] = False
    return cfg


def _describe(cfg: Any) -> str:
    while 'dataset' in cfg:
        cfg = cfg['dataset']
    keys = ('type', 'data_root', 'ann_file', 'data_prefix')
    return ', '.join(f'{k}={cfg[k]!r}' for k in keys if cfg.get(k) is not None)


def check_training_set(dataloader_cfg: Any) -> int:
    """Builds the training set once and raises a clear ValueError if it is empty.

    Call it in the default scope of the config (after ``Runner.from_cfg``). An
    empty folder, a wrong ``data_prefix``, a COCO annotation file without
    images, or ``filter_cfg`` dropping every image otherwise stop MMEngine
    deep inside with numpy's "need at least one array to concatenate".

    Returns:
        int: The number of training samples.
    """
    from mmengine.registry import DATASETS
    dataset_cfg = dataloader_cfg.get('dataset') if dataloader_cfg else None
    if not isinstance(dataset_cfg, dict):
        return -1  # a dataset object, or no training set: nothing to check
    size = len(DATASETS.build(_unserialized(dataset_cfg)))
    if size == 0:
        raise ValueError(
            f'mmkd: the training set is empty (0 samples): {_describe(dataset_cfg)}. Check '
            'data_root, ann_file and data_prefix; a COCO annotation file needs "images" '
            '(with annotations: filter_cfg.filter_empty_gt drops images without any).')
    return size
