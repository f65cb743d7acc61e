"""Channel-wise distillation (Shu et al., ICCV 2021)."""
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from mmkd.registry import MODELS

from .base import BaseDistillLoss
from .checks import Default, resolve_alias
from .kl_divergence import subset_kl
from .reduction import reduce_rows


def cwd_channels(preds_S: Tensor,
                 preds_T: Tensor,
                 tau: float = 1.0,
                 valid: Optional[Tensor] = None,
                 weight: Optional[Tensor] = None) -> Tensor:
    """Per-channel CWD: ``tau^2 * KL(softmax_S(t/tau) || softmax_S(s/tau))``.

    For every image ``n`` and channel ``c`` the map ``x[n, c]`` is turned into
    a distribution over its spatial positions (a softmax over ``*S``, not over
    the channels) and the two distributions are compared with a KL divergence
    summed over the positions.

    Positions where ``valid`` is False are removed from both distributions
    (the softmax runs over the remaining positions), so ignored pixels neither
    receive nor hold probability mass. A channel without any valid position
    gives exactly 0 and no gradient. ``weight`` multiplies the per-position
    terms ``p_t (log p_t - log p_s)`` of the sum (the softmaxes are unchanged).

    Args:
        preds_S (Tensor): Student maps ``(N, C, *S)`` with at least one
            spatial axis, floating point.
        preds_T (Tensor): Teacher maps, same shape (detached here).
        tau (float): Temperature. Defaults to 1.0.
        valid (Tensor | None): Boolean ``(N, *S)`` mask of the positions that
            take part. Defaults to None (all).
        weight (Tensor | None): Per-position weights ``(N, *S)``. Defaults to
            None (the fast path: no activation is kept for backward).

    Returns:
        Tensor: ``(N, C)`` values, ``tau^2`` included.
    """
    # (N, C, *S) -> (N, P, C): positions on dim 1, where subset_kl reduces.
    s = preds_S.flatten(2).transpose(1, 2)
    t = preds_T.detach().flatten(2).transpose(1, 2)
    mask = None if valid is None else valid.flatten(1).unsqueeze(2).expand_as(s)
    if weight is None:
        kl = subset_kl(s, t, tau, mask)
    else:
        zs, zt = s / tau, t / tau
        if mask is not None:
            low = torch.finfo(zs.dtype).min
            zs, zt = zs.masked_fill(~mask, low), zt.masked_fill(~mask, low)
        log_ps, log_pt = F.log_softmax(zs, dim=1), F.log_softmax(zt, dim=1)
        w = weight.flatten(1).unsqueeze(2).to(zs.dtype)
        terms = log_pt.exp() * (log_pt - log_ps) * w
        if mask is not None:  # an empty channel's "softmax" is uniform: drop it
            terms = torch.where(mask, terms, terms.new_zeros(()))
        kl = terms.sum(dim=1)
    return kl * (tau * tau)


@MODELS.register_module()
class ChannelWiseDivergence(BaseDistillLoss):
    """Channel-wise distillation loss for dense predictions.

    Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction",
    ICCV 2021. Each channel of the ``(N, C, *S)`` maps becomes a distribution
    over the spatial positions, ``softmax(x[n, c] / tau)``; the loss is
    ``tau^2 * KL(teacher || student)`` summed over the positions and averaged
    over the ``N * C`` channel maps (see :func:`cwd_channels`). On segmentation
    logits it is the loss of the official code and MMRazor (their Cityscapes
    PSPNet R101 -> R18 setting: ``tau=1``, ``loss_weight=5``).

    ``target`` and ``weight`` are per pixel ``(N, *S)``: pixels whose target
    is ``ignore_index`` or whose weight is 0 are removed from the spatial
    distributions of every channel of their image; the other weights multiply
    the per-pixel KL terms. ``'mean'`` divides by the number of channel maps
    that keep at least one pixel (``N * C`` when nothing is ignored), or by
    ``avg_factor``; no valid pixel at all gives an exact 0 connected to the
    graph. The loss is a sum over channel maps, not over pixels, so
    ``reduction='none'`` is refused.

    Args:
        tau (float): Temperature. Defaults to 1.0.
        temperature (float, optional): Alias of ``tau``. Defaults to None.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        reduction (str): ``'mean'`` or ``'sum'``. Defaults to ``'mean'``.
        ignore_index (int | None): Pixels whose target equals it are excluded.
            Defaults to 255.
    """

    inputs = ('logit_maps', )
    requires_target = False
    sigmoid_capable = False
    row_wise = False
    not_row_wise_reason = 'its terms are whole channel maps, not pixels'

    def __init__(self,
                 tau: float = Default(1.0),
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 ignore_index: Optional[int] = 255,
                 *,
                 temperature: Optional[float] = None) -> None:
        super().__init__(loss_weight, reduction, ignore_index)
        self.tau = resolve_alias('tau', tau, 'temperature', temperature)

    def forward(self,
                preds_S: Tensor,
                preds_T: Tensor,
                target: Optional[Tensor] = None,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[Union[float, Tensor]] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        self.validate_reduction(reduction_override or self.reduction)
        if preds_S.dim() < 3:
            raise ValueError('ChannelWiseDivergence needs dense maps (N, C, *S) with a spatial '
                             f'axis, got shape {tuple(preds_S.shape)}.')
        return super().forward(preds_S, preds_T, target, weight, avg_factor, reduction_override)

    def reduce(self, s: Tensor, t: Tensor, target: Optional[Tensor], valid: Optional[Tensor],
               weight: Optional[Tensor], reduction: str,
               avg_factor: Optional[Union[float, Tensor]]) -> Tensor:
        per_channel = cwd_channels(s, t, self.tau, valid, weight)
        kept = None
        if valid is not None:  # channel maps that keep at least one pixel
            kept = valid.flatten(1).any(dim=1, keepdim=True).expand_as(per_channel)
        return reduce_rows(per_channel, kept, None, reduction, avg_factor)

    def extra_repr(self) -> str:
        return f'tau={self.tau}, ' + super().extra_repr()
