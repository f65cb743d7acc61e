from .base import (
                   BaseDistiller,
                   build_distill_losses,
                   build_model_from_cfg,
                   load_teacher_checkpoint,
                   with_preprocessor,
)

__all__ = [
    'BaseDistiller', 'build_model_from_cfg', 'load_teacher_checkpoint', 'build_distill_losses',
    'with_preprocessor'
]
from .cls_distiller import ClsDistiller  # noqa: E402,F401
from .dense_distiller import DenseHeadDistiller  # noqa: E402,F401
from .lightskd import LightSKD  # noqa: E402,F401
from .seg_distiller import SegDistiller  # noqa: E402,F401
from .two_stage_distiller import TwoStageDistiller  # noqa: E402,F401
