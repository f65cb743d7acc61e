"""Knowledge distillation with refined logits (Sun et al., 2024)."""
from typing import Optional, Tuple

import torch
from torch import Tensor

from mmkd.registry import MODELS

from .base import BaseDistillLoss
from .checks import Default, check_non_negative, check_positive, resolve_alias
from .kl_divergence import binary_kl, log_binary, subset_kl, subset_logsumexp
from .reduction import Scalar, as_row_param


def _log_top1_binary(logits: Tensor, temperature: float) -> Tuple[Tensor, Tensor]:
    """``(log max_c p(c), log (1 - max_c p(c)))`` per row, ``p = softmax(z / T)``.

    With ``e = exp(z / T - max)``, ``max p = 1 / sum(e)`` and ``1 - max p`` is
    the mass of every class but one top-1 class: the sum of ``e`` below the
    maximum plus 1 for each further class tied with it (no cancellation, so a
    confident row keeps an accurate, finite ``log(1 - max p)``).
    """
    e = logits / temperature
    e.sub_(e.amax(dim=1, keepdim=True)).clamp_(min=-80.0).exp_()
    total = e.sum(dim=1)
    top = (e == 1).to(e.dtype)
    rest = e.addcmul_(e, top, value=-1).sum(dim=1).add_(top.sum(dim=1)).sub_(1)
    log_total = total.log_()
    return -log_total, rest.log_().sub_(log_total)


def rld_loss(preds_S: Tensor,
             preds_T: Tensor,
             target: Tensor,
             alpha: Scalar = 1.0,
             beta: Scalar = 8.0,
             temperature: float = 4.0,
             alpha_temperature: Optional[float] = None) -> Tensor:
    """Per-row RLD loss ``alpha * SCD + beta * MCD``.

    * SCD (sample confidence distillation) at temperature ``Ta``:
      ``Ta^2 * KL([max_c p_t(c), 1 - max_c p_t(c)] || [p_s(y), 1 - p_s(y)])``
      with ``p = softmax(z / Ta)`` and ``y`` the label; the teacher's binary
      uses its own top-1 probability, not the label's.
    * MCD (masked correlation distillation) at temperature ``T``: with
      ``M = {c : t_c >= t_y}`` (the label and every class the teacher ranks at
      or above it, ties included),
      ``T^2 * KL(softmax over classes not in M of t/T || same of s/T)``; 0 when
      every class is in ``M`` (the teacher ranks the label last).

    Args:
        preds_S (Tensor): Student logits ``(N, C, *S)``.
        preds_T (Tensor): Teacher logits, same shape (detached here).
        target (Tensor): int64 labels ``(N, *S)`` in ``[0, C)``.
        alpha (float | Tensor): SCD weight (number or row map). Defaults to 1.0.
        beta (float | Tensor): MCD weight. Defaults to 8.0.
        temperature (float): MCD temperature ``T``. Defaults to 4.0.
        alpha_temperature (float | None): SCD temperature ``Ta``; None uses
            ``temperature``. Defaults to None.

    Returns:
        Tensor: Row map ``(N, *S)``.
    """
    T = float(temperature)
    Ta = T if alpha_temperature is None else float(alpha_temperature)
    t = preds_T.detach()
    y = target.unsqueeze(1)
    # SCD: student [p_s(y), 1 - p_s(y)], teacher [max p_t, 1 - max p_t].
    log_p_s, log_q_s = log_binary(
        preds_S.gather(1, y).squeeze(1) / Ta, subset_logsumexp(preds_S, Ta, drop=y))
    with torch.no_grad():
        log_p_t, log_q_t = _log_top1_binary(t, Ta)
    scd = binary_kl(log_p_t, log_q_t, log_p_s, log_q_s) * (Ta * Ta)
    # MCD: keep only the classes the teacher ranks strictly below the label.
    below_label = t < t.gather(1, y)
    mcd = subset_kl(preds_S, t, T, mask=below_label) * (T * T)
    return as_row_param(alpha, scd) * scd + as_row_param(beta, mcd) * mcd


@MODELS.register_module()
class RLDLoss(BaseDistillLoss):
    """Refined logit distillation loss.

    Sun et al., "Knowledge Distillation with Refined Logits", 2024
    (arXiv:2408.07703). Sample confidence distillation (SCD) plus masked
    correlation distillation (MCD), which drops every class the teacher ranks
    at or above the label so that a wrong teacher never pushes the label down;
    see :func:`rld_loss`. Needs ``target``. Recipes: CIFAR ``alpha=1, beta=8,
    T=Ta=4`` (the defaults); ImageNet R34->R18 ``T=Ta=1, beta=0.5``.

    Args:
        alpha (float): SCD weight. Defaults to 1.0.
        beta (float): MCD weight. Defaults to 8.0.
        temperature (float): MCD temperature ``T``. Defaults to 4.0.
        tau (float, optional): Alias of ``temperature``. Defaults to None.
        alpha_temperature (float | None): SCD temperature ``Ta``; None uses
            ``temperature``. Defaults to None.
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
                 alpha_temperature: Optional[float] = None,
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
        self.alpha_temperature = (None if alpha_temperature is None else check_positive(
            'alpha_temperature', alpha_temperature))

    def loss_rows(self, s: Tensor, t: Tensor, target: Optional[Tensor]) -> Tensor:
        return rld_loss(s, t, target, self.alpha, self.beta, self.temperature,
                        self.alpha_temperature)
