"""Restricted-softmax KL divergence: the numerical core of the mmkd losses.

The KL divergence at the heart of KD, DKD, ReKD, RLD, SDD, DRG, DSR and CWD is
:func:`subset_kl`: per row, ``KL(softmax_A(t/T) || softmax_A(s/T))`` over a
subset ``A`` of the classes (all of them, a mask or its complement, minus at
most one index per row), computed along ``dim=1`` without moving the class axis.
It is an autograd function that keeps only its inputs for the backward pass and
recomputes the two softmaxes there. Compared with composing
``log_softmax``/``softmax``/``kl_div`` with autograd (which saves the student's
log-probabilities and the teacher's probabilities, two full-size tensors per KL
term), it needs no saved activation at all.

Also here: :func:`subset_logsumexp` (the log-mass of a subset, same memory
behaviour), :func:`log_binary` and :func:`binary_kl` (two-way splits built from
log-masses, for DKD's TCKD, ReKD's BIN and RLD's SCD), and the floor below which
``exp`` is not evaluated.
"""
from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

#: exp() of anything below this is treated as this; exp(-80) = 1.8e-35 is far below
#: the float32 resolution of a softmax sum (which is at least 1), and it keeps
#: every argument in the fast vectorised range of exp (no underflow, no denormal).
_EXP_FLOOR = -80.0


def _excluded_value(dtype: torch.dtype) -> float:
    """Added to excluded logits: a quarter of the dtype's most negative value,
    so that the masked logits stay finite and far below every kept one."""
    return -torch.finfo(dtype).max / 4


class _Subset:
    """The classes kept in every row: all, a 0/1 mask (or its complement),
    minus at most one index per row.

    Excluded logits are pushed down additively and excluded probabilities are
    multiplied to exactly 0: on CPU, arithmetic with a float mask is several
    times faster than ``masked_fill``/``where`` with a boolean one.
    """

    def __init__(self, mask: Optional[Tensor], complement: bool, drop: Optional[Tensor]) -> None:
        self.mask, self.complement, self.drop = mask, complement, drop

    @property
    def restricted(self) -> bool:
        return self.mask is not None or self.drop is not None

    def logits(self, x: Tensor, temperature: float) -> Tensor:
        """``x / T`` with excluded classes far below the kept ones.

        Returns ``x`` itself when there is nothing to do: never modify the
        result in place without checking.
        """
        if temperature != 1:
            z = x / temperature
        elif self.restricted:
            z = x.clone()
        else:
            return x
        low = _excluded_value(z.dtype)
        if self.mask is not None:
            excluded = self.mask if self.complement else 1 - self.mask
            z.add_(excluded, alpha=low)
        if self.drop is not None:
            z.scatter_(1, self.drop, low)
        return z

    def exp(self, z: Tensor, shift: Tensor, inplace: bool = False) -> Tensor:
        """``exp(z - shift)`` (``shift`` a row map), exactly 0 on excluded classes."""
        shift = shift.unsqueeze(1)
        e = z.sub_(shift) if inplace else z - shift
        e.clamp_(min=_EXP_FLOOR).exp_()
        if self.mask is not None:
            if self.complement:
                e.addcmul_(e, self.mask, value=-1)  # e * (1 - mask), exact zeros
            else:
                e.mul_(self.mask)
        if self.drop is not None:
            e.scatter_(1, self.drop, 0.0)
        return e

    def log_mass(self, z: Tensor) -> Tuple[Tensor, Tensor]:
        """Row max and row logsumexp of ``z`` over the kept classes.

        An empty subset gives a finite, hugely negative logsumexp ("log 0").
        """
        z_max = z.amax(dim=1)
        total = self.exp(z, z_max).sum(dim=1).clamp_(min=torch.finfo(z.dtype).tiny)
        return z_max, total.log_().add_(z_max)

    def softmax(self, x: Tensor, temperature: float, lse: Tensor) -> Tensor:
        """The restricted ``softmax(x / T)`` as a new tensor, from its logsumexp."""
        z = self.logits(x, temperature)
        return self.exp(z, lse, inplace=z is not x)


def _is_empty(log_mass: Tensor) -> Tensor:
    """Rows whose kept subset is empty, from their (hugely negative) log-mass."""
    return log_mass < _excluded_value(log_mass.dtype) / 2


def _float_mask(mask: Optional[Tensor], like: Tensor) -> Optional[Tensor]:
    if mask is None or mask.dtype == like.dtype:
        return mask
    return mask.to(like.dtype)


