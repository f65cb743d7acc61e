"""DIST: knowledge distillation from a stronger teacher (Huang et al., NeurIPS 2022)."""
from typing import Optional, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from mmkd.registry import MODELS

from .base import BaseDistillLoss
from .checks import Default, check_non_negative, resolve_alias
from .reduction import reduce_rows


def _probs(logits: Tensor, tau: float, use_sigmoid: bool) -> Tensor:
    """A new tensor ``softmax(logits / tau, dim=1)`` (or the sigmoid)."""
    z = logits / tau if tau != 1 else logits
    if use_sigmoid:
        return z.sigmoid_() if z is not logits else z.sigmoid()
    return torch.softmax(z, dim=1)


def _row_dims(x: Tensor) -> Tuple[int, ...]:
    return (0, ) + tuple(range(2, x.dim()))


def _class_view(v: Tensor, like: Tensor) -> Tensor:
    """``(C,)`` -> ``(1, C, 1, ...)`` for broadcasting against ``like``."""
    return v.view((1, -1) + (1, ) * (like.dim() - 2))


def _masked_class_sum(x: Tensor, valid: Optional[Tensor]) -> Tensor:
    """Sum over rows of ``x`` ``(N, C, *S)`` restricted to valid rows -> ``(C,)``.

    Uses a batched matrix product with the mask, so no masked copy is made.
    """
    if valid is None:
        return x.sum(dim=_row_dims(x))
    v = valid.to(x.dtype)
    if x.dim() == 2:
        return v @ x
    return torch.bmm(x.flatten(2), v.flatten(1).unsqueeze(2)).sum(dim=(0, 2))


def _all_reduce(x: Tensor) -> Tensor:
    dist.all_reduce(x)
    return x


