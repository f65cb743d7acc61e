"""Localisation distillation (Zheng et al., CVPR 2022)."""
from typing import Optional

from torch import Tensor

from mmkd.registry import MODELS

from .base import BaseDistillLoss
from .checks import Default, resolve_alias
from .kl_divergence import subset_kl


def ld_loss(preds_S: Tensor, preds_T: Tensor, temperature: float = 10.0) -> Tensor:
    """Per-row LD loss ``T^2 * KL(softmax(t/T) || softmax(s/T)) / (n + 1)``.

    Each row holds the ``n + 1`` logits of one box side's distribution over
    the integral bins ``0..n`` (GFL's ``reg_max = n``). As in the authors' code
    and mmdet's ``KnowledgeDistillationKLDivLoss``, the KL divergence is
    averaged over the bins (``.mean(1)`` of the element-wise terms), not summed.

    Args:
        preds_S (Tensor): Student distribution logits ``(N, n + 1)``.
        preds_T (Tensor): Teacher distribution logits, same shape (detached here).
        temperature (float): Softmax temperature ``T``. Defaults to 10.0.

    Returns:
        Tensor: ``(N,)`` per-row losses.
    """
    T = float(temperature)
    return subset_kl(preds_S, preds_T, T) * (T * T / preds_S.shape[1])


@MODELS.register_module()
class LDLoss(BaseDistillLoss):
    """Localisation distillation loss of Zheng et al.

    "Localization Distillation for Dense Object Detection", CVPR 2022
    (arXiv:2102.12252). Distils the teacher's box-side distributions (the
    ``4 x (n + 1)`` logits of GFL's general distribution, one row per side)
    into the student's: per row :func:`ld_loss`. :class:`DenseHeadDistiller`
    applies it, as mmdet's ``LDHead`` does, on the main positive locations of
    the student's own label assignment, each side weighted by the student's
    highest class score there (detached), the sum divided by ``avg_factor=4``
    per FPN level and the levels summed; with the defaults its value equals
    mmdet's ``LDHead`` ``loss_ld``.

    Args:
        temperature (float): Temperature ``T``. Defaults to 10.0 (the paper's
            and mmdet's ``configs/ld``).
        tau (float, optional): Alias of ``temperature``. Defaults to None.
        loss_weight (float): Multiplies the loss. Defaults to 0.25 (the
            paper's and mmdet's ``configs/ld``).
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Defaults to
            ``'mean'``.

    Example:
        >>> loss = MODELS.build(dict(type='LDLoss'))  # T = 10, weight 0.25
        >>> value = loss(student_sides, teacher_sides, weight=w, avg_factor=4.0)
    """

    inputs = ('box_distributions', )
    requires_target = False
    sigmoid_capable = False
    row_wise = True

    def __init__(self,
                 temperature: float = Default(10.0),
                 loss_weight: float = 0.25,
                 reduction: str = 'mean',
                 *,
                 tau: Optional[float] = None) -> None:
        super().__init__(loss_weight, reduction, ignore_index=None, logit_stand=False)
        self.temperature = resolve_alias('temperature', temperature, 'tau', tau)

    def loss_rows(self, s: Tensor, t: Tensor, target: Optional[Tensor]) -> Tensor:
        return ld_loss(s, t, self.temperature)

    def extra_repr(self) -> str:
        return f'temperature={self.temperature}, ' + super().extra_repr()
