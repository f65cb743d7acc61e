from .base import BaseDistiller, build_model_from_cfg, load_teacher_checkpoint

__all__ = ['BaseDistiller', 'build_model_from_cfg', 'load_teacher_checkpoint']
