"""Argument checks shared by the mmkd losses.

Shapes of student/teacher logits (:func:`check_logits`, :func:`row_shape`),
positive hyper-parameters (:func:`check_positive`) and reduction names
(:func:`check_reduction`). Every check raises a ``ValueError`` that names the
offending argument.
"""
from typing import Tuple

from torch import Tensor

_REDUCTIONS = ('none', 'mean', 'sum')


def check_logits(preds_S: Tensor, preds_T: Tensor, name: str = 'loss') -> None:
    """Checks that student and teacher logits are ``(N, C, *S)`` and alike.

    Raises:
        ValueError: If the shapes differ or have fewer than two dimensions.
    """
    if preds_S.dim() < 2:
        raise ValueError(f'{name}: logits must be (N, C) or (N, C, *S), got shape '
                         f'{tuple(preds_S.shape)}.')
    if preds_S.shape != preds_T.shape:
        raise ValueError(f'{name}: student logits {tuple(preds_S.shape)} and teacher logits '
                         f'{tuple(preds_T.shape)} must have the same shape.')


def row_shape(logits: Tensor) -> Tuple[int, ...]:
    """Shape of the row map of ``logits``: ``(N, *S)`` for ``(N, C, *S)``."""
    return (logits.shape[0], ) + tuple(logits.shape[2:])


def check_positive(name: str, value: float) -> float:
    """Returns ``value`` if it is a positive number, else raises ValueError."""
    if not value > 0:
        raise ValueError(f'{name} must be positive, got {value}.')
    return value


def check_reduction(reduction: str, allowed: Tuple[str, ...] = _REDUCTIONS) -> str:
    """Validates a reduction name."""
    if reduction not in allowed:
        raise ValueError(f'reduction must be one of {allowed}, got {reduction!r}.')
    return reduction

