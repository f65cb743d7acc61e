"""Scale decoupled distillation (Wei et al., CVPR 2024)."""
import warnings
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from mmkd.registry import MODELS

from .base import BaseDistillLoss
from .checks import Default, check_logits, check_non_negative, check_positive, resolve_alias
from .dkd_loss import dkd_loss
from .kd_loss import kd_loss
from .precision import fp32_compute, prepare_logits
from .reduction import reduce_rows, valid_rows

#: A model's linear classifier: ``(M, D)`` features -> ``(M, C)`` logits.
Classifier = Callable[[Tensor], Tensor]


def sdd_local_logits(feat: Tensor,
                     classifier: Classifier,
                     scales: Sequence[int] = (1, 2, 4),
                     pool_base: Optional[int] = 4) -> Tensor:
    """Multi-scale local logits of SDD.

    The feature map is average-pooled to ``pool_base x pool_base`` cells, that
    grid is pooled to every ``s x s`` of ``scales`` (official behaviour; with
    ``pool_base=None`` every scale is pooled from the map directly), the cells
    are concatenated scale by scale in row-major order and the classifier is
    applied to every cell.

    Args:
        feat (Tensor): Final feature map before global pooling ``(B, D, H, W)``.
        classifier (callable): Maps ``(M, D)`` features to ``(M, C)`` logits,
            for example the model's ``nn.Linear`` head.
        scales (Sequence[int]): Grid sizes. Defaults to ``(1, 2, 4)``
            (N = 1 + 4 + 16 = 21 cells).
        pool_base (int | None): Size of the intermediate grid. Defaults to 4.

    Returns:
        Tensor: Local logits ``(B, C, N)``; cell 0 is the global one when
        ``scales[0] == 1``.

    Warns:
        UserWarning: When the map is 1 x 1 and a scale above 1 is asked: every
        cell then repeats the global one and SDD reduces to its base loss.
    """
    if feat.dim() != 4:
        raise ValueError(f'SDD expects feature maps (B, D, H, W), got {tuple(feat.shape)}.')
    if feat.shape[-2:] == (1, 1) and max(scales) > 1:
        warnings.warn(f'SDD: the feature map is 1 x 1, so every local cell of scales '
                      f'{tuple(scales)} repeats the global one and SDD reduces to its base '
                      f'loss (DKD / KD). Use larger inputs or a backbone that keeps a larger '
                      f'final map.', UserWarning, stacklevel=2)
    grid = feat if pool_base is None else F.adaptive_avg_pool2d(feat, pool_base)
    cells = torch.cat([F.adaptive_avg_pool2d(grid, s).flatten(2) for s in scales], dim=2)
    B, D, N = cells.shape
    logits = classifier(cells.transpose(1, 2).reshape(B * N, D))
    return logits.reshape(B, N, -1).transpose(1, 2)


def sdd_region_weights(local_T: Tensor, target: Tensor,
                       complementary_weight: float = 2.0) -> Tensor:
    """Weights of the local cells, from the teacher alone.

    ``ok[b, r] = argmax_c local_T[b, :, r] == y_b``; a cell whose ``ok`` agrees
    with the global cell's (``r = 0``) is consistent (weight 1), otherwise
    complementary (``complementary_weight``). The global cell has weight 1.

    Returns:
        Tensor: ``(B, N)`` weights.
    """
    ok = local_T.detach().argmax(dim=1) == target.unsqueeze(1)
    consistent = ok == ok[:, :1]
    return torch.where(consistent, 1.0, float(complementary_weight)).to(local_T.dtype)


