"""Base classes of the mmkd losses: declared capabilities and the teacher-student logic.

:class:`DistillLossInfo` holds only the class attributes that declare what a
loss consumes and supports (the contract distillers read to decide whether a
loss fits a head, never class names); :class:`BaseDistillLoss` adds the
behaviour shared by the teacher-student logit losses.
"""
from typing import Optional, Tuple, Union

import torch.nn as nn
from torch import Tensor

from .checks import check_logits, check_non_negative, check_reduction, row_shape
from .precision import fp32_compute, prepare_logits
from .reduction import reduce_rows, valid_rows

#: The input kinds a loss may declare in :attr:`DistillLossInfo.inputs`.
INPUT_KINDS: Tuple[str, ...] = ('logits', 'logit_maps', 'features', 'views', 'student_logits',
                                'box_distributions')


class DistillLossInfo:
    """The capabilities of a distillation loss, declared as class attributes.

    Distillers decide whether a loss fits a head only from these attributes
    (never from class names or ``isinstance``). Every mmkd loss has them:
    :class:`BaseDistillLoss` subclasses through it, losses with another
    signature (:class:`~mmkd.models.losses.DSRLoss`) by mixing it in. A
    subclass that declares an input kind outside :data:`INPUT_KINDS` is
    refused when the class is created.
    """

    #: What ``forward`` consumes, a tuple of input kinds, preferred first:
    #:   'logits'          forward(preds_S, preds_T, target=None, weight=None, avg_factor=None,
    #:                     reduction_override=None): rows of class logits (N, C) or (N, C, *S)
    #:   'logit_maps'      the same signature, on (N, C, H, W) maps, each channel normalised over
    #:                     space (CWD): only where there is a spatial map
    #:   'features'        forward(feats_S, feats_T, target, classifier_S, classifier_T), and
    #:                     its two halves local_logits(feat, classifier) and
    #:                     loss_on_cells(local_S, local_T, target) (SDD; several teachers'
    #:                     local logits are averaged between the two)
    #:   'views'           loss_on_views(logits_S, logits_T, target): (N, C, V) per-view logits,
    #:                     view 0 the global one (SDD on the RoIs of a detector)
    #:   'student_logits'  forward(preds): the student's logits alone (DSR)
    #:   'box_distributions'  the 'logits' signature, on rows (N, n+1) of one box side's
    #:                     distribution logits over the integral bins 0..n (LD on GFL-style heads)
    inputs: Tuple[str, ...] = ('logits', )
    #: Whether forward refuses to run without ``target``.
    requires_target: bool = False
    #: Whether the loss has a mode for independent Bernoulli (sigmoid) classes, switched on by
    #: the instance attribute ``use_sigmoid`` (sigmoid dense heads: RetinaNet, FCOS, GFL ...).
    sigmoid_capable: bool = False
    #: Instance switch of that mode; False on losses that have none.
    use_sigmoid: bool = False
    #: Whether the value is a sum / mean of independent per-row terms, so that it can be
    #: computed row by row (per pixel, per anchor) and reduction='none' returns those terms.
    row_wise: bool = True

    def check_classes(self, num_classes: int) -> None:
        """Raises ValueError if the loss's settings do not fit ``num_classes`` classes.

        Distillers call it at build time with the number of classes of the
        logits they distil (``C + 1`` on RoI heads), so a setting such as
        ReKD's ``k`` is refused before the first step. Defaults to no check.
        """

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        inputs = cls.inputs
        if not isinstance(inputs, tuple) or not inputs:
            raise TypeError(f'{cls.__name__}.inputs must be a non-empty tuple of input kinds '
                            f'from {INPUT_KINDS}, got {inputs!r}.')
        for kind in inputs:
            if kind not in INPUT_KINDS:
                raise TypeError(f'{cls.__name__} declares an unknown input kind {kind!r} in '
                                f'`inputs`; the known kinds are {INPUT_KINDS}.')


class BaseDistillLoss(DistillLossInfo, nn.Module):
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

    The capabilities are declared as in :class:`DistillLossInfo`; a loss with
    ``row_wise = False`` refuses ``reduction='none'`` (and gives the reason in
    :attr:`not_row_wise_reason`).

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

    #: Why there are no per-row values, in the error of ``reduction='none'``
    #: (for losses with ``row_wise = False``).
    not_row_wise_reason: str = 'its value is not a sum of per-row terms'

    def __init__(self,
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 ignore_index: Optional[int] = 255,
                 logit_stand: bool = False) -> None:
        super().__init__()
        self.loss_weight = check_non_negative('loss_weight', loss_weight)
        self.reduction = self.validate_reduction(reduction)
        self.ignore_index = ignore_index
        self.logit_stand = logit_stand

    @property
    def name(self) -> str:
        return type(self).__name__

    def validate_reduction(self, reduction: str) -> str:
        """``reduction`` if the loss supports it: ``'none'`` needs :attr:`row_wise`.

        Raises:
            ValueError: For an unknown reduction, or ``'none'`` on a loss that
                is not row-wise.
        """
        if reduction == 'none' and not self.row_wise:
            raise ValueError(f"{self.name} does not support reduction='none': "
                             f"{self.not_row_wise_reason}. Use 'mean' or 'sum'.")
        return check_reduction(reduction)

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
        reduction = self.validate_reduction(reduction_override or self.reduction)
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
