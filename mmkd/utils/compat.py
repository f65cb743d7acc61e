"""Every use mmkd makes of another package's protected (underscore) API, in one place.

The distillers call the task models' public methods wherever these exist. A
few things have no public API in the OpenMMLab stack; each is wrapped here
with the versions it was checked against, and
``tests/test_utils/test_compat.py`` fails loudly (naming the entry) when the
pinned stack (``tools/constraints.txt``) changes one of them. When you bump a
version, re-read the wrapped code and update :data:`CHECKED_VERSIONS`.

Task packages are imported inside the functions, so importing this module
needs neither mmdet, mmseg nor mmpretrain.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from torch import Tensor, nn

#: The versions every entry below was read and tested against.
CHECKED_VERSIONS: Dict[str, str] = {
    'mmengine': '0.10.7',
    'mmdet': '3.3.0',
    'mmsegmentation': '1.2.2',
    'mmpretrain': '1.2.0',
}


def roi_bbox_forward(roi_head: nn.Module, x: Tuple[Tensor, ...], rois: Tensor) -> Dict[str, Tensor]:
    """The box branch of a ``StandardRoIHead`` on given RoIs.

    mmdet's protected ``StandardRoIHead._bbox_forward(x, rois)`` (mmdet 3.0-3.3.0):
    RoI extraction (and the shared head, if any) then the box head; returns
    ``dict(cls_score=(R, C+1), bbox_pred=(R, 4 or 4C), bbox_feats=(R, D, k, k))``.
    mmdet's own ``StandardRoIHead.bbox_loss`` calls it; there is no public
    method that runs the box head on arbitrary RoIs without computing losses.
    """
    return roi_head._bbox_forward(x, rois)


def roi_mask_forward(roi_head: nn.Module, x: Tuple[Tensor, ...], rois: Tensor) -> Dict[str, Tensor]:
    """The mask branch of a ``StandardRoIHead`` on given (positive) RoIs.

    mmdet's protected ``StandardRoIHead._mask_forward(x, rois)`` (mmdet 3.0-3.3.0);
    returns ``dict(mask_preds=(P, C, h, w), mask_feats=...)``.
    """
    return roi_head._mask_forward(x, rois)


def cls_head_loss(head: nn.Module, cls_score: Tensor, data_samples: List[Any]) -> Dict[str, Tensor]:
    """An mmpretrain classification head's loss on logits it has already computed.

    mmpretrain's protected ``ClsHead._get_loss(cls_score, data_samples)``
    (mmpretrain 1.0-1.2.0; ``LinearClsHead`` and the other ``ClsHead``
    subclasses inherit it). The public ``head.loss(feats, data_samples)`` would
    run the head forward a second time; the distillers need the logits too.
    Returns the head's loss dict (``loss``, plus ``accuracy_top-*`` with
    ``cal_acc=True``).
    """
    return head._get_loss(cls_score, data_samples)


#: Attributes that say whether a data preprocessor swaps BGR and RGB:
#: mmengine's ``ImgDataPreprocessor`` (and mmdet's ``DetDataPreprocessor``)
#: ``_channel_conversion``; mmseg's ``SegDataPreProcessor`` ``channel_conversion``;
#: mmpretrain's ``ClsDataPreprocessor`` ``to_rgb``.
_CHANNEL_FLAGS = ('_channel_conversion', 'channel_conversion', 'to_rgb')


def image_normalisation(preprocessor: nn.Module) -> Tuple[Optional[Tensor], Optional[Tensor], bool]:
    """How a data preprocessor normalises images: ``(mean, std, swaps BGR/RGB)``.

    ``mean`` and ``std`` are its ``(3, 1, 1)`` buffers, or None when it does
    not normalise. The "does it normalise" flag is protected in every task
    package: ``_enable_normalize`` of mmengine's ``ImgDataPreprocessor``
    (mmengine 0.10.7; mmdet's ``DetDataPreprocessor``), mmseg's
    ``SegDataPreProcessor`` (1.2.2) and mmpretrain's ``ClsDataPreprocessor``
    (1.2.0). The channel flags are listed in :data:`_CHANNEL_FLAGS`.
    """
    normalises = bool(getattr(preprocessor, '_enable_normalize', False))
    mean = getattr(preprocessor, 'mean', None) if normalises else None
    std = getattr(preprocessor, 'std', None) if normalises else None
    swaps = any(bool(getattr(preprocessor, flag, False)) for flag in _CHANNEL_FLAGS)
    return mean, std, swaps


__all__ = ['CHECKED_VERSIONS', 'roi_bbox_forward', 'roi_mask_forward', 'cls_head_loss',
           'image_normalisation']
