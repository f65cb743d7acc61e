"""Small generated batches and tiny model configs for the tests (no data pipeline)."""
from typing import List, Optional, Tuple

import torch
from torch import Tensor


def det_batch(size: int = 64, seed: int = 0) -> Tuple[Tensor, List]:
    """Two ``size`` x ``size`` images and mmdet ``DetDataSample`` s with two boxes each
    (labels ``i`` and 2: at least 3 classes)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    samples = []
    for i in range(2):
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                             pad_shape=(size, size),
                                             batch_input_shape=(size, size),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[8., 8., 40., 44.],
                                                                [20., 4., 60., 30.]]),
                                           labels=torch.tensor([i, 2]))
        samples.append(sample)
    inputs = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return inputs, samples


def tiny_classifier(num_classes: int = 10, depth: int = 18, width: int = 8,
                    head: Optional[dict] = None, preprocessor: Optional[dict] = None) -> dict:
    """A narrow mmpretrain CIFAR ResNet ``ImageClassifier`` config (``width`` base channels
    instead of 64). ``preprocessor`` updates its ``ClsDataPreprocessor`` (mean 128, std 64)."""
    expansion = 4 if depth >= 50 else 1
    pre = dict(type='ClsDataPreprocessor', mean=[128.] * 3, std=[64.] * 3)
    pre.update(preprocessor or {})
    return dict(
        type='ImageClassifier', _scope_='mmpretrain',
        backbone=dict(type='ResNet_CIFAR', depth=depth, stem_channels=width,
                      base_channels=width, out_indices=(3, )),
        neck=dict(type='GlobalAveragePooling'),
        head=head or dict(type='LinearClsHead', num_classes=num_classes,
                          in_channels=width * 8 * expansion),
        data_preprocessor=pre)
