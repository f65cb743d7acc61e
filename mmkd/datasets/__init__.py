from .synthetic import SEG_CLASSES, SEG_PALETTE, SHAPE_CLASSES, make_cls, make_det, make_seg

__all__ = ['SHAPE_CLASSES', 'SEG_CLASSES', 'SEG_PALETTE', 'make_det', 'make_seg', 'make_cls']
