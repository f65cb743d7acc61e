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
