"""Base class of the teacher-student logit losses."""
from typing import Optional, Union

import torch.nn as nn
from torch import Tensor

from .checks import check_logits, check_reduction, row_shape
from .precision import fp32_compute, prepare_logits
from .reduction import reduce_rows, valid_rows


class BaseDistillLoss(nn.Module):
    """Common behaviour of the teacher-student losses of mmkd.

    Subclasses implement :meth:`loss_rows`, which returns one value per row;
    this class does everything the loss specification asks of all losses:

    * accepts ``(N, C)`` or dense ``(N, C, *S)`` logits (class axis at dim 1),
      without moving the class axis;
    * detaches the teacher, disables autocast and computes in float32 (float64
      inputs stay float64); the result is float32 (or float64);
    * optional logit standardisation of both inputs (``logit_stand``);
    * masks rows whose ``target`` equals ``ignore_index`` or whose ``weight``
      is 0, multiplies the others by ``weight``, reduces with ``reduction`` and
      ``avg_factor`` (see :func:`~mmkd.models.losses.reduction.reduce_rows`; no
      valid row gives an exact 0 connected to the graph);
    * multiplies by ``loss_weight``.

    Args:
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. ``'mean'``
            averages per-row values over the valid rows. Defaults to
            ``'mean'``.
        ignore_index (int | None): Rows whose target equals it are excluded.
            Defaults to 255.
        logit_stand (bool): Z-score both logits per row first (Sun et al.,
            CVPR 2024). Defaults to False.
    """

    #: Whether :meth:`forward` refuses to run without ``target``.
    requires_target: bool = False
    #: Reductions the loss supports.
    reductions = ('none', 'mean', 'sum')

    def __init__(self,
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 ignore_index: Optional[int] = 255,
                 logit_stand: bool = False) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction, self.reductions)
        self.ignore_index = ignore_index
        self.logit_stand = logit_stand

    @property
    def name(self) -> str:
        return type(self).__name__

    def forward(self,
                preds_S: Tensor,
                preds_T: Tensor,
                target: Optional[Tensor] = None,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[Union[float, Tensor]] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """Computes the loss.

        Args:
            preds_S (Tensor): Student logits, ``(N, C)`` or ``(N, C, *S)``.
            preds_T (Tensor): Teacher logits, same shape (detached here).
            target (Tensor | None): int64 labels ``(N,)`` or ``(N, *S)``. Needed
                by losses that use the label; otherwise only masks rows.
            weight (Tensor | None): Per-row weights, ``(N,)`` or ``(N, *S)``.
            avg_factor (float | Tensor | None): Replaces the number of valid
                rows in ``'mean'``.
            reduction_override (str | None): Overrides ``self.reduction``.

        Returns:
            Tensor: Scalar, or the ``(N, *S)`` row map for ``'none'``.
        """
        reduction = check_reduction(reduction_override or self.reduction, self.reductions)
        if self.requires_target and target is None:
            raise ValueError(f'{self.name} needs `target` (the class labels).')
        check_logits(preds_S, preds_T, self.name)
        with fp32_compute(preds_S):
            s, t = prepare_logits(preds_S, preds_T, self.logit_stand)
            valid, target = valid_rows(target, weight, self.ignore_index, row_shape(s))
            loss = self.reduce(s, t, target, valid, weight, reduction, avg_factor)
        return loss * self.loss_weight

    def reduce(self, s: Tensor, t: Tensor, target: Optional[Tensor], valid: Optional[Tensor],
               weight: Optional[Tensor], reduction: str,
               avg_factor: Optional[Union[float, Tensor]]) -> Tensor:
        """Per-row values, masked and reduced (overridden by relational losses)."""
        return reduce_rows(self.loss_rows(s, t, target), valid, weight, reduction, avg_factor)

    def loss_rows(self, s: Tensor, t: Tensor, target: Optional[Tensor]) -> Tensor:
        """Per-row loss ``(N, *S)`` of prepared float logits (before weights).

        ``target`` is sanitised: ignored rows hold class 0.
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f'loss_weight={self.loss_weight}, reduction={self.reduction!r}, '
                f'ignore_index={self.ignore_index}')