def sdd_loss(local_S: Tensor,
             local_T: Tensor,
             target: Tensor,
             base: str = 'dkd',
             complementary_weight: float = 2.0,
             alpha: float = 1.0,
             beta: float = 8.0,
             temperature: float = 4.0) -> Tensor:
    """Weighted multi-scale (or multi-view) loss on precomputed local logits.

    ``(1 / N) * sum_r w[b, r] * l(s[b, :, r], t[b, :, r], y_b)`` per sample,
    with ``w`` from :func:`sdd_region_weights` and ``l`` the per-row base loss
    (:func:`kd_loss` or :func:`dkd_loss`). Averaging it over the batch gives the
    spec's ``1 / (B * N)`` normalisation. Two-stage detectors pass RoI "views"
    ``(R, C+1, 5)`` (view 0 = 2x2 average pooling of the RoI feature) instead
    of scales.

    Args:
        local_S (Tensor): Student local logits ``(B, C, N)``.
        local_T (Tensor): Teacher local logits ``(B, C, N)`` (detached here).
        target (Tensor): int64 labels ``(B,)``.
        base (str): ``'kd'`` or ``'dkd'``. Defaults to ``'dkd'``.
        complementary_weight (float): Weight of complementary cells.
            Defaults to 2.0.
        alpha (float): DKD's TCKD weight (``base='dkd'``). Defaults to 1.0.
        beta (float): DKD's NCKD weight (``base='dkd'``). Defaults to 8.0.
        temperature (float): Temperature of the base loss. Defaults to 4.0.

    Returns:
        Tensor: Per-sample losses ``(B,)``.
    """
    if base == 'kd':
        per_cell = kd_loss(local_S, local_T, temperature)
    elif base == 'dkd':
        cell_target = target.unsqueeze(1).expand(-1, local_S.shape[2])
        per_cell = dkd_loss(local_S, local_T, cell_target, alpha, beta, temperature)
    else:
        raise ValueError(f"base must be 'kd' or 'dkd', got {base!r}.")
    weights = sdd_region_weights(local_T, target, complementary_weight)
    return (per_cell * weights).mean(dim=1)


