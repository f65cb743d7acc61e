"""Argument checks shared by the mmkd losses.

Shapes of student/teacher logits (:func:`check_logits`, :func:`row_shape`),
positive hyper-parameters (:func:`check_positive`), hyper-parameters with an
alias keyword (:func:`resolve_alias`, :class:`Default`) and reduction names
(:func:`check_reduction`). Every check raises a ``ValueError`` that names the
offending argument.
"""
import math
from typing import Optional, Tuple

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
    """Returns ``value`` if it is a positive, finite number, else raises ValueError."""
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f'{name} must be positive and finite, got {value}.')
    return value


class Default(float):
    """The default value of a hyper-parameter that has an alias keyword.

    A ``float`` equal to the value it holds (signatures show it as that
    number), whose type tells :func:`resolve_alias` that the caller did not
    pass the argument, so that ``temperature=4.0, tau=2.0`` is refused while
    ``tau=2.0`` alone is not. Never stored: :func:`resolve_alias` returns a
    plain float.
    """

    __slots__ = ()


def check_non_negative(name: str, value: float) -> float:
    """Returns ``value`` if it is a finite number ``>= 0``, else raises ValueError.

    For loss weights and the term weights (``alpha``, ``beta``, ``gamma``) of
    losses whose terms are divergences: a negative weight would maximise one.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value < 0:
        raise ValueError(f'{name} must be a finite number >= 0, got {value!r}.')
    return value


def resolve_alias(name: str, value: float, alias: str, alias_value: Optional[float]) -> float:
    """The value of a hyper-parameter that may be given under an alias.

    Every temperature-using loss accepts both ``temperature`` and ``tau``: one
    is the documented name (``name``, whose default is a :class:`Default`),
    the other an alias keyword (``alias``, default None).

    Args:
        name (str): The documented name, e.g. ``'temperature'``.
        value (float): Its value; a :class:`Default` when not given.
        alias (str): The alias name, e.g. ``'tau'``.
        alias_value (float | None): The alias value; None when not given.

    Returns:
        float: The value, checked positive and finite.

    Raises:
        ValueError: If both are given with different values, or if the value
            (either one) is not positive and finite.
    """
    if alias_value is None:
        return float(check_positive(name, value))
    check_positive(alias, alias_value)
    if not isinstance(value, Default) and float(value) != float(alias_value):
        raise ValueError(f'{name}={value} and its alias {alias}={alias_value} are both given, '
                         f'with different values; give only one of them.')
    return float(alias_value)


def check_reduction(reduction: str, allowed: Tuple[str, ...] = _REDUCTIONS) -> str:
    """Validates a reduction name."""
    if reduction not in allowed:
        raise ValueError(f'reduction must be one of {allowed}, got {reduction!r}.')
    return reduction

