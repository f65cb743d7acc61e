"""Vanilla knowledge distillation (Hinton et al., 2015)."""
from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from mmkd.registry import MODELS

from .base import BaseDistillLoss
from .checks import Default, resolve_alias
from .kl_divergence import subset_kl


def kd_loss(preds_S: Tensor,
            preds_T: Tensor,
            temperature: float = 4.0,
            use_sigmoid: bool = False) -> Tensor:
    """Per-row KD loss ``T^2 * KL(softmax(t/T) || softmax(s/T))``.

    With ``use_sigmoid=True`` every logit is an independent Bernoulli:
    ``T^2 * sum_c KL(Bern(sigmoid(t_c/T)) || Bern(sigmoid(s_c/T)))``.

    Args:
        preds_S (Tensor): Student logits ``(N, C, *S)``, floating point.
        preds_T (Tensor): Teacher logits, same shape (detached here).
        temperature (float): Softmax temperature ``T``. Defaults to 4.0.
        use_sigmoid (bool): Bernoulli (sigmoid) instead of softmax
            probabilities. Defaults to False.

    Returns:
        Tensor: Row map ``(N, *S)`` of per-row losses.
    """
    T = float(temperature)
    if use_sigmoid:
        s = preds_S / T
        t = preds_T.detach() / T
        p_t = t.sigmoid()
        # KL(Bern(p_t) || Bern(p_s)) = BCE(s, p_t) - BCE(t, p_t), both stable.
        kl = (F.binary_cross_entropy_with_logits(s, p_t, reduction='none') -
              F.binary_cross_entropy_with_logits(t, p_t, reduction='none'))
        return kl.sum(dim=1) * (T * T)
    return subset_kl(preds_S, preds_T, T) * (T * T)


@MODELS.register_module()
class KDLoss(BaseDistillLoss):
    """Knowledge distillation loss of Hinton et al.

    "Distilling the Knowledge in a Neural Network", NIPS 2014 Deep Learning
    Workshop (arXiv:1503.02531). Per row,
    ``T^2 * KL(softmax(t/T) || softmax(s/T))``; see :func:`kd_loss`.

    Args:
        temperature (float): Temperature ``T``. Defaults to 4.0.
        tau (float, optional): Alias of ``temperature``. Defaults to None.
        use_sigmoid (bool): Treat the ``C`` logits as independent Bernoulli
            variables, for sigmoid classification heads (RetinaNet, FCOS...).
            Defaults to False.
        logit_stand (bool): Z-score both logits per row first (Sun et al.,
            CVPR 2024; their recipe: ``temperature=2``, ``loss_weight=9``).
            Defaults to False.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Defaults to
            ``'mean'``.
        ignore_index (int | None): Rows whose target equals it are excluded.
            Defaults to 255.

    Example:
        >>> loss = MODELS.build(dict(type='KDLoss', temperature=4.0))
        >>> value = loss(student_logits, teacher_logits)
    """

    inputs = ('logits', )
    requires_target = False
    sigmoid_capable = True
    row_wise = True

    def __init__(self,
                 temperature: float = Default(4.0),
                 use_sigmoid: bool = False,
                 logit_stand: bool = False,
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 ignore_index: Optional[int] = 255,
                 *,
                 tau: Optional[float] = None) -> None:
        super().__init__(loss_weight, reduction, ignore_index, logit_stand)
        self.temperature = resolve_alias('temperature', temperature, 'tau', tau)
        self.use_sigmoid = use_sigmoid

    def loss_rows(self, s: Tensor, t: Tensor, target: Optional[Tensor]) -> Tensor:
        return kd_loss(s, t, self.temperature, self.use_sigmoid)
