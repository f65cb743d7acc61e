"""Logit and localisation distillation for single-stage detectors with sigmoid heads."""
from __future__ import annotations

from typing import Dict, List, Optional, Set

import torch
from torch import Tensor, nn

from mmkd.registry import MODELS

from .base import loss_module_keys
from .dense_heads import class_scores
from .teacher_student import TeacherStudentDistiller


@MODELS.register_module()
class DenseHeadDistiller(TeacherStudentDistiller):
    """Distils the class scores (and box distributions) of a dense detection head.

    The student runs what mmdet's ``SingleStageDetector.loss`` runs
    (``extract_feat``, ``bbox_head(x)``, ``bbox_head.loss_by_feat``), so its
    own losses are unchanged; the teacher runs ``extract_feat`` and, under
    ``torch.no_grad()``, only the classification branch of its head
    (:func:`~mmkd.models.distillers.dense_heads.class_scores`), or its whole
    head when a loss reads its boxes.

    Class scores (losses that consume ``'logits'``, ``sigmoid_capable``, with
    ``use_sigmoid=True``: ``KDLoss``, ``DISTLoss``): on every FPN level the
    ``(B, A*C, H, W)`` scores are viewed, without a copy, as ``(B*A, C, H, W)``:
    one row of ``C`` sigmoid logits per anchor (or point) and location. Each
    loss is computed per level and the levels are averaged.

    Box distributions (losses that consume ``'box_distributions'``:
    ``LDLoss``; heads that predict GFL's general distribution, ``reg_max``):
    as mmdet's ``LDHead``, on the main positive locations of the student's own
    label assignment (``bbox_head.get_targets``), the ``n + 1`` logits of each
    of the four sides of student and teacher are compared, each side weighted
    by the student's highest class score there (detached); per level the sum
    is divided by ``avg_factor=4`` and the levels are summed.

    Heads with sigmoid classification (``use_sigmoid_cls``), a prior generator
    and mmdet's ``BaseDenseHead.loss`` are accepted: RetinaNet, FCOS, ATSS,
    GFL, RTMDet... No class labels are passed to the losses. Student and
    teacher must have the same classes, anchors per location (and base
    anchors) and strides (and ``reg_max`` for box-distribution losses).

    Args:
        student (dict): A ``SingleStageDetector`` config.
        teacher (dict | str): The same, or a config path / ``'mmdet::...'``.
        teacher_ckpt (str, optional): Teacher checkpoint. Defaults to None.
        distill_losses (dict): ``name -> loss config``. Defaults to None.
        data_preprocessor (dict, optional): See :class:`TeacherStudentDistiller`.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
        teachers, teacher_dtype, student_classes, teacher_classes: See
            :class:`TeacherStudentDistiller` (several teachers: the weighted
            mean of their class scores and box logits).
    """

    accepted_inputs = ('logits', 'box_distributions')
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
                                'BaseDenseHead.loss (RetinaNet, FCOS, ATSS, GFL, RTMDet)')
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

    @property
    def reads_boxes(self) -> bool:
        """Whether a loss reads the teacher's box branch (then it runs the whole head)."""
        return 'box_distributions' in self.input_of.values()

    def loss_requirements(self, name: str) -> dict:
        head = type(self.student.bbox_head).__name__
        if 'box_distributions' not in self.distill_losses[name].inputs:
            return dict(accepted=('logits', ), head=f'the sigmoid head {head}')
        if not _predicts_distributions(self.student.bbox_head):
            return dict(accepted=('logits', ), head=f'the sigmoid head {head} (its boxes are no '
                        'box-side distributions: those need a GFL-style head with reg_max)')
        return dict(accepted=('box_distributions', ), sigmoid=False,
                    head=f'the box-side distributions of {head}')

    def check_loss(self, name: str, loss: nn.Module) -> None:
        if self.input_of[name] != 'box_distributions':
            return
        s = self.student.bbox_head
        if s.num_base_priors != 1:
            raise ValueError(f'DenseHeadDistiller: distill_losses.{name}: box distributions need '
                             f'one prior per location, {type(s).__name__} has '
                             f'{s.num_base_priors}')
        for role, teacher in self.teachers:
            t = teacher.bbox_head
            if not _predicts_distributions(t) or t.reg_max != s.reg_max:
                raise ValueError(f'DenseHeadDistiller: distill_losses.{name}: the {role} head '
                                 f'{type(t).__name__} must predict box-side distributions with '
                                 f'the student\'s reg_max={s.reg_max} (it has '
                                 f'reg_max={getattr(t, "reg_max", None)})')

    def select_classes(self, output: dict, index: Tensor) -> dict:
        """Per level ``(B, A*C_t, H, W)`` -> ``(B, A*C_s, H, W)``: the student's classes
        of every anchor (mmdet's channel order ``a*C + c``); boxes unchanged."""
        num_anchors = self.student.bbox_head.num_base_priors
        scores = []
        for score in output['cls']:
            B, _, H, W = score.shape
            score = score.view(B, num_anchors, -1, H, W).index_select(2, index)
            scores.append(score.reshape(B, -1, H, W))
        return dict(output, cls=scores)

    def num_classes_for(self, name: str) -> Optional[int]:
        return self.student.bbox_head.cls_out_channels

    def student_loss_keys(self) -> Set[str]:
        """The head's ``loss_<x>`` modules: ``loss_cls``, ``loss_bbox``, ``loss_centerness``..."""
        return loss_module_keys(self.student.bbox_head)

    def teacher_head(self, teacher: nn.Module, inputs: Tensor) -> Dict[str, List[Tensor]]:
        """A teacher's class scores per level (``'cls'``), and its box logits (``'box'``)
        if a loss reads them."""
        feats = teacher.extract_feat(inputs)
        if not self.reads_boxes:
            return dict(cls=class_scores(teacher.bbox_head, feats))
        cls, box = teacher.bbox_head(feats)[:2]
        return dict(cls=list(cls), box=list(box))

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        """Student losses (as ``student.loss``) plus ``loss_<name>`` terms."""
        from mmdet.models.utils import unpack_gt_instances
        head = self.student.bbox_head
        outs = head(self.student.extract_feat(inputs))
        gt_instances, gt_instances_ignore, img_metas = unpack_gt_instances(data_samples)
        losses = head.loss_by_feat(*outs, gt_instances, img_metas, gt_instances_ignore)
        teacher = self.teacher_outputs(self.teacher_head, inputs, data_samples)
        positives = None
        distill = {}
        for name, loss in self.distill_losses.items():
            if self.input_of[name] == 'box_distributions':
                if positives is None:
                    positives = self.main_positives(outs[0], gt_instances, img_metas,
                                                    gt_instances_ignore)
                distill[f'loss_{name}'] = self.box_loss(loss, outs[0], outs[1], teacher['box'],
                                                        positives)
                continue
            per_level = [loss(self.rows(s), self.rows(t)) for s, t in zip(outs[0], teacher['cls'])]
            distill[f'loss_{name}'] = sum(per_level) / len(per_level)
        return self.add_distill_losses(losses, distill)

    def rows(self, cls_score: Tensor) -> Tensor:
        """``(B, A*C, H, W)`` -> ``(B*A, C, H, W)``, a view (mmdet's channel order a*C + c)."""
        B, _, H, W = cls_score.shape
        return cls_score.view(B * self.student.bbox_head.num_base_priors,
                              self.student.bbox_head.cls_out_channels, H, W)

    def main_positives(self, cls_scores: List[Tensor], gt_instances: list, img_metas: list,
                       gt_instances_ignore: list) -> List[Tensor]:
        """Per level, the flat ``(B*H*W,)`` mask of the locations that the student's own
        assigner makes positive (a foreground label), as mmdet's ``LDHead`` selects them."""
        head = self.student.bbox_head
        with torch.no_grad():
            sizes = [score.shape[-2:] for score in cls_scores]
            anchors, valid = head.get_anchors(sizes, img_metas, device=cls_scores[0].device)
            labels = head.get_targets(anchors, valid, gt_instances, img_metas,
                                      batch_gt_instances_ignore=gt_instances_ignore)[1]
        return [((lab >= 0) & (lab < head.num_classes)).reshape(-1) for lab in labels]

    def box_loss(self, loss: nn.Module, cls_scores: List[Tensor], box_s: List[Tensor],
                 box_t: List[Tensor], positives: List[Tensor]) -> Tensor:
        """``loss`` on the side distributions of the positive locations, levels summed."""
        bins = self.student.bbox_head.reg_max + 1
        total = box_s[0].new_zeros(())
        for score, s, t, pos in zip(cls_scores, box_s, box_t, positives):
            if not pos.any():
                total = total + s.sum() * 0
                continue
            weight = score.detach().permute(0, 2, 3, 1).reshape(-1, score.shape[1])[pos]
            weight = weight.sigmoid().max(dim=1)[0][:, None].expand(-1, 4).reshape(-1)
            s = s.permute(0, 2, 3, 1).reshape(-1, 4 * bins)[pos].reshape(-1, bins)
            t = t.permute(0, 2, 3, 1).reshape(-1, 4 * bins)[pos].reshape(-1, bins)
            total = total + loss(s, t, weight=weight, avg_factor=4.0)
        return total


def _predicts_distributions(head: nn.Module) -> bool:
    """Whether a head's boxes are GFL's general distributions (``reg_max`` + an integral)."""
    return hasattr(head, 'reg_max') and hasattr(head, 'integral')


def _base_anchors(head) -> List[List[float]]:
    """The head's base anchors per level (points: empty)."""
    return [a.tolist() for a in getattr(head.prior_generator, 'base_anchors', [])]


__all__: List[str] = ['DenseHeadDistiller']
