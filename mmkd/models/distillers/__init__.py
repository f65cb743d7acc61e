"""Distillers: MMEngine models that own a student (and a teacher) and their losses.

Two bases: :class:`StudentDistiller` (a student plus distillation losses;
:class:`LightSKD`) and :class:`TeacherStudentDistiller` on top of it (a frozen
teacher; every task distiller).
"""
from .base import (
    StudentDistiller,
    build_distill_losses,
    build_model_from_cfg,
    loss_module_keys,
    with_preprocessor,
)
from .cls_distiller import ClsDistiller
from .dense_distiller import DenseHeadDistiller
from .lightskd import LightSKD
from .seg_distiller import SegDistiller
from .teacher_student import Renormalise, TeacherStudentDistiller, load_teacher_checkpoint
from .two_stage_distiller import StudentPass, TwoStageDistiller

__all__ = [
    'StudentDistiller', 'TeacherStudentDistiller', 'ClsDistiller', 'LightSKD',
    'TwoStageDistiller', 'DenseHeadDistiller', 'SegDistiller', 'StudentPass', 'Renormalise',
    'build_model_from_cfg', 'build_distill_losses', 'with_preprocessor', 'loss_module_keys',
    'load_teacher_checkpoint'
]
