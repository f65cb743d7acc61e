"""Decoupled knowledge distillation (Zhao et al., CVPR 2022)."""
from typing import Optional

from torch import Tensor

from mmkd.registry import MODELS

from .base import BaseDistillLoss
from .checks import Default, check_non_negative, resolve_alias
from .kl_divergence import binary_kl, log_binary, subset_kl
from .reduction import Scalar, as_row_param


def dkd_loss(preds_S: Tensor,
             preds_T: Tensor,
             target: Tensor,
             alpha: Scalar = 1.0,
             beta: Scalar = 8.0,
             temperature: float = 4.0) -> Tensor:
    """Per-row DKD loss ``T^2 * (alpha * TCKD + beta * NCKD)``.

    With ``g`` the target class and ``p = softmax(z / T)``:
    ``TCKD = KL([p_t(g), 1 - p_t(g)] || [p_s(g), 1 - p_s(g)])`` and
    ``NCKD = KL(softmax over classes != g of t/T || same of s/T)``.
    ``1 - p(g)`` is never formed: both binary log-probabilities come from the
    log-masses of the target class and of the other classes, so very large
    logits stay finite. With ``alpha = 1`` and per-row
    ``beta = 1 - p_t(g)`` this is exactly :func:`kd_loss`.

    Args:
        preds_S (Tensor): Student logits ``(N, C, *S)``.
        preds_T (Tensor): Teacher logits, same shape (detached here).
        target (Tensor): int64 labels ``(N, *S)`` in ``[0, C)``.
        alpha (float | Tensor): TCKD weight, a number or a row map
            broadcastable to ``(N, *S)``. Defaults to 1.0.
        beta (float | Tensor): NCKD weight, likewise. Defaults to 8.0.
        temperature (float): Temperature ``T``. Defaults to 4.0.

    Returns:
        Tensor: Row map ``(N, *S)``.
    """
    T = float(temperature)
    gt = target.unsqueeze(1)
    nckd, lse_rest_s, lse_rest_t = subset_kl(preds_S, preds_T, T, drop=gt, with_lse=True)
    log_p_s, log_q_s = log_binary(preds_S.gather(1, gt).squeeze(1) / T, lse_rest_s)
    log_p_t, log_q_t = log_binary(preds_T.detach().gather(1, gt).squeeze(1) / T, lse_rest_t)
    tckd = binary_kl(log_p_t, log_q_t, log_p_s, log_q_s)
    alpha, beta = as_row_param(alpha, tckd), as_row_param(beta, nckd)
    return (alpha * tckd + beta * nckd) * (T * T)


@MODELS.register_module()
class DKDLoss(BaseDistillLoss):
    """Decoupled knowledge distillation loss.

    Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022. KD split into
    the target-class term TCKD and the non-target-class term NCKD, weighted by
    ``alpha`` and ``beta``; see :func:`dkd_loss`. Needs ``target``. The
    official linear warm-up of the loss weight is a schedule, not part of the
    loss. Recipes: CIFAR ``alpha=1, beta=8, T=4`` (the defaults); ImageNet
    R34->R18 ``T=1, beta=0.5``; COCO two-stage ``T=1, beta=0.25`` with the
    background as an ordinary class.

    Args:
        alpha (float): TCKD weight. Defaults to 1.0.
        beta (float): NCKD weight. Defaults to 8.0.
        temperature (float): Temperature ``T``. Defaults to 4.0.
        tau (float, optional): Alias of ``temperature``. Defaults to None.
        logit_stand (bool): Z-score both logits per row first (Sun et al.,
            CVPR 2024). Defaults to False.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Defaults to
            ``'mean'``.
        ignore_index (int | None): Rows whose target equals it are excluded.
            Defaults to 255.
    """

    inputs = ('logits', )
    requires_target = True
    sigmoid_capable = False
    row_wise = True

    def __init__(self,
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
        self.alpha = check_non_negative('alpha', alpha)
        self.beta = check_non_negative('beta', beta)
        self.temperature = resolve_alias('temperature', temperature, 'tau', tau)

    def loss_rows(self, s: Tensor, t: Tensor, target: Optional[Tensor]) -> Tensor:
        return dkd_loss(s, t, target, self.alpha, self.beta, self.temperature)
