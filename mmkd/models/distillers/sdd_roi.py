"""SDD on the RoIs of a two-stage detector (Wei et al., CVPR 2024; views as in the spec).

A box head takes ``k x k`` RoI features (``k = 7`` in mmdet's configs), so the
views are cut from RoI features extracted at ``2k x 2k`` by a copy of the box
RoI extractor with twice the output size and half the sampling ratio (``0``,
adaptive, stays ``0``): view 0 is their 2x2 average pooling, which equals the
ordinary ``k x k`` feature exactly when the sampling ratio is even; views 1-4
are the stride-2 subsamples with offsets (0,0), (0,1), (1,1), (1,0). Each view
goes through the model's own box head, giving ``(R, C+1, 5)`` logits.

:func:`roi_view_logits_reference` computes this as written.
:func:`roi_view_logits` gives the same logits (up to float rounding) with less
work, and is what the distiller runs:

* RoIAlign per FPN level, without :class:`SingleRoIExtractor`'s zero-filled
  ``(R, D, 2k, 2k)`` buffer and its scatter (each RoI's RoIAlign is the same
  call on the same inputs);
* views 1-4 as one strided copy (no slices, no concatenation), and no box
  regression branch (its output is not used);
* when the box head starts with ``flatten -> Linear`` (see
  :func:`has_linear_first_fc`, e.g. ``Shared2FCBBoxHead``), view 0 skips that
  layer: view 0 is the mean of views 1-4 (the four offsets tile every 2x2
  cell), so ``fc(view 0) = mean(fc(view 1), ..., fc(view 4))``, and the first
  fc runs on ``4R`` rows instead of ``5R``. Other box heads take all five
  views (:func:`box_head_view_logits`);
* on the CPU, the gradient of the ``2k x 2k`` RoIAlign (the student's) is
  computed by :func:`roi_align_grad` (separable, vectorised over channels)
  instead of mmcv's CPU backward, a single-threaded loop over every output
  element that was the costliest part of the views; the forward is mmcv's.
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Offsets of the stride-2 subsample views 1-4.
OFFSETS = ((0, 0), (0, 1), (1, 1), (1, 0))
#: Positions of views 1-4 among the stride-2 subsamples in row-major offset order
#: (0,0), (0,1), (1,0), (1,1), the order of :func:`subsample_rows`.
_OFFSET_ORDER = [2 * i + j for i, j in OFFSETS]


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


def roi_view_logits_reference(extractor: nn.Module, box_head: nn.Module, x: Tuple[Tensor],
                              rois: Tensor) -> Tensor:
    """The five views of every RoI through ``box_head``: ``(R, C+1, 5)`` logits.

    The definition, computed as written (the reference of :func:`roi_view_logits`).
    """
    feats = extractor(x[:extractor.num_inputs], rois)  # (R, D, 2k, 2k)
    views = [F.avg_pool2d(feats, 2)] + [feats[..., i::2, j::2] for i, j in OFFSETS]
    cls_score = box_head(torch.cat(views))[0]  # (5R, C+1)
    return cls_score.reshape(len(views), rois.shape[0], -1).permute(1, 2, 0)


def roi_view_logits(extractor: nn.Module, box_head: nn.Module, x: Tuple[Tensor],
                    rois: Tensor) -> Tensor:
    """:func:`roi_view_logits_reference`, cheaper (see the module doc): ``(R, C+1, 5)``.

    Args:
        extractor (nn.Module): A :class:`SingleRoIExtractor` at ``2k x 2k``
            (:func:`double_res_extractor`).
        box_head (nn.Module): The model's box head (``k x k`` RoI features).
        x (tuple[Tensor]): The FPN features.
        rois (Tensor): ``(R, 5)`` RoIs (batch index, x1, y1, x2, y2).

    Returns:
        Tensor: The class logits of views 0-4, ``(R, C+1, 5)``.
    """
    if rois.shape[0] == 0:
        return roi_view_logits_reference(extractor, box_head, x, rois)
    head = shared_fc_view_logits if has_linear_first_fc(box_head) else box_head_view_logits
    rois = rois.type_as(x[0])  # as SingleRoIExtractor.forward (AMP), before the level mapping
    indices, logits = [], []
    for level, index in rois_by_level(extractor, rois):
        feats = roi_align(extractor.roi_layers[level], x[level], rois[index])  # (n, D, 2k, 2k)
        indices.append(index)
        logits.append(head(box_head, feats))
    # back to the order of ``rois``: row i of the concatenation is RoI order[i]
    order = torch.cat(indices)
    return torch.cat(logits)[torch.argsort(order)]


def rois_by_level(extractor: nn.Module, rois: Tensor) -> List[Tuple[int, Tensor]]:
    """``(level, indices of its RoIs)`` for every FPN level that has RoIs, mapped
    as :class:`SingleRoIExtractor` maps them (one level: all RoIs)."""
    num_levels = extractor.num_inputs
    if num_levels == 1:
        return [(0, torch.arange(rois.shape[0], device=rois.device))]
    levels = extractor.map_roi_levels(rois, num_levels)
    return [(level, index) for level in range(num_levels)
            if (index := (levels == level).nonzero(as_tuple=False).squeeze(1)).numel()]


def subsample_rows(feats: Tensor) -> Tensor:
    """The four stride-2 subsamples of ``(n, D, 2k, 2k)`` features, flattened as a box
    head flattens a ``(D, k, k)`` feature: ``(4, n, D k k)``, offsets in row-major
    order (0,0), (0,1), (1,0), (1,1). One copy."""
    n, d, h, w = feats.shape
    cells = feats.reshape(n, d, h // 2, 2, w // 2, 2).permute(3, 5, 0, 1, 2, 4)
    return cells.reshape(4, n, d * (h // 2) * (w // 2))


def box_head_view_logits(box_head: nn.Module, feats: Tensor) -> Tensor:
    """Any box head: all five views of ``(n, D, 2k, 2k)`` features through
    ``box_head``: ``(n, C+1, 5)`` logits."""
    n, d, h, w = feats.shape
    subsamples = subsample_rows(feats)[_OFFSET_ORDER].reshape(4 * n, d, h // 2, w // 2)
    cls_score = box_head(torch.cat([F.avg_pool2d(feats, 2), subsamples]))[0]  # (5n, C+1)
    return cls_score.reshape(5, n, -1).permute(1, 2, 0)


def has_linear_first_fc(box_head: nn.Module) -> bool:
    """Whether the class logits of ``box_head`` are ``cls(relu(fc(flatten(feature))))``
    with a linear ``fc``, so that :func:`shared_fc_view_logits` computes them.

    The condition: an mmdet ``ConvFCBBoxHead`` (e.g. ``Shared2FCBBoxHead``) whose
    ``forward`` is not overridden, with no shared convs, no average pooling, at
    least one shared fc, the first of them an ``nn.Linear`` (not a subclass), and
    a class branch (the class branch then has no convs: mmdet asserts it).
    """
    from mmdet.models.roi_heads.bbox_heads import ConvFCBBoxHead
    return (isinstance(box_head, ConvFCBBoxHead)
            and type(box_head).forward is ConvFCBBoxHead.forward
            and box_head.num_shared_convs == 0 and not box_head.with_avg_pool
            and box_head.num_shared_fcs > 0 and type(box_head.shared_fcs[0]) is nn.Linear
            and box_head.with_cls)


def shared_fc_view_logits(box_head: nn.Module, feats: Tensor) -> Tensor:
    """The class branch of ``ConvFCBBoxHead.forward`` on the five views of
    ``(n, D, 2k, 2k)`` features, the first fc on views 1-4 only:
    ``(n, C+1, 5)`` logits. Needs :func:`has_linear_first_fc`.

    View 0 (2x2 average pooling) is the mean of views 1-4, so its first-fc
    output (before the ReLU) is the mean of theirs.
    """
    rows = subsample_rows(feats)  # (4, n, D k k)
    fc1 = box_head.shared_fcs[0](rows)[_OFFSET_ORDER]  # (4, n, F): views 1-4
    x = torch.cat([fc1.mean(0, keepdim=True), fc1]).flatten(0, 1)  # (5n, F)
    relu: Callable[[Tensor], Tensor] = box_head.relu
    x = relu(x)
    for fc in list(box_head.shared_fcs)[1:]:
        x = relu(fc(x))
    for fc in box_head.cls_fcs:
        x = relu(fc(x))
    cls_score = box_head.fc_cls(x)  # (5n, C+1)
    return cls_score.reshape(5, feats.shape[0], -1).permute(1, 2, 0)


# ----------------------------------------------------------------- RoIAlign gradient
def roi_align(layer: nn.Module, feat: Tensor, rois: Tensor) -> Tensor:
    """``layer(feat, rois)``; its gradient by :func:`roi_align_grad` where
    :func:`has_separable_grad` (on the CPU, with gradients), else mmcv's."""
    if torch.is_grad_enabled() and feat.requires_grad and has_separable_grad(layer, feat):
        return SeparableGradRoIAlign.apply(feat, rois, layer)
    return layer(feat, rois)