class _SubsetKL(torch.autograd.Function):
    """KL between teacher and student softmaxes restricted to a class subset.

    Forward returns per row ``KL(softmax_A(t/T) || softmax_A(s/T))`` and, with
    ``with_lse``, the student's and teacher's ``logsumexp_A(x/T)``. Only the
    inputs (which the caller holds anyway) and row maps are saved: backward
    recomputes the two restricted softmaxes. Over all classes (KD) it uses the
    fused ``log_softmax``/``softmax`` kernels. Over a subset it computes, with
    ``q_t`` the teacher's restricted softmax,
    ``KL = sum_A q_t (t - s) / T - lse_t + lse_s`` with exponentials clamped at
    ``exp(-80)`` and excluded classes zeroed, which keeps every ``exp`` in its
    fast range; either way identical inputs give exactly 0.
    """

    @staticmethod
    def forward(ctx, s: Tensor, t: Tensor, temperature: float, mask: Optional[Tensor],
                complement: bool, drop: Optional[Tensor], with_lse: bool):
        ctx.temperature, ctx.complement = temperature, complement
        subset = _Subset(mask, complement, drop)
        ctx.fused = not subset.restricted and not with_lse
        if ctx.fused:  # plain KD: the fused (log-)softmax kernels are fastest
            ctx.save_for_backward(s, t)
            log_q_s = torch.log_softmax(subset.logits(s, temperature), dim=1)
            log_q_t = torch.log_softmax(subset.logits(t, temperature), dim=1)
            diff = torch.sub(log_q_t, log_q_s, out=log_q_s)
            return diff.mul_(log_q_t.exp_()).sum(dim=1)
        zs = subset.logits(s, temperature)
        _, lse_s = subset.log_mass(zs)
        zt = subset.logits(t, temperature)
        max_t = zt.amax(dim=1)
        q_t = subset.exp(zt, max_t)
        sum_t = q_t.sum(dim=1).clamp_(min=torch.finfo(q_t.dtype).tiny)
        q_t.div_(sum_t.unsqueeze(1))
        lse_t = sum_t.log_().add_(max_t)
        # excluded classes: (a + low) - (b + low) = 0 in the difference, q_t = 0
        diff = zt.sub_(zs) if zt is not t else zt - zs
        del zs, zt
        kl = diff.mul_(q_t).sum(dim=1).sub_(lse_t).add_(lse_s)
        del diff, q_t
        if subset.restricted:  # an empty subset: exactly 0
            kl = torch.where(_is_empty(lse_s), kl.new_zeros(()), kl)
        ctx.save_for_backward(s, t, mask, drop, lse_s, lse_t)
        if not with_lse:
            return kl
        ctx.mark_non_differentiable(lse_t)
        return kl, lse_s, lse_t

    @staticmethod
    @once_differentiable
    def backward(ctx, g_kl: Optional[Tensor], *g_lse: Optional[Tensor]):
        if ctx.fused:  # d kl / d s = (softmax(s/T) - softmax(t/T)) / T
            s, t = ctx.saved_tensors
            T = ctx.temperature
            grad = torch.softmax(s / T if T != 1 else s, dim=1)
            grad.sub_(torch.softmax(t / T if T != 1 else t, dim=1))
            return grad.mul_((g_kl / T).unsqueeze(1)), None, None, None, None, None, None
        s, t, mask, drop, lse_s, lse_t = ctx.saved_tensors
        T, subset = ctx.temperature, _Subset(mask, ctx.complement, drop)
        g_lse = g_lse[0] if g_lse else None
        g_kl = torch.zeros_like(lse_s) if g_kl is None else g_kl
        if subset.restricted:  # an empty subset has no softmax: no gradient
            empty = _is_empty(lse_s)
            g_kl = torch.where(empty, g_kl.new_zeros(()), g_kl)
            g_lse = None if g_lse is None else torch.where(empty, g_lse.new_zeros(()), g_lse)
        # d kl / d s = (q_s - q_t) / T ; d lse_s / d s = q_s / T   (on the subset)
        coef_s = g_kl if g_lse is None else g_kl + g_lse
        grad = subset.softmax(s, T, lse_s).mul_((coef_s / T).unsqueeze(1))
        grad.addcmul_(subset.softmax(t, T, lse_t), (g_kl / -T).unsqueeze(1))
        return grad, None, None, None, None, None, None


