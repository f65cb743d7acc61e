"""The synthetic shapes datasets (in the COCO, mmseg and image-folder formats) and the
config overrides that train mmdet / mmseg / mmpretrain configs on them."""
from .synthetic import SEG_CLASSES, SEG_PALETTE, SHAPE_CLASSES, make_cls, make_det, make_seg
from .synthetic_configs import cls_overrides, det_overrides, seg_overrides

__all__ = ['SHAPE_CLASSES', 'SEG_CLASSES', 'SEG_PALETTE', 'make_det', 'make_seg', 'make_cls',
           'det_overrides', 'seg_overrides', 'cls_overrides']