def has_separable_grad(layer: nn.Module, feat: Tensor) -> bool:
    """Whether :func:`roi_align_grad` computes the gradient of ``layer`` on ``feat``:
    an mmcv ``RoIAlign`` (not a subclass, not torchvision's) in ``'avg'`` mode, on
    float32 CPU features (on CUDA mmcv's backward runs in parallel)."""
    from mmcv.ops import RoIAlign
    return (type(layer) is RoIAlign and layer.pool_mode == 'avg' and not layer.use_torchvision
            and feat.device.type == 'cpu' and feat.dtype == torch.float32)


class SeparableGradRoIAlign(torch.autograd.Function):
    """mmcv's RoIAlign forward; the gradient of its input by :func:`roi_align_grad`."""

    @staticmethod
    def forward(ctx, feat: Tensor, rois: Tensor, layer: nn.Module) -> Tensor:
        ctx.layer, ctx.feat_shape = layer, feat.shape
        ctx.save_for_backward(rois)
        return layer(feat, rois)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, None, None]:
        rois, = ctx.saved_tensors
        return roi_align_grad(grad, rois, ctx.layer, ctx.feat_shape), None, None


def roi_align_grad(grad: Tensor, rois: Tensor, layer: nn.Module,
                   feat_shape: Tuple[int, ...], chunk: int = 1 << 24) -> Tensor:
    """The gradient of mmcv's ``RoIAlign`` (``'avg'``) with respect to its input.

    mmcv averages, in each output bin, bilinear samples on a ``gh x gw`` grid
    (``gh = sampling_ratio``, or ``ceil(roi_h / out_h)`` when it is 0; samples
    beyond one pixel outside the map are 0, the others are clamped to it). The
    weights of a sample are products of a row and a column weight, so RoIAlign
    is ``out[n, c] = Ay[n] @ feat[b_n, c] @ Ax[n]^T`` with ``(out_h, H)`` row and
    ``(out_w, W)`` column matrices, and the gradient is
    ``sum_n Ay[n]^T @ grad[n, c] @ Ax[n]``: two batched matrix products on each
    RoI's window of the map (the columns of ``Ay[n]`` / ``Ax[n]`` that are not 0),
    then a scatter-add of the windows. RoIs are grouped by window size (rounded up
    to 8 pixels), at most ``chunk`` window elements at a time. Equal to mmcv's CPU
    backward up to float rounding.

    Args:
        grad (Tensor): Gradient of the output ``(R, C, out_h, out_w)``.
        rois (Tensor): ``(R, 5)`` RoIs (batch index, x1, y1, x2, y2) of the forward.
        layer (nn.Module): The mmcv ``RoIAlign`` of the forward.
        feat_shape (tuple): Shape ``(B, C, H, W)`` of its input.
        chunk (int): Window elements per step. Defaults to ``2 ** 24``.

    Returns:
        Tensor: The gradient of the input, ``(B, C, H, W)``.
    """
    b, c, h, w = feat_shape
    out_h, out_w = layer.output_size
    box = rois[:, 1:] * layer.spatial_scale - (0.5 if layer.aligned else 0.0)
    roi_w, roi_h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    if not layer.aligned:  # mmcv's legacy mode
        roi_w, roi_h = roi_w.clamp(min=1), roi_h.clamp(min=1)
    rows = _axis_samples(box[:, 1], roi_h, out_h, layer.sampling_ratio, h)
    cols = _axis_samples(box[:, 0], roi_w, out_w, layer.sampling_ratio, w)
    # a channels-last map with room for every window beyond its bottom-right edge
    height, width = h + int(rows.span.max()), w + int(cols.span.max())
    out = grad.new_zeros(b * height * width, c)
    corner = (rois[:, 0].long() * height + rows.start) * width + cols.start  # (R,)
    key, order = torch.sort((rows.span + 7) // 8 * (w + 8) + (cols.span + 7) // 8)
    for group in order.split(torch.unique_consecutive(key, return_counts=True)[1].tolist()):
        kh, kw = int(rows.span[group].max()), int(cols.span[group].max())
        pixel = torch.arange(kh, device=grad.device)[:, None] * width + torch.arange(
            kw, device=grad.device)
        for index in group.split(max(1, chunk // (c * kh * kw))):
            n = len(index)
            g = torch.index_select(grad.transpose(1, 2), 0, index)  # (n, out_h, C, out_w)
            u = rows.window(index, kh).transpose(1, 2) @ g.reshape(n, out_h, c * out_w)
            u = cols.window(index, kw).transpose(1, 2)[:, None] @ \
                u.reshape(n, kh, c, out_w).transpose(2, 3)  # (n, kh, kw, C)
            # index_put_ accumulates serially (index_add_ is slow with threads on a busy CPU)
            out.index_put_(((corner[index, None, None] + pixel).flatten(), ), u.reshape(-1, c),
                           accumulate=True)
    return out.view(b, height, width, c)[:, :h, :w].permute(0, 3, 1, 2).contiguous()


class _AxisSamples(NamedTuple):
    """RoIAlign's samples along one axis, ``(R, out, g)`` (``g`` the largest grid)."""

    #: Positions, clamped to the map as mmcv clamps them.
    pos: Tensor
    #: ``1 / grid`` for the samples that mmcv takes, 0 for those it skips.
    scale: Tensor
    #: ``(R,)`` first pixel and number of pixels of each RoI's window.
    start: Tensor
    span: Tensor

    def window(self, index: Tensor, size: int) -> Tensor:
        """The ``(n, out, size)`` weight matrices of RoIs ``index`` on their windows:
        a sample at ``pos`` weighs ``max(0, 1 - |pos - pixel|)`` on each pixel."""
        pixel = self.start[index, None, None, None] + torch.arange(
            size, dtype=self.pos.dtype, device=self.pos.device)
        hat = (1 - (self.pos[index][..., None] - pixel).abs()).clamp(min=0)
        return (self.scale[index][..., None] * hat).sum(2)


def _axis_samples(edge: Tensor, extent: Tensor, bins: int, sampling_ratio: int,
                  length: int) -> _AxisSamples:
    """mmcv's RoIAlign samples along one axis (as in ``roi_align.cpp``): bin ``p``,
    sample ``i`` at ``edge + p * bin + (i + 0.5) * bin / grid``; skipped below -1 or
    beyond ``length``, clamped to ``[0, length - 1]``; linear interpolation between
    the two neighbouring pixels."""
    grid = torch.full_like(extent, sampling_ratio) if sampling_ratio > 0 else \
        torch.ceil(extent / bins)
    count = grid.clamp(min=1)[:, None, None]
    size = (extent / bins)[:, None, None]
    p = torch.arange(bins, dtype=edge.dtype, device=edge.device)[:, None]
    i = torch.arange(max(int(grid.max()), 1), dtype=edge.dtype, device=edge.device)
    pos = (edge[:, None, None] + p * size) + (i + 0.5) * size / count  # (R, bins, g)
    used = (i < grid[:, None, None]) & (pos >= -1) & (pos <= length)
    pos = pos.clamp(min=0, max=length - 1)
    low = pos.floor().long()
    start = torch.where(used, low, length).flatten(1).amin(1)
    stop = torch.where(used, pos.ceil().long(), -1).flatten(1).amax(1)
    start = torch.where(stop >= 0, start, 0)
    return _AxisSamples(pos, used / count, start, (stop - start + 1).clamp(min=1))
