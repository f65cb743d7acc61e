"""LightSKD distillation with reverse guidance (DRG)."""
from typing import Optional

from torch import Tensor

from mmkd.registry import MODELS

from .base import BaseDistillLoss
from .checks import Default, resolve_alias
from .kd_loss import kd_loss


@MODELS.register_module()
class DRGLoss(BaseDistillLoss):
    """Distillation with reverse guidance (DRG) of LightSKD.

    "Lightweight Self-Knowledge Distillation with Multi-source Information
    Fusion" (LightSKD), arXiv:2305.09183, 2023. Self-distillation without a
    teacher: an auxiliary classifier on an intermediate stage (stage 2 of a
    ResNet, see :class:`~mmkd.models.heads.DRGHead`) is the "teacher" of the
    final logits: ``T^2 * KL(softmax(aux.detach() / T) || softmax(final / T))``
    per row, i.e. :func:`~mmkd.models.losses.kd_loss` with the auxiliary logits
    as (detached) teacher. The auxiliary head itself is trained by its own
    cross-entropy, which the self-distiller adds.

    The self-distiller calls it once per training step::

        aux_logits = drg_head(stage2_features)               # (B, C)
        losses['loss_drg'] = drg_loss(final_logits, aux_logits, target)

    Args:
        temperature (float): Temperature ``T``. Defaults to 4.0.
        tau (float, optional): Alias of ``temperature``. Defaults to None.
        loss_weight (float): Multiplies the loss (official: 0.2).
            Defaults to 0.2.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Defaults to
            ``'mean'``.
        ignore_index (int | None): Rows whose target equals it are excluded.
            Defaults to 255.
    """

    inputs = ('logits', )
    requires_target = False
    sigmoid_capable = False
    row_wise = True

    def __init__(self,
                 temperature: float = Default(4.0),
                 loss_weight: float = 0.2,
                 reduction: str = 'mean',
                 ignore_index: Optional[int] = 255,
                 *,
                 tau: Optional[float] = None) -> None:
        super().__init__(loss_weight, reduction, ignore_index)
        self.temperature = resolve_alias('temperature', temperature, 'tau', tau)

    def loss_rows(self, s: Tensor, t: Tensor, target: Optional[Tensor]) -> Tensor:
        return kd_loss(s, t, self.temperature)