@MODELS.register_module()
class SDDLoss(BaseDistillLoss):
    """Scale decoupled distillation loss.

    Wei et al., "Scale Decoupled Distillation", CVPR 2024. The base
    loss (DKD by default) is applied to the logits of multi-scale local
    regions of the last feature map; regions whose teacher prediction disagrees
    with the global one ("complementary") get ``complementary_weight``.

    Unlike the other losses it takes feature maps and classifiers::

        loss = sdd(feats_S, feats_T, target, classifier_S, classifier_T)

    where ``feats_*`` are each model's last feature map before global pooling
    ``(B, D, H, W)`` (``D``, ``H``, ``W`` may differ between the models) and
    ``classifier_*`` map ``(M, D)`` features to ``(M, C)`` logits (the linear
    layer of each head; ``C`` must match). The teacher side runs under
    ``torch.no_grad()``. See :func:`sdd_local_logits` and :func:`sdd_loss` for
    the functional pieces.

    Args:
        base (str): Per-region loss, ``'kd'`` or ``'dkd'``. Defaults to ``'dkd'``.
        scales (Sequence[int]): Grid sizes, starting with 1 (the global cell).
            Defaults to ``(1, 2, 4)``.
        pool_base (int | None): Intermediate grid size (official: 4); None pools
            every scale from the map. Defaults to 4.
        complementary_weight (float): Weight of complementary regions.
            Defaults to 2.0.
        alpha (float): DKD's TCKD weight. Defaults to 1.0.
        beta (float): DKD's NCKD weight. Defaults to 8.0.
        temperature (float): Temperature of the base loss. Defaults to 4.0.
        tau (float, optional): Alias of ``temperature``. Defaults to None.
        logit_stand (bool): Z-score the local logits per row first (Sun et al.,
            CVPR 2024). Defaults to False.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        reduction (str): ``'none'`` (per sample), ``'mean'`` or ``'sum'`` over
            the samples. Defaults to ``'mean'``.
        ignore_index (int | None): Samples whose target equals it are excluded.
            Defaults to 255.
    """

    inputs = ('features', 'views')
    requires_target = True
    sigmoid_capable = False
    row_wise = True

    def __init__(self,
                 base: str = 'dkd',
                 scales: Sequence[int] = (1, 2, 4),
                 pool_base: Optional[int] = 4,
                 complementary_weight: float = 2.0,
                 alpha: float = 1.0,
                 beta: float = 8.0,
                 temperature: float = Default(4.0),
                 logit_stand: bool = False,
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 ignore_index: Optional[int] = 255,
                 *,
                 tau: Optional[float] = None) -> None:
        super().__init__(loss_weight, reduction, ignore_index, logit_stand)
        if base not in ('kd', 'dkd'):
            raise ValueError(f"base must be 'kd' or 'dkd', got {base!r}.")
        scales = tuple(scales)
        if not scales or scales[0] != 1 or any(int(s) != s or s < 1 for s in scales):
            raise ValueError(f'scales must be positive integers starting with 1 (the global '
                             f'cell), got {scales}.')
        if pool_base is not None:
            check_positive('pool_base', pool_base)
        self.base = base
        self.scales = scales
        self.pool_base = pool_base
        self.complementary_weight = check_non_negative('complementary_weight',
                                                       complementary_weight)
        self.alpha = check_non_negative('alpha', alpha)
        self.beta = check_non_negative('beta', beta)
        self.temperature = resolve_alias('temperature', temperature, 'tau', tau)

    def forward(self,
                feats_S: Tensor,
                feats_T: Tensor,
                target: Optional[Tensor],
                classifier_S: Classifier,
                classifier_T: Classifier,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[Union[float, Tensor]] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """Computes the SDD loss.

        Args:
            feats_S (Tensor): Student feature map ``(B, D_s, H_s, W_s)``.
            feats_T (Tensor): Teacher feature map ``(B, D_t, H_t, W_t)``.
            target (Tensor): int64 labels ``(B,)``.
            classifier_S (callable): Student classifier ``(M, D_s) -> (M, C)``.
            classifier_T (callable): Teacher classifier ``(M, D_t) -> (M, C)``,
                run under ``torch.no_grad()``.
            weight (Tensor | None): Per-sample weights ``(B,)``.
            avg_factor (float | Tensor | None): Replaces the number of valid
                samples in ``'mean'``.
            reduction_override (str | None): Overrides ``self.reduction``.

        Returns:
            Tensor: Scalar, or ``(B,)`` for ``'none'``.
        """
        if target is None:
            raise ValueError(f'{self.name} needs `target` (the class labels).')
        local_S = self.local_logits(feats_S, classifier_S)
        with torch.no_grad():
            local_T = self.local_logits(feats_T.detach(), classifier_T)
        return self.loss_on_cells(local_S, local_T, target, weight, avg_factor,
                                  reduction_override)

    def local_logits(self, feat: Tensor, classifier: Classifier) -> Tensor:
        """The ``(B, C, N)`` multi-scale local logits of this loss's ``scales``.

        See :func:`sdd_local_logits`. With several teachers the distiller
        averages the teachers' local logits (their feature maps may differ).
        """
        return sdd_local_logits(feat, classifier, self.scales, self.pool_base)

    def loss_on_cells(self,
                      local_S: Tensor,
                      local_T: Tensor,
                      target: Tensor,
                      weight: Optional[Tensor] = None,
                      avg_factor: Optional[Union[float, Tensor]] = None,
                      reduction_override: Optional[str] = None) -> Tensor:
        """The loss on precomputed local logits (:meth:`local_logits`), with the
        consistent / complementary weighting of the cells. Arguments as in
        :meth:`forward`."""
        return self._loss_on_cells(local_S, local_T, target, self.complementary_weight, weight,
                                   avg_factor, reduction_override)

    def loss_on_views(self,
                      logits_S: Tensor,
                      logits_T: Tensor,
                      target: Tensor,
                      weight: Optional[Tensor] = None,
                      avg_factor: Optional[Union[float, Tensor]] = None,
                      reduction_override: Optional[str] = None) -> Tensor:
        """The loss on precomputed view logits, every view weighted equally.

        SDD on the RoIs of a two-stage detector (the input kind ``'views'``):
        the base loss averaged over the ``V`` views of each row, as the official
        detection code does (it sums the per-view losses and divides by the
        views). The consistent / complementary weighting of the multi-scale
        cells (:meth:`forward`) does not apply: ``complementary_weight`` is
        not used here.

        Args:
            logits_S (Tensor): Student view logits ``(N, C, V)``.
            logits_T (Tensor): Teacher view logits ``(N, C, V)``.
            target (Tensor): int64 labels ``(N,)``.
            weight, avg_factor, reduction_override: As in :meth:`forward`.

        Returns:
            Tensor: Scalar, or ``(N,)`` for ``'none'``.
        """
        return self._loss_on_cells(logits_S, logits_T, target, 1.0, weight, avg_factor,
                                   reduction_override)

    def _loss_on_cells(self, logits_S: Tensor, logits_T: Tensor, target: Tensor,
                       complementary_weight: float, weight: Optional[Tensor],
                       avg_factor: Optional[Union[float, Tensor]],
                       reduction_override: Optional[str]) -> Tensor:
        """The weighted base loss on ``(N, C, V)`` cell or view logits."""
        reduction = self.validate_reduction(reduction_override or self.reduction)
        if target is None:
            raise ValueError(f'{self.name} needs `target` (the class labels).')
        check_logits(logits_S, logits_T, self.name)
        with fp32_compute(logits_S):
            s, t = prepare_logits(logits_S, logits_T, self.logit_stand)
            valid, target = valid_rows(target, weight, self.ignore_index, (s.shape[0], ))
            per_sample = sdd_loss(s, t, target, self.base, complementary_weight, self.alpha,
                                  self.beta, self.temperature)
            loss = reduce_rows(per_sample, valid, weight, reduction, avg_factor)
        return loss * self.loss_weight
