"""Logit distillation for single-stage detectors with sigmoid heads (mmdet 3.x)."""
from __future__ import annotations

from typing import Dict, List, Optional, Set

from torch import Tensor

from mmkd.registry import MODELS

from .base import loss_module_keys
from .teacher_student import TeacherStudentDistiller


@MODELS.register_module()
class DenseHeadDistiller(TeacherStudentDistiller):
    """Distils the class scores of a dense (single-stage) detection head.

    The student runs what mmdet's ``SingleStageDetector.loss`` runs
    (``extract_feat``, ``bbox_head(x)``, ``bbox_head.loss_by_feat``), so its
    own losses are unchanged; the teacher runs ``extract_feat`` and its
    ``bbox_head`` under ``torch.no_grad()`` and only its class scores are used.
    On every FPN level the ``(B, A*C, H, W)`` scores are viewed, without a
    copy, as ``(B*A, C, H, W)``: one row of ``C`` sigmoid logits per anchor
    (or point) and location. Each loss is computed per level and the levels
    are averaged (every level weighs the same).

    Heads with sigmoid classification (``use_sigmoid_cls``) and mmdet's
    ``BaseDenseHead.loss`` are accepted: RetinaNet, FCOS, ATSS, GFL... Only
    losses that consume ``'logits'``, declare ``sigmoid_capable`` and run with
    ``use_sigmoid=True`` are (``KDLoss``, ``DISTLoss``): no class labels are
    passed. Student and teacher must have the same classes, anchors per
    location (and base anchors) and strides.

    Args:
        student (dict): A ``SingleStageDetector`` config.
        teacher (dict | str): The same, or a config path / ``'mmdet::...'``.
        teacher_ckpt (str, optional): Teacher checkpoint. Defaults to None.
        distill_losses (dict): ``name -> loss config``. Defaults to None.
        data_preprocessor (dict, optional): See :class:`TeacherStudentDistiller`.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
        teachers, teacher_dtype: See :class:`TeacherStudentDistiller` (several
            teachers: the weighted mean of their class scores).
    """

    sigmoid_classes = True
    gives_target = False

    def check_models(self) -> None:
        from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
        from mmdet.models.detectors import SingleStageDetector
        for role, model in [('student', self.student)] + self.teachers:
            head = getattr(model, 'bbox_head', None)
            if not isinstance(model, SingleStageDetector) or \
                    type(model).loss is not SingleStageDetector.loss:
                raise TypeError(f'DenseHeadDistiller: the {role} must be an mmdet '
                                f'SingleStageDetector, got {type(model).__name__}')
            if not isinstance(head, BaseDenseHead) or type(head).loss is not BaseDenseHead.loss \
                    or not getattr(head, 'use_sigmoid_cls', False) or \
                    not hasattr(head, 'prior_generator'):
                raise TypeError(f'DenseHeadDistiller: the {role} head {type(head).__name__} is '
                                'not supported: it needs sigmoid classification '
                                '(use_sigmoid_cls), a prior generator and mmdet\'s '
                                'BaseDenseHead.loss (RetinaNet, FCOS, ATSS, GFL)')
        s = self.student.bbox_head
        for role, teacher in self.teachers:
            t = teacher.bbox_head
            for what, a, b in (
                ('classes', s.cls_out_channels, self.distilled_classes(role, t.cls_out_channels)),
                ('anchors per location (num_base_priors)', s.num_base_priors, t.num_base_priors),
                ('strides', s.prior_generator.strides, t.prior_generator.strides),
                ('base anchors', _base_anchors(s), _base_anchors(t)),
            ):
                if a != b:
                    raise ValueError(f'DenseHeadDistiller: student and {role} differ in {what}: '
                                     f'{a} (student {type(s).__name__}) vs {b} ({role} '
                                     f'{type(t).__name__})')

    def select_classes(self, output: List[Tensor], index: Tensor) -> List[Tensor]:
        """Per level ``(B, A*C_t, H, W)`` -> ``(B, A*C_s, H, W)``: the student's classes
        of every anchor (mmdet's channel order ``a*C + c``)."""
        num_anchors = self.student.bbox_head.num_base_priors
        out = []
        for score in output:
            B, _, H, W = score.shape
            score = score.view(B, num_anchors, -1, H, W).index_select(2, index)
            out.append(score.reshape(B, -1, H, W))
        return out

    def loss_requirements(self, name: str) -> dict:
        return dict(head=f'the sigmoid head {type(self.student.bbox_head).__name__}')

    def num_classes_for(self, name: str) -> Optional[int]:
        return self.student.bbox_head.cls_out_channels

    def student_loss_keys(self) -> Set[str]:
        """The head's ``loss_<x>`` modules: ``loss_cls``, ``loss_bbox``, ``loss_centerness``..."""
        return loss_module_keys(self.student.bbox_head)

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        """Student losses (as ``student.loss``) plus ``loss_<name>`` terms."""
        from mmdet.models.utils import unpack_gt_instances
        head = self.student.bbox_head
        outs = head(self.student.extract_feat(inputs))
        gt_instances, gt_instances_ignore, img_metas = unpack_gt_instances(data_samples)
        losses = head.loss_by_feat(*outs, gt_instances, img_metas, gt_instances_ignore)
        cls_t = self.teacher_outputs(
            lambda teacher, x: list(teacher.bbox_head(teacher.extract_feat(x))[0]),
            inputs, data_samples)
        rows_s = [self.rows(c) for c in outs[0]]
        rows_t = [self.rows(c) for c in cls_t]
        distill = {}
        for name, loss in self.distill_losses.items():
            per_level = [loss(s, t) for s, t in zip(rows_s, rows_t)]
            distill[f'loss_{name}'] = sum(per_level) / len(per_level)
        return self.add_distill_losses(losses, distill)

    def rows(self, cls_score: Tensor) -> Tensor:
        """``(B, A*C, H, W)`` -> ``(B*A, C, H, W)``, a view (mmdet's channel order a*C + c)."""
        B, _, H, W = cls_score.shape
        return cls_score.view(B * self.student.bbox_head.num_base_priors,
                              self.student.bbox_head.cls_out_channels, H, W)


def _base_anchors(head) -> List[List[float]]:
    """The head's base anchors per level (points: empty)."""
    return [a.tolist() for a in getattr(head.prior_generator, 'base_anchors', [])]


__all__: List[str] = ['DenseHeadDistiller']
