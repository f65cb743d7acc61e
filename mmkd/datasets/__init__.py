"""The synthetic shapes datasets (in the COCO, mmseg and image-folder formats) and the
config overrides that train mmdet / mmseg / mmpretrain configs on them."""
from .synthetic import (
                        FINE_CLASSES,
                        SEG_CLASSES,
                        SEG_PALETTE,
                        SHAPE_CLASSES,
                        make_cls,
                        make_cls_fine,
                        make_det,
                        make_seg,
)
from .synthetic_configs import cls_overrides, det_overrides, seg_overrides

__all__ = ['SHAPE_CLASSES', 'SEG_CLASSES', 'SEG_PALETTE', 'FINE_CLASSES', 'make_det', 'make_seg',
           'make_cls', 'make_cls_fine', 'det_overrides', 'seg_overrides', 'cls_overrides']
