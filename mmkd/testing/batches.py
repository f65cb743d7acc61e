"""Small generated batches for the tests (already preprocessed: no data pipeline)."""
from typing import List, Tuple

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
