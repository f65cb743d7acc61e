"""Precision and preparation of the logits before any loss arithmetic.

:func:`fp32_compute` turns autocast off and :func:`upcast` lifts half precision
to float32, so that every loss computes in float32 (float64 stays float64) even
under AMP; :func:`prepare_logits` does that for a student/teacher pair, detaches
the teacher and optionally applies logit standardisation
(:func:`standardize_logits`, Sun et al., CVPR 2024).
"""
import contextlib
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor


@contextlib.contextmanager
def fp32_compute(x: Tensor) -> Iterator[None]:
    """Disables autocast for the device of ``x`` inside the block.

    Losses call :func:`upcast` on their inputs inside this block, so that even
    under ``torch.autocast`` (AMP) all their arithmetic runs in float32.
    """
    try:
        ctx = torch.autocast(device_type=x.device.type, enabled=False)
    except (RuntimeError, ValueError):  # a device type autocast does not know
        ctx = contextlib.nullcontext()
    with ctx:
        yield


def upcast(x: Tensor) -> Tensor:
    """Returns ``x`` as float32 if it is float16/bfloat16, else unchanged.

    float32 and float64 inputs are kept (float64 computes in float64).

    Raises:
        TypeError: If ``x`` is not a floating point tensor.
    """
    if not x.is_floating_point():
        raise TypeError(f'Logits must be a floating point tensor, got {x.dtype}.')
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x



def standardize_logits(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Z-score of every row along the class axis (logit standardisation).

    ``(z - mean_c z) / (std_c z + eps)`` with the unbiased standard deviation
    (divides by ``C - 1``), as in Sun et al., "Logit Standardization in
    Knowledge Distillation", CVPR 2024. Constant rows become zeros, with
    finite gradients.

    Args:
        logits (Tensor): ``(N, C, *S)`` logits.
        eps (float): Added to the standard deviation. Defaults to 1e-7.

    Returns:
        Tensor: Standardised logits, same shape.
    """
    centred = logits - logits.mean(dim=1, keepdim=True)
    if logits.shape[1] < 2:  # the unbiased std is undefined; the row is constant
        return centred
    var = centred.square().sum(dim=1, keepdim=True).div(logits.shape[1] - 1)
    # sqrt has an infinite derivative at 0: a constant row (zero-initialised head,
    # saturated pixel) gets std 0 without differentiating sqrt there (its centred
    # logits are 0, so the value is 0 and the gradient finite).
    positive = var > 0
    std = torch.where(positive, var, torch.ones_like(var)).sqrt() * positive
    return centred / (std + eps)


def prepare_logits(preds_S: Tensor,
                   preds_T: Optional[Tensor],
                   logit_stand: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """Upcasts to float32, detaches the teacher and optionally standardises.

    Must be called inside :func:`fp32_compute`.

    Returns:
        tuple[Tensor, Tensor | None]: Student and (detached) teacher logits.
    """
    s = upcast(preds_S)
    t = None if preds_T is None else upcast(preds_T.detach())
    if logit_stand:
        s = standardize_logits(s)
        if t is not None:
            t = standardize_logits(t)
    return s, t
