"""What the dense-head distiller runs of an mmdet dense head: its classification branch alone.

mmdet's dense heads compute a classification and a box branch per FPN level.
When no distillation loss reads the teacher's boxes, the teacher needs only
its class scores, so :func:`class_scores` runs the classification convs and
the final classifier of the heads whose ``forward`` it knows, and the whole
``forward`` of any other head (correct, just not cheaper).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

from torch import Tensor, nn


def _shared(cls_layer: str) -> Callable[[nn.Module, Tensor, int], Tensor]:
    """The branch of heads with one ``cls_convs`` stack and classifier for every level."""

    def branch(head: nn.Module, x: Tensor, level: int) -> Tensor:
        for conv in head.cls_convs:
            x = conv(x)
        return getattr(head, cls_layer)(x)
    return branch


def _per_level(head: nn.Module, x: Tensor, level: int) -> Tensor:
    """RTMDet's separated-BN head: ``cls_convs`` and ``rtm_cls`` indexed by level."""
    for conv in head.cls_convs[level]:
        x = conv(x)
    return head.rtm_cls[level](x)


def known_branches() -> list:
    """``(head class, its classification branch)`` for the heads whose forward is known.

    A head's branch applies only when its class runs exactly that class's
    ``forward`` and ``forward_single`` (a subclass that changes them gets
    the whole forward).
    """
    from mmdet.models.dense_heads import (
        ATSSHead,
        FCOSHead,
        GFLHead,
        RetinaHead,
        RTMDetHead,
        RTMDetSepBNHead,
    )
    return [(RTMDetSepBNHead, _per_level), (RTMDetHead, _shared('rtm_cls')),
            (GFLHead, _shared('gfl_cls')), (ATSSHead, _shared('atss_cls')),
            (FCOSHead, _shared('conv_cls')), (RetinaHead, _shared('retina_cls'))]


def class_branch(head: nn.Module) -> Optional[Callable[[nn.Module, Tensor, int], Tensor]]:
    """The classification branch of ``head``, or None if it must run its whole forward.

    RTMDet heads with ``with_objectness`` multiply the class scores by an
    objectness computed from the box branch: they run the whole forward.
    """
    if getattr(head, 'with_objectness', False):
        return None
    for cls, branch in known_branches():
        if type(head).forward is cls.forward and \
                getattr(type(head), 'forward_single', None) is getattr(cls, 'forward_single', None):
            return branch
    return None


def class_scores(head: nn.Module, feats: Sequence[Tensor]) -> List[Tensor]:
    """``head(feats)[0]`` (the class scores of every level), computing only what they need."""
    branch = class_branch(head)
    if branch is None:
        return list(head(feats)[0])
    return [branch(head, x, level) for level, x in enumerate(feats)]
