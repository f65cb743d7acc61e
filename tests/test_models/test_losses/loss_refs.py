"""Reference formulas for the loss tests, written from the spec in plain Python.

Everything here works on Python lists of floats with :mod:`math` (double
precision), row by row, so it shares no code with :mod:`mmkd.models.losses`.
"""
import math
from typing import List, Optional, Sequence

import torch

from mmkd.registry import MODELS

#: Losses with the teacher-student signature forward(preds_S, preds_T, target, ...).
TS_LOSSES = ['KDLoss', 'DISTLoss', 'DKDLoss', 'ReKDLoss', 'RLDLoss', 'DRGLoss']
#: Teacher-student losses that are a sum of per-row terms.
ROW_LOSSES = ['KDLoss', 'DKDLoss', 'ReKDLoss', 'RLDLoss', 'DRGLoss']
#: Losses that need the label.
TARGET_LOSSES = ['DKDLoss', 'RLDLoss']
#: Every registered loss.
ALL_LOSSES = TS_LOSSES + ['SDDLoss', 'DSRLoss']


def build(name: str, **kwargs):
    # ``_scope_`` keeps the lookup in mmkd even if another test left a default scope set
    return MODELS.build(dict(type=name, _scope_='mmkd', **kwargs))


def rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *S) -> (N * prod(S), C)."""
    if x.dim() == 2:
        return x
    return x.movedim(1, -1).reshape(-1, x.shape[1])


# ---------------------------------------------------------------------------
# plain-Python probability helpers
# ---------------------------------------------------------------------------
def softmax(z: Sequence[float], T: float = 1.0, keep: Optional[Sequence[int]] = None) -> dict:
    """{class: probability} of softmax(z / T) over the classes in ``keep``."""
    keep = range(len(z)) if keep is None else keep
    m = max(z[c] / T for c in keep)
    e = {c: math.exp(z[c] / T - m) for c in keep}
    total = sum(e.values())
    return {c: v / total for c, v in e.items()}


def kl(p: dict, q: dict) -> float:
    """KL(p || q) over the keys of p, with 0 log 0 = 0."""
    return sum(pc * (math.log(pc) - math.log(q[c])) for c, pc in p.items() if pc > 0)


def kl_binary(a: float, b: float, a_rest: float = None, b_rest: float = None) -> float:
    """KL([a, 1 - a] || [b, 1 - b]); the masses of the other part may be given
    explicitly (summed, not ``1 - a``, so that huge logits keep them exact)."""
    a_rest = 1 - a if a_rest is None else a_rest
    b_rest = 1 - b if b_rest is None else b_rest
    return kl({0: a, 1: a_rest}, {0: b, 1: b_rest})


def rest(p: dict, exclude) -> float:
    """Probability mass of the classes of ``p`` not in ``exclude``."""
    return sum(v for c, v in p.items() if c not in exclude)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------------------
# per-row losses
# ---------------------------------------------------------------------------
def ref_kd(s: List[float], t: List[float], T: float = 4.0) -> float:
    return T * T * kl(softmax(t, T), softmax(s, T))


def ref_kd_sigmoid(s: List[float], t: List[float], T: float = 4.0) -> float:
    return T * T * sum(kl_binary(sigmoid(tc / T), sigmoid(sc / T)) for sc, tc in zip(s, t))


def ref_dkd(s, t, g, alpha=1.0, beta=8.0, T=4.0) -> float:
    p_s, p_t = softmax(s, T), softmax(t, T)
    tckd = kl_binary(p_t[g], p_s[g], rest(p_t, [g]), rest(p_s, [g]))
    others = [c for c in range(len(s)) if c != g]
    nckd = kl(softmax(t, T, others), softmax(s, T, others)) if others else 0.0
    return T * T * (alpha * tckd + beta * nckd)


def topk(z: Sequence[float], k: int) -> List[int]:
    return sorted(range(len(z)), key=lambda c: -z[c])[:k]


def ref_rekd(s, t, k=5, alpha=1.0, beta=1.0, gamma=0.0, T=4.0, source='teacher') -> float:
    head = topk(t if source == 'teacher' else s, k)
    tail = [c for c in range(len(s)) if c not in head]
    tisd = kl(softmax(t, T, head), softmax(s, T, head))
    ntid = kl(softmax(t, T, tail), softmax(s, T, tail)) if tail else 0.0
    p_s, p_t = softmax(s, T), softmax(t, T)
    mass_s, mass_t = sum(p_s[c] for c in head), sum(p_t[c] for c in head)
    binary = kl_binary(mass_t, mass_s, rest(p_t, head), rest(p_s, head))
    return T * T * (alpha * tisd + beta * ntid + gamma * binary)


def ref_rld(s, t, y, alpha=1.0, beta=8.0, T=4.0, Ta=None) -> float:
    Ta = T if Ta is None else Ta
    p_s, p_t = softmax(s, Ta), softmax(t, Ta)
    top1 = max(range(len(t)), key=lambda c: t[c])
    scd = Ta * Ta * kl_binary(p_t[top1], p_s[y], rest(p_t, [top1]), rest(p_s, [y]))
    keep = [c for c in range(len(s)) if t[c] < t[y]]
    mcd = T * T * kl(softmax(t, T, keep), softmax(s, T, keep)) if keep else 0.0
    return alpha * scd + beta * mcd


def pearson(a: Sequence[float], b: Sequence[float], eps: float = 1e-8) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    ca, cb = [x - ma for x in a], [x - mb for x in b]
    num = sum(x * y for x, y in zip(ca, cb))
    na, nb = math.sqrt(sum(x * x for x in ca)), math.sqrt(sum(y * y for y in cb))
    return num / (na * nb + eps)


def ref_dist(S: List[List[float]], Tt: List[List[float]], beta=1.0, gamma=1.0, tau=1.0,
             sigmoid_=False) -> float:
    """DIST on a list of rows (all valid)."""
    if sigmoid_:
        Ys = [[sigmoid(v / tau) for v in r] for r in S]
        Yt = [[sigmoid(v / tau) for v in r] for r in Tt]
    else:
        Ys = [[p for _, p in sorted(softmax(r, tau).items())] for r in S]
        Yt = [[p for _, p in sorted(softmax(r, tau).items())] for r in Tt]
    inter = 1 - sum(pearson(a, b) for a, b in zip(Ys, Yt)) / len(Ys)
    C = len(Ys[0])
    cols = [pearson([r[j] for r in Ys], [r[j] for r in Yt]) for j in range(C)]
    intra = 1 - sum(cols) / C
    return tau * tau * (beta * inter + gamma * intra)


def per_row(fn, S: torch.Tensor, Tt: torch.Tensor, *args, target=None, **kwargs) -> List[float]:
    """Applies a per-row reference to every row of (M, C) tensors."""
    S, Tt = S.tolist(), Tt.tolist()
    if target is None:
        return [fn(s, t, *args, **kwargs) for s, t in zip(S, Tt)]
    return [fn(s, t, int(y), *args, **kwargs) for s, t, y in zip(S, Tt, target.tolist())]
