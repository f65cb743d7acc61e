"""SDD on the RoIs of a two-stage detector (Wei et al., CVPR 2024; views as in the spec).

A box head takes ``k x k`` RoI features (``k = 7`` in mmdet's configs), so the
views are cut from RoI features extracted at ``2k x 2k`` by a copy of the box
RoI extractor with twice the output size and half the sampling ratio (``0``,
adaptive, stays ``0``): view 0 is their 2x2 average pooling, which equals the
ordinary ``k x k`` feature exactly when the sampling ratio is even; views 1-4
are the stride-2 subsamples with offsets (0,0), (0,1), (1,1), (1,0). Each view
goes through the model's own box head, giving ``(R, C+1, 5)`` logits.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Offsets of the stride-2 subsample views 1-4.
OFFSETS = ((0, 0), (0, 1), (1, 1), (1, 0))


def double_res_extractor(roi_head: nn.Module) -> nn.Module:
    """A copy of ``roi_head``'s box RoI extractor at twice its output size."""
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    ext = roi_head.bbox_roi_extractor
    if type(ext) is not SingleRoIExtractor or roi_head.with_shared_head:
        raise TypeError(f'SDD on RoIs needs a SingleRoIExtractor box RoI extractor and no shared '
                        f'head, got {type(ext).__name__}')
    layer = ext.roi_layers[0]
    sampling = layer.sampling_ratio // 2 if layer.sampling_ratio > 1 else layer.sampling_ratio
    roi_layer = dict(type=type(layer).__name__, output_size=tuple(2 * s for s in layer.output_size),
                     sampling_ratio=sampling, pool_mode=layer.pool_mode, aligned=layer.aligned)
    return SingleRoIExtractor(roi_layer, ext.out_channels, ext.featmap_strides, ext.finest_scale)


def roi_view_logits(extractor: nn.Module, box_head: nn.Module, x: Tuple[Tensor],
                    rois: Tensor) -> Tensor:
    """The five views of every RoI through ``box_head``: ``(R, C+1, 5)`` logits."""
    feats = extractor(x[:extractor.num_inputs], rois)  # (R, D, 2k, 2k)
    views = [F.avg_pool2d(feats, 2)] + [feats[..., i::2, j::2] for i, j in OFFSETS]
    cls_score = box_head(torch.cat(views))[0]  # (5R, C+1)
    return cls_score.reshape(len(views), rois.shape[0], -1).permute(1, 2, 0)
