"""ReKD: top-K decomposition of KD (Xu et al., IEEE TCSVT 2023)."""
from typing import Optional

import torch
from torch import Tensor

from mmkd.registry import MODELS

from .base import BaseDistillLoss
from .checks import Default, check_non_negative, resolve_alias
from .kl_divergence import binary_kl, log_binary, subset_kl
from .reduction import Scalar, as_row_param


def topk_mask(logits: Tensor, k: int, dtype: torch.dtype = torch.bool) -> Tensor:
    """``(N, C, *S)`` mask of the ``k`` largest logits of every row.

    Args:
        logits (Tensor): ``(N, C, *S)`` logits.
        k (int): Number of classes kept per row, ``1 <= k <= C``.
        dtype (torch.dtype): Boolean, or a float dtype for a 0/1 mask.
            Defaults to ``torch.bool``.

    Raises:
        ValueError: If ``k`` is not in ``[1, C]``.
    """
    num_classes = logits.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_classes:
        raise ValueError(f'k must be an integer with 1 <= k <= C = {num_classes}, got {k!r}.')
    index = logits.detach().topk(k, dim=1, sorted=False).indices
    return torch.zeros_like(logits, dtype=dtype).scatter_(1, index, 1)


def rekd_loss(preds_S: Tensor,
              preds_T: Tensor,
              k: int = 5,
              alpha: Scalar = 1.0,
              beta: Scalar = 1.0,
              gamma: Scalar = 0.0,
              temperature: float = 4.0,
              topk_source: str = 'teacher') -> Tensor:
    """Per-row ReKD loss ``T^2 * (alpha * TISD + beta * NTID + gamma * BIN)``.

    ``S_K`` are the ``k`` classes with the largest logits of the row (of the
    teacher or the student, ``topk_source``); ``TISD`` is the KL of the
    softmaxes restricted to ``S_K``, ``NTID`` the KL restricted to its
    complement (0 when ``k = C``) and ``BIN`` the KL of the binary top-K masses
    ``[P(S_K), 1 - P(S_K)]``. With ``gamma = 1``, ``alpha = P_t(S_K)`` and
    ``beta = 1 - P_t(S_K)`` (per row) this equals :func:`kd_loss`.

    Args:
        preds_S (Tensor): Student logits ``(N, C, *S)``.
        preds_T (Tensor): Teacher logits, same shape (detached here).
        k (int): Size of the head set, ``1 <= k <= C``. Defaults to 5.
        alpha (float | Tensor): TISD weight (number or row map). Defaults to 1.0.
        beta (float | Tensor): NTID weight. Defaults to 1.0.
        gamma (float | Tensor): BIN weight; the term is skipped when it is the
            number 0. Defaults to 0.0.
        temperature (float): Temperature ``T``. Defaults to 4.0.
        topk_source (str): ``'teacher'`` or ``'student'``. Defaults to
            ``'teacher'``.

    Returns:
        Tensor: Row map ``(N, *S)``.
    """
    if topk_source not in ('teacher', 'student'):
        raise ValueError(f"topk_source must be 'teacher' or 'student', got {topk_source!r}.")
    T = float(temperature)
    # one 0/1 float mask serves both subsets, forward and backward
    head = topk_mask(preds_T if topk_source == 'teacher' else preds_S, k, preds_S.dtype)
    tisd, lse_in_s, lse_in_t = subset_kl(preds_S, preds_T, T, mask=head, with_lse=True)
    ntid, lse_out_s, lse_out_t = subset_kl(
        preds_S, preds_T, T, mask=head, complement=True, with_lse=True)
    loss = as_row_param(alpha, tisd) * tisd + as_row_param(beta, ntid) * ntid
    if isinstance(gamma, Tensor) or gamma != 0:
        binary = binary_kl(*log_binary(lse_in_t, lse_out_t), *log_binary(lse_in_s, lse_out_s))
        loss = loss + as_row_param(gamma, binary) * binary
    return loss * (T * T)


@MODELS.register_module()
class ReKDLoss(BaseDistillLoss):
    """ReKD loss: top-K inter-class (TISD) and non-top-K (NTID) distillation.

    Xu et al., IEEE Transactions on Circuits and Systems for Video Technology
    (TCSVT), 2023: top-K inter-class similarity distillation (TISD) and
    non-top-K inter-class distillation (NTID). No official code is published;
    this follows the mmkd loss specification, written from the paper's
    decomposition of KD over {top-K classes, the rest}; see :func:`rekd_loss`.

    Args:
        k (int): Number of head classes, ``1 <= k <= C`` (checked at call time).
            Defaults to 5.
        alpha (float): TISD weight. Defaults to 1.0.
        beta (float): NTID weight. Defaults to 1.0.
        gamma (float): Weight of the binary top-K mass term (off by default).
            Defaults to 0.0.
        temperature (float): Temperature ``T``. Defaults to 4.0.
        tau (float, optional): Alias of ``temperature``. Defaults to None.
        topk_source (str): Whose logits choose the top K, ``'teacher'`` or
            ``'student'``. Defaults to ``'teacher'``.
        logit_stand (bool): Z-score both logits per row first (Sun et al.,
            CVPR 2024). Defaults to False.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
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
                 k: int = 5,
                 alpha: float = 1.0,
                 beta: float = 1.0,
                 gamma: float = 0.0,
                 temperature: float = Default(4.0),
                 topk_source: str = 'teacher',
                 logit_stand: bool = False,
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 ignore_index: Optional[int] = 255,
                 *,
                 tau: Optional[float] = None) -> None:
        super().__init__(loss_weight, reduction, ignore_index, logit_stand)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f'k must be a positive integer, got {k!r}.')
        if topk_source not in ('teacher', 'student'):
            raise ValueError(f"topk_source must be 'teacher' or 'student', got {topk_source!r}.")
        self.k = k
        self.alpha = check_non_negative('alpha', alpha)
        self.beta = check_non_negative('beta', beta)
        self.gamma = check_non_negative('gamma', gamma)
        self.temperature = resolve_alias('temperature', temperature, 'tau', tau)
        self.topk_source = topk_source

    def check_classes(self, num_classes: int) -> None:
        """``k`` must not exceed the number of classes."""
        if self.k > num_classes:
            raise ValueError(f'ReKDLoss: k={self.k} exceeds the {num_classes} classes of these '
                             f'logits; choose 1 <= k <= {num_classes}.')

    def loss_rows(self, s: Tensor, t: Tensor, target: Optional[Tensor]) -> Tensor:
        return rekd_loss(s, t, self.k, self.alpha, self.beta, self.gamma, self.temperature,
                         self.topk_source)