def subset_kl(preds_S: Tensor,
              preds_T: Tensor,
              temperature: float = 1.0,
              mask: Optional[Tensor] = None,
              complement: bool = False,
              drop: Optional[Tensor] = None,
              with_lse: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor, Tensor]]:
    """Per-row KL divergence of two softmaxes restricted to a subset of classes.

    With ``A`` the kept classes of a row and ``q_x = softmax_A(x / T)``, returns
    ``KL(q_t || q_s) = sum_{c in A} q_t(c) (log q_t(c) - log q_s(c))`` (without
    the ``T^2`` factor), computed along ``dim=1`` without moving the class axis;
    the backward pass recomputes the softmaxes instead of keeping activations.
    Excluded classes get a quarter of the dtype's most negative finite value
    added (never a fixed offset such as -1000) and probability exactly 0, so
    rows stay finite for any finite logits; a row whose subset is empty gives
    exactly 0 and no gradient. The teacher never gets a gradient.

    Args:
        preds_S (Tensor): Student logits ``(N, C, *S)``.
        preds_T (Tensor): Teacher logits, same shape (detached here).
        temperature (float): Divides both logits. Defaults to 1.0.
        mask (Tensor | None): ``(N, C, *S)``, boolean or 0/1 in the logits'
            dtype (cheaper when it is used more than once). With
            ``complement=False`` the kept classes are ``mask``, with
            ``complement=True`` the others. None keeps every class.
            Defaults to None.
        complement (bool): See ``mask``. Defaults to False.
        drop (Tensor | None): int64 ``(N, 1, *S)``: one more class to exclude per
            row (for example the label). Defaults to None.
        with_lse (bool): Also return the log-masses of the subset. Defaults to
            False.

    Returns:
        Tensor | tuple[Tensor, Tensor, Tensor]: The KL row map ``(N, *S)``;
        with ``with_lse`` also the student's ``logsumexp_A(s/T)``
        (differentiable) and the teacher's ``logsumexp_A(t/T)``, which are
        finite but hugely negative ("log 0") for an empty subset.
    """
    return _SubsetKL.apply(preds_S, preds_T.detach(), float(temperature),
                           _float_mask(mask, preds_S), complement, drop, with_lse)


class _SubsetLogSumExp(torch.autograd.Function):
    """``logsumexp_A(x / T)`` per row; backward recomputes ``softmax_A(x / T) / T``."""

    @staticmethod
    def forward(ctx, x: Tensor, temperature: float, mask: Optional[Tensor], complement: bool,
                drop: Optional[Tensor]) -> Tensor:
        subset = _Subset(mask, complement, drop)
        _, lse = subset.log_mass(subset.logits(x, temperature))
        ctx.temperature, ctx.complement = temperature, complement
        ctx.save_for_backward(x, mask, drop, lse)
        return lse

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        x, mask, drop, lse = ctx.saved_tensors
        T = ctx.temperature
        grad = _Subset(mask, ctx.complement, drop).softmax(x, T, lse)
        return grad.mul_((g / T).unsqueeze(1)), None, None, None, None


def subset_logsumexp(x: Tensor,
                     temperature: float = 1.0,
                     mask: Optional[Tensor] = None,
                     complement: bool = False,
                     drop: Optional[Tensor] = None) -> Tensor:
    """Per-row ``logsumexp`` of ``x / T`` over a subset of classes.

    Arguments as in :func:`subset_kl`. Keeps no activation for backward. An
    empty subset gives a finite, hugely negative value ("log 0"), whose
    gradient is 0 wherever it is used through :func:`log_binary`.

    Returns:
        Tensor: Row map ``(N, *S)``.
    """
    return _SubsetLogSumExp.apply(x, float(temperature), _float_mask(mask, x), complement, drop)


def log_binary(log_in: Tensor, log_out: Tensor) -> Tuple[Tensor, Tensor]:
    """Log-probabilities of a two-way split from the log-masses of its parts.

    Given ``log_in = logsumexp_A`` and ``log_out = logsumexp_{not A}`` of the
    same scaled logits, returns ``(log P(A), log (1 - P(A)))`` without ever
    forming ``1 - P`` (finite even when one part underflows).
    """
    log_total = torch.logaddexp(log_in, log_out)
    return log_in - log_total, log_out - log_total


def binary_kl(log_p_t: Tensor, log_1mp_t: Tensor, log_p_s: Tensor, log_1mp_s: Tensor) -> Tensor:
    """``KL([p_t, 1 - p_t] || [p_s, 1 - p_s])`` per row, with ``0 log 0 = 0``.

    All arguments are log-probabilities (see :func:`log_binary`); the teacher's
    are detached.
    """
    log_p_t, log_1mp_t = log_p_t.detach(), log_1mp_t.detach()
    p_t, q_t = log_p_t.exp(), log_1mp_t.exp()
    zero = log_p_s.new_zeros(())
    first = torch.where(p_t > 0, p_t * (log_p_t - log_p_s), zero)
    second = torch.where(q_t > 0, q_t * (log_1mp_t - log_1mp_s), zero)
    return first + second