class _DISTCorrelations(torch.autograd.Function):
    """Pearson correlations of DIST, keeping only the inputs for backward.

    Returns the per-row (inter-class) correlations ``(N, *S)`` and the
    per-class (intra-class) correlations over the valid rows ``(C,)``. With
    ``world > 1`` the intra-class statistics are summed over the process group
    (two all-reduces of ``O(C)`` numbers: means first, then the centred sums),
    which gives exactly the correlation over the concatenated global batch; in
    backward the upstream gradient of the intra term is summed over the group,
    like an all-gather whose backward sums the gradient of every rank's loss.
    """

    @staticmethod
    def forward(ctx, s: Tensor, t: Tensor, tau: float, use_sigmoid: bool,
                valid: Optional[Tensor], eps: float, world: int) -> Tuple[Tensor, Tensor, Tensor]:
        y_s, y_t = _probs(s, tau, use_sigmoid), _probs(t, tau, use_sigmoid)
        # inter-class: across the classes of each row
        mean_s, mean_t = y_s.mean(dim=1, keepdim=True), y_t.mean(dim=1, keepdim=True)
        a, b = y_s - mean_s, y_t - mean_t
        # (square + sum is much faster than linalg.vector_norm along dim 1 on CPU)
        na, nb = a.square().sum(dim=1).sqrt_(), b.square().sum(dim=1).sqrt_()
        num = a.mul_(b).sum(dim=1)
        den = na * nb + eps
        del a, b
        # intra-class: across the valid rows of each class
        dims = _row_dims(s)
        vmask = None if valid is None else valid.unsqueeze(1)
        if valid is None:
            count = s.new_full((1, ), y_s.numel() // max(s.shape[1], 1))
        else:
            count = valid.sum().to(s.dtype).reshape(1)
        sums = torch.cat([_masked_class_sum(y_s, valid), _masked_class_sum(y_t, valid), count])
        if world > 1:
            sums = _all_reduce(sums)
        n_cls = s.shape[1]
        count = sums[-1:]
        mu_s, mu_t = sums[:n_cls] / count.clamp(min=1), sums[n_cls:2 * n_cls] / count.clamp(min=1)
        a = y_s - _class_view(mu_s, y_s)
        b = y_t - _class_view(mu_t, y_t)
        if vmask is not None:
            a.mul_(vmask)
            b.mul_(vmask)
        stats = torch.stack(
            [a.square().sum(dim=dims), b.square().sum(dim=dims), a.mul_(b).sum(dim=dims)])
        del a, b
        if world > 1:
            stats = _all_reduce(stats)
        na2, nb2 = stats[0].sqrt(), stats[1].sqrt()
        num2 = stats[2]
        den2 = na2 * nb2 + eps
        ctx.tau, ctx.use_sigmoid, ctx.world = tau, use_sigmoid, world
        ctx.save_for_backward(s, t, valid, na, nb, num, den, mu_s, mu_t, na2, nb2, num2, den2)
        ctx.mark_non_differentiable(count)
        return num / den, num2 / den2, count

    @staticmethod
    @once_differentiable
    def backward(ctx, g_rows: Optional[Tensor], g_cls: Optional[Tensor], _g_count):
        s, t, valid, na, nb, num, den, mu_s, mu_t, na2, nb2, num2, den2 = ctx.saved_tensors
        tau, use_sigmoid = ctx.tau, ctx.use_sigmoid
        if g_cls is not None and ctx.world > 1:
            g_cls = _all_reduce(g_cls.clone())
        y_s, y_t = _probs(s, tau, use_sigmoid), _probs(t, tau, use_sigmoid)
        zero = s.new_zeros(())
        # d rho / d a = b / den - num * nb / (na * den^2) * a  with a, b the centred
        # vectors; centring first keeps huge 1/den factors from cancelling.
        if g_rows is not None:
            c_b = (g_rows / den).unsqueeze(1)
            c_a = torch.where(na > 0, -g_rows * num * nb / (na * den * den), zero).unsqueeze(1)
            grad = (y_s - y_s.mean(dim=1, keepdim=True)).mul_(c_a)
            buf = torch.sub(y_t, y_t.mean(dim=1, keepdim=True))
            grad.addcmul_(buf, c_b)
        else:
            grad, buf = torch.zeros_like(y_s), torch.empty_like(y_s)
        if g_cls is not None:
            c_b = _class_view(g_cls / den2, y_s)
            c_a = _class_view(
                torch.where(na2 > 0, -g_cls * num2 * nb2 / (na2 * den2 * den2), zero), y_s)
            centred_t = y_t.sub_(_class_view(mu_t, y_s))  # y_t is not needed any more
            part = torch.sub(y_s, _class_view(mu_s, y_s), out=buf).mul_(c_a)
            part.addcmul_(centred_t, c_b)
            if valid is not None:
                part.mul_(valid.unsqueeze(1))
            grad.add_(part)
        if use_sigmoid:  # d sigmoid = y (1 - y)
            grad.mul_(y_s).mul_(torch.neg(y_s, out=buf).add_(1))
        else:  # d softmax: y * (g - <y, g>)
            dot = torch.mul(y_s, grad, out=buf).sum(dim=1, keepdim=True)
            grad.sub_(dot).mul_(y_s)
        if tau != 1:
            grad.div_(tau)
        return grad, None, None, None, None, None, None


def dist_correlations(preds_S: Tensor,
                      preds_T: Tensor,
                      tau: float = 1.0,
                      use_sigmoid: bool = False,
                      valid: Optional[Tensor] = None,
                      eps: float = 1e-8,
                      gather_intra: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """Inter- and intra-class Pearson correlations of DIST.

    ``Y = softmax(z / tau)`` over classes (``sigmoid(z / tau)`` elementwise with
    ``use_sigmoid``). ``rho(a, b) = <a - mean a, b - mean b> /
    (||a - mean a|| * ||b - mean b|| + eps)``, so a zero-variance vector gives 0.

    Args:
        preds_S (Tensor): Student logits ``(N, C, *S)``.
        preds_T (Tensor): Teacher logits, same shape (detached here).
        tau (float): Temperature. Defaults to 1.0.
        use_sigmoid (bool): Sigmoid instead of softmax. Defaults to False.
        valid (Tensor | None): Boolean row mask ``(N, *S)``; only valid rows
            enter the intra-class correlation. Defaults to None (all rows).
        eps (float): Added to the product of norms. Defaults to 1e-8.
        gather_intra (bool): If ``torch.distributed`` is initialised, compute
            the intra-class correlation over the global batch of the default
            process group. Defaults to False.

    Returns:
        tuple[Tensor, Tensor, Tensor]: ``rho(Y_s[i, :], Y_t[i, :])`` per row
        ``(N, *S)``, ``rho(Y_s[:, j], Y_t[:, j])`` per class ``(C,)`` and the
        number of valid rows that entered it (global with ``gather_intra``),
        shape ``(1,)``.
    """
    world = 1
    if gather_intra and dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
    return _DISTCorrelations.apply(preds_S, preds_T.detach(), float(tau), use_sigmoid, valid,
                                   float(eps), world)


def dist_loss(preds_S: Tensor,
              preds_T: Tensor,
              beta: float = 1.0,
              gamma: float = 1.0,
              tau: float = 1.0,
              use_sigmoid: bool = False,
              valid: Optional[Tensor] = None,
              weight: Optional[Tensor] = None,
              reduction: str = 'mean',
              avg_factor: Optional[Union[float, Tensor]] = None,
              eps: float = 1e-8,
              gather_intra: bool = False) -> Tensor:
    """The DIST loss ``tau^2 * (beta * inter + gamma * intra)`` (a scalar).

    ``inter`` is ``1 - rho`` per row, weighted by ``weight`` and reduced over
    the valid rows with ``reduction`` (``'mean'`` or ``'sum'``) and
    ``avg_factor``; ``intra = 1 - mean_j rho_j`` over the classes. No valid row
    gives an exact 0 connected to the graph. Other arguments as in
    :func:`dist_correlations`.
    """
    if reduction not in ('mean', 'sum'):
        raise ValueError(f"DIST supports reduction 'mean' or 'sum', got {reduction!r}.")
    rho_rows, rho_cls, count = dist_correlations(preds_S, preds_T, tau, use_sigmoid, valid, eps,
                                                 gather_intra)
    inter = reduce_rows(1 - rho_rows, valid, weight, reduction, avg_factor)
    # no valid row: exact 0 (a single valid row gives intra = 1 exactly)
    intra = torch.where(count[0] > 0, 1 - rho_cls.mean(), rho_cls.new_zeros(()))
    return (beta * inter + gamma * intra) * (tau * tau)


@MODELS.register_module()
class DISTLoss(BaseDistillLoss):
    """DIST loss: inter- and intra-class relations of the predictions.

    Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS
    2022. ``tau^2 * (beta * inter + gamma * intra)`` with
    ``inter = 1 - mean_i rho(Y_s[i, :], Y_t[i, :])`` over the valid rows and
    ``intra = 1 - mean_j rho(Y_s[:, j], Y_t[:, j])`` over the classes, each
    correlation taken across all valid rows of the batch (for dense logits,
    all pixels of all images jointly); see :func:`dist_correlations`.
    Recipes: ImageNet, COCO and Cityscapes use the defaults (the official
    ImageNet recipe weights the loss by 2); CIFAR uses ``tau=4``.

    The intra term relates rows, so the loss is not a sum of per-row values:
    ``reduction='none'`` is refused. ``'mean'`` and ``'sum'`` (and
    ``avg_factor``) apply to the inter term; per-row ``weight`` multiplies the
    inter term of each row, and a zero weight (like ``ignore_index``) also
    removes the row from the intra term. One valid row gives ``intra = 1``
    exactly, with no gradient; identical inputs give about ``1e-6`` (the eps).

    Args:
        beta (float): Weight of the inter-class term. Defaults to 1.0.
        gamma (float): Weight of the intra-class term. Defaults to 1.0.
        tau (float): Temperature. Defaults to 1.0.
        temperature (float, optional): Alias of ``tau``. Defaults to None.
        use_sigmoid (bool): Elementwise sigmoid instead of softmax, for sigmoid
            heads. Defaults to False.
        gather_intra (bool): With ``torch.distributed`` initialised, compute the
            intra term over the global batch (statistics all-reduced, gradients
            of the local rows as if the batch were gathered), so the loss does
            not depend on how the batch is split across GPUs. Every rank must
            then call the loss (and backward) the same number of times.
            Defaults to False.
        eps (float): Added to the product of norms in the correlation.
            Defaults to 1e-8.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        reduction (str): ``'mean'`` or ``'sum'``. Defaults to ``'mean'``.
        ignore_index (int | None): Rows whose target equals it are excluded.
            Defaults to 255.
    """

    inputs = ('logits', )
    requires_target = False
    sigmoid_capable = True
    row_wise = False
    not_row_wise_reason = ('its intra-class term relates all rows of the batch, so there are no '
                           'per-row values')

    def __init__(self,
                 beta: float = 1.0,
                 gamma: float = 1.0,
                 tau: float = Default(1.0),
                 use_sigmoid: bool = False,
                 gather_intra: bool = False,
                 eps: float = 1e-8,
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 ignore_index: Optional[int] = 255,
                 *,
                 temperature: Optional[float] = None) -> None:
        super().__init__(loss_weight, reduction, ignore_index)
        self.beta = check_non_negative('beta', beta)
        self.gamma = check_non_negative('gamma', gamma)
        self.tau = resolve_alias('tau', tau, 'temperature', temperature)
        self.use_sigmoid = use_sigmoid
        self.gather_intra = gather_intra
        self.eps = eps

    def reduce(self, s: Tensor, t: Tensor, target: Optional[Tensor], valid: Optional[Tensor],
               weight: Optional[Tensor], reduction: str,
               avg_factor: Optional[Union[float, Tensor]]) -> Tensor:
        return dist_loss(s, t, self.beta, self.gamma, self.tau, self.use_sigmoid, valid, weight,
                         reduction, avg_factor, self.eps, self.gather_intra)
