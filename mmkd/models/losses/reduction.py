"""Row masks, per-row coefficients and reductions of row maps.

Losses treat logits of shape ``(N, C)`` or dense ``(N, C, *S)`` as
``N * prod(S)`` rows of ``C`` classes. Instead of moving the class axis last
and flattening (a full copy of both tensors), they reduce over ``dim=1``
directly and produce "row maps" shaped ``(N, *S)``, which line up with
``target`` and ``weight`` without any reshaping. This module turns ``target``,
``weight`` and ``ignore_index`` into a row mask (:func:`valid_rows`), reduces
row maps (:func:`reduce_rows`, :func:`graph_zero`) and casts per-row
coefficients (:func:`as_row_param`, :data:`Scalar`).
"""
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from .checks import check_reduction

#: Either a Python number or a tensor broadcastable to the row map ``(N, *S)``.
Scalar = Union[float, Tensor]


def _as_row_map(x: Tensor, shape: Tuple[int, ...], what: str) -> Tensor:
    if tuple(x.shape) == shape:
        return x
    if x.numel() == 1 and len(shape) == 1 and shape[0] == 1:
        return x.reshape(shape)
    raise ValueError(f'{what} must have the shape of the logits without the class axis '
                     f'{shape}, got {tuple(x.shape)}.')


def valid_rows(target: Optional[Tensor], weight: Optional[Tensor], ignore_index: Optional[int],
               shape: Tuple[int, ...]) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """Mask of valid rows and a target that is safe to index with.

    A row is valid unless its target equals ``ignore_index`` or its weight is
    exactly 0. Ignored rows get target 0 in the returned target, so that
    ``gather`` never sees an out-of-range index; their loss is masked later.

    Args:
        target (Tensor | None): Class indices, ``(N, *S)``.
        weight (Tensor | None): Per-row weights, ``(N, *S)``.
        ignore_index (int | None): Target value of ignored rows.
        shape (tuple[int]): The row shape ``(N, *S)``.

    Returns:
        tuple[Tensor | None, Tensor | None]: Boolean mask ``(N, *S)`` (None when
        every row is valid, the fast path) and the sanitised target.
    """
    valid = None
    if target is not None:
        target = _as_row_map(target, shape, 'target')
        if target.is_floating_point() or target.is_complex():
            raise TypeError(f'target must hold integer class indices, got {target.dtype}.')
        target = target.long()
        if ignore_index is not None:
            valid = target != ignore_index
    if weight is not None:
        weight = _as_row_map(weight, shape, 'weight')
        nonzero = weight != 0
        valid = nonzero if valid is None else valid & nonzero
    if target is not None and valid is not None:
        target = target.masked_fill(~valid, 0)
    return valid, target



def graph_zero(x: Tensor) -> Tensor:
    """An exact 0 that is connected to the graph of ``x`` (never NaN).

    Sums an empty slice of ``x``, so even inf/NaN entries of ``x`` cannot leak
    into the value or the (all-zero) gradient.
    """
    return x.reshape(-1).narrow(0, 0, 0).sum()


def reduce_rows(loss: Tensor,
                valid: Optional[Tensor] = None,
                weight: Optional[Tensor] = None,
                reduction: str = 'mean',
                avg_factor: Optional[Union[float, Tensor]] = None) -> Tensor:
    """Weights, masks and reduces a row map of per-row loss values.

    Args:
        loss (Tensor): Per-row values ``(N, *S)``.
        valid (Tensor | None): Boolean row mask; invalid rows contribute an exact
            0 (even if their value is not finite). None means all rows.
        weight (Tensor | None): Per-row weights ``(N, *S)``.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. ``'mean'`` divides
            the weighted sum by the number of valid rows (at least 1, so that no
            valid row gives 0, not NaN). Defaults to ``'mean'``.
        avg_factor (float | Tensor | None): Replaces the number of valid rows in
            ``'mean'``. Not allowed with ``'sum'``. Defaults to None.

    Returns:
        Tensor: The row map for ``'none'``, else a scalar.
    """
    check_reduction(reduction)
    if weight is not None:
        loss = loss * weight.to(loss.dtype)
    if valid is not None:
        loss = torch.where(valid, loss, loss.new_zeros(()))
    if reduction == 'none':
        return loss
    if avg_factor is not None and reduction == 'sum':
        raise ValueError('avg_factor can not be used with reduction="sum".')
    total = loss.sum()
    if reduction == 'sum':
        return total
    if avg_factor is None:
        count = valid.sum() if valid is not None else loss.numel()
        if isinstance(count, Tensor):
            return total / count.clamp(min=1).to(total.dtype)
        return total / max(count, 1)
    eps = torch.finfo(total.dtype).eps
    if isinstance(avg_factor, Tensor):
        return total / avg_factor.to(total.dtype).clamp(min=eps)
    return total / max(float(avg_factor), eps)



def as_row_param(value: Scalar, like: Tensor) -> Scalar:
    """A per-row coefficient (float or tensor) cast to the dtype of ``like``."""
    if isinstance(value, Tensor):
        return value.to(like.dtype)
    return float(value)
