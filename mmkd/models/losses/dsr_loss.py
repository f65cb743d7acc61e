"""LightSKD distillation with shape-wise regularisation (DSR)."""
from typing import Optional, Union

import torch
import torch.nn as nn
from torch import Tensor
from torch.autograd.function import once_differentiable

from mmkd.registry import MODELS

from .base import DistillLossInfo
from .checks import Default, check_non_negative, check_reduction, resolve_alias, row_shape
from .kd_loss import kd_loss
from .precision import fp32_compute, upcast
from .reduction import graph_zero, reduce_rows, valid_rows


def _index_dtype(num_classes: int) -> torch.dtype:
    if num_classes <= 256:
        return torch.uint8
    return torch.int16 if num_classes <= 2**15 else torch.int32


class _SortClasses(torch.autograd.Function):
    """Ascending sort along the class axis (dim 1).

    Sorts in the class-last layout (faster for dense logits) and keeps the
    permutation for backward in the smallest integer type that holds ``C``
    (uint8 up to 256 classes) instead of int64.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        values, index = x.movedim(1, -1).contiguous().sort(dim=-1)
        ctx.save_for_backward(index.to(_index_dtype(x.shape[1])))
        return values.movedim(-1, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        index, = ctx.saved_tensors
        g = grad.movedim(1, -1)
        return torch.empty_like(g).scatter_(-1, index.long(), g).movedim(-1, 1)


def sort_classes(logits: Tensor) -> Tensor:
    """Logits sorted ascending along dim 1, differentiable (see DSR)."""
    return _SortClasses.apply(logits)


def dsr_loss(preds: Tensor, prev_sorted: Tensor, temperature: float = 4.0) -> Tensor:
    """Per-row DSR loss between sorted logits and a previous batch's.

    ``T^2 * KL(softmax(prev_sorted / T) || softmax(sort(preds) / T))`` with
    each row sorted ascending; rows are paired by index and both tensors must
    have the same shape.

    Args:
        preds (Tensor): Current logits ``(B, C, *S)``.
        prev_sorted (Tensor): Sorted logits of the previous batch, same shape
            (detached here).
        temperature (float): Temperature ``T``. Defaults to 4.0.

    Returns:
        Tensor: Row map ``(B, *S)``.
    """
    return kd_loss(sort_classes(preds), prev_sorted, temperature)


@MODELS.register_module()
class DSRLoss(DistillLossInfo, nn.Module):
    """Distillation with shape-wise regularisation (DSR) of LightSKD.

    "Lightweight Self-Knowledge Distillation with Multi-source Information
    Fusion" (LightSKD), arXiv:2305.09183, 2023. The ascending-sorted logits of
    each sample are pulled towards the sorted, detached logits of the previous
    training batch (rows paired by index):
    ``T^2 * KL(softmax(sort(prev) / T) || softmax(sort(final) / T))``.

    The previous batch is kept in a plain attribute of this module (one per
    model, never a registered buffer, so it is never written to checkpoints).
    The first call (or the first after :meth:`reset`) returns an exact 0
    connected to the graph; when batch sizes differ, the first
    ``min(B_prev, B)`` rows are paired. The self-distiller calls it once per
    training step with the final logits::

        dsr = DSRLoss(temperature=4.0)          # one module per model
        losses['loss_dsr'] = dsr(final_logits)  # 0 on the first batch

    and may call :meth:`reset` when a new epoch starts or after validation.
    Every call stores the current batch, so it must not be called on
    validation batches.

    Args:
        temperature (float): Temperature ``T``. Defaults to 4.0.
        tau (float, optional): Alias of ``temperature``. Defaults to None.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. ``'mean'``
            averages over the valid paired rows. Defaults to ``'mean'``.
        ignore_index (int | None): Rows whose target equals it are excluded.
            Defaults to 255.
    """

    inputs = ('student_logits', )
    requires_target = False
    sigmoid_capable = False
    row_wise = True

    def __init__(self,
                 temperature: float = Default(4.0),
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 ignore_index: Optional[int] = 255,
                 *,
                 tau: Optional[float] = None) -> None:
        super().__init__()
        self.temperature = resolve_alias('temperature', temperature, 'tau', tau)
        self.loss_weight = check_non_negative('loss_weight', loss_weight)
        self.reduction = check_reduction(reduction)
        self.ignore_index = ignore_index
        #: Sorted, detached logits of the previous batch (not a buffer).
        self.prev_sorted: Optional[Tensor] = None

    def reset(self) -> None:
        """Forgets the previous batch; the next call returns 0."""
        self.prev_sorted = None

    def forward(self,
                preds: Tensor,
                target: Optional[Tensor] = None,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[Union[float, Tensor]] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """Computes the loss against the previous batch and stores this one.

        Args:
            preds (Tensor): Final logits ``(B, C)`` or ``(B, C, *S)``.
            target (Tensor | None): Labels; only mask ``ignore_index`` rows.
            weight (Tensor | None): Per-row weights, ``(B,)`` or ``(B, *S)``.
            avg_factor (float | Tensor | None): Replaces the number of valid
                paired rows in ``'mean'``.
            reduction_override (str | None): Overrides ``self.reduction``.

        Returns:
            Tensor: Scalar, or the ``(B, *S)`` row map for ``'none'`` (rows
            without a partner are 0).
        """
        reduction = check_reduction(reduction_override or self.reduction)
        if preds.dim() < 2:
            raise ValueError(f'DSRLoss: logits must be (B, C) or (B, C, *S), got shape '
                             f'{tuple(preds.shape)}.')
        with fp32_compute(preds):
            prev = self.prev_sorted
            if prev is not None and prev.shape[1:] != preds.shape[1:]:
                raise ValueError(f'DSRLoss: the previous batch has shape {tuple(prev.shape)}, '
                                 f'this one {tuple(preds.shape)}; only the batch size may differ. '
                                 'Call reset() when the class count or resolution changes.')
            s = sort_classes(upcast(preds))
            self.prev_sorted = s.detach()
            valid, _ = valid_rows(target, weight, self.ignore_index, row_shape(s))
            m = 0 if prev is None else min(prev.shape[0], s.shape[0])
            rows = kd_loss(s[:m], prev[:m].to(s.dtype), self.temperature) if m else None
            if m < s.shape[0]:  # rows without a partner contribute an exact 0
                pad = graph_zero(s) + s.new_zeros(row_shape(s[m:]))
                rows = pad if rows is None else torch.cat([rows, pad])
                unpaired = torch.arange(s.shape[0], device=s.device) >= m
                unpaired = unpaired.view((-1, ) + (1, ) * (s.dim() - 2)).expand(row_shape(s))
                valid = ~unpaired if valid is None else valid & ~unpaired
            loss = reduce_rows(rows, valid, weight, reduction, avg_factor)
        return loss * self.loss_weight

    def extra_repr(self) -> str:
        return (f'temperature={self.temperature}, loss_weight={self.loss_weight}, '
                f'reduction={self.reduction!r}')
