"""Logit distillation for two-stage detectors (Faster / Mask R-CNN, mmdet 3.x)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple

import torch
from torch import Tensor, nn

from mmkd.registry import MODELS
from mmkd.utils.compat import roi_bbox_forward, roi_mask_forward

from .base import ModelCfg, loss_module_keys
from .sdd_roi import double_res_extractor, roi_view_logits
from .teacher_student import TeacherStudentDistiller


@dataclass
class StudentPass:
    """What the student's training pass gives the distillation losses."""

    #: FPN features.
    x: Tuple[Tensor, ...]
    #: The sampled RoIs ``(R, 5)`` and their labels ``(R,)`` (background ``= C``).
    rois: Tensor
    labels: Tensor
    #: The student's RoI class logits ``(R, C+1)``.
    cls_score: Tensor
    #: mmdet's sampling results (positive RoIs and their labels).
    sampling_results: list
    #: The student's own losses, keys and values as ``TwoStageDetector.loss``.
    losses: Dict[str, Tensor]
    #: Mask logits of the positive RoIs ``(P, C, h, w)`` (Mask R-CNN), else None.
    mask_preds: Optional[Tensor] = None


@MODELS.register_module()
class TwoStageDistiller(TeacherStudentDistiller):
    """Distils the RoI class logits of a two-stage detector.

    The student runs what mmdet's ``TwoStageDetector.loss`` and
    ``StandardRoIHead.loss`` run (RPN ``loss_and_predict``, RoI assignment and
    sampling, box and mask losses): its loss keys and values are unchanged.
    Under ``torch.no_grad()`` the teacher runs ``extract_feat``, then its RoI
    extractor and box head on the student's sampled RoIs; never its RPN or
    its losses. Losses that consume ``'logits'`` compare the ``(R, C+1)``
    logits of both, with the RoI labels (background ``= C``) as targets, as
    the official DKD detection code (Zhao et al., CVPR 2022). Losses that
    consume ``'views'`` (``SDDLoss``) compare five views of every RoI through
    each box head instead (see :mod:`mmkd.models.distillers.sdd_roi`).

    Args:
        student (dict): A ``TwoStageDetector`` config with a ``StandardRoIHead``.
        teacher (dict | str): The same, or a config path / ``'mmdet::...'``.
        teacher_ckpt (str, optional): Teacher checkpoint. Defaults to None.
        distill_losses (dict, optional): ``name -> loss config`` on the RoI
            class logits (or views). Defaults to None.
        mask_distill_losses (dict, optional): ``name -> loss config`` on the
            mask logits of the positive RoIs, ground-truth class channel, as
            ``(P, 1, h, w)`` sigmoid maps: sigmoid-capable losses with
            ``use_sigmoid=True`` (``KDLoss``, ``DISTLoss``). Mask R-CNN.
            Defaults to None (off).
        data_preprocessor (dict, optional): See :class:`TeacherStudentDistiller`.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
        **kwargs: ``teachers``, ``teacher_dtype``: see
            :class:`TeacherStudentDistiller` (several teachers run their RoI
            heads on the same student RoIs; the losses get the weighted mean
            of their logits, views and mask logits).
    """

    accepted_inputs = ('logits', 'views')

    def __init__(self,
                 student: ModelCfg,
                 teacher: Optional[ModelCfg] = None,
                 teacher_ckpt: Optional[str] = None,
                 distill_losses: Optional[Dict[str, dict]] = None,
                 mask_distill_losses: Optional[Dict[str, dict]] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        logit_losses, mask_losses = dict(distill_losses or {}), dict(mask_distill_losses or {})
        both = sorted(set(logit_losses) & set(mask_losses))
        if both:
            raise ValueError(f'TwoStageDistiller: loss names {both} are in both distill_losses '
                             'and mask_distill_losses')
        super().__init__(student, teacher, teacher_ckpt, {**logit_losses, **mask_losses},
                         data_preprocessor, init_cfg, **kwargs)
        #: Names of the losses on mask logits.
        self.mask_losses = frozenset(mask_losses)
        #: ``role -> RoI extractor at twice the box head's size`` (``student``,
        #: ``teacher``, ``teacher_1``...), for 'views' losses (RoIAlign only: no
        #: weights, so not registered as submodules).
        self.view_extractors: Dict[str, nn.Module] = {}

    def check_models(self) -> None:
        from mmdet.models.detectors import TwoStageDetector
        from mmdet.models.roi_heads import StandardRoIHead
        for role, model in [('student', self.student)] + self.teachers:
            head = getattr(model, 'roi_head', None)
            if not isinstance(model, TwoStageDetector) or not model.with_rpn or \
                    type(model).loss is not TwoStageDetector.loss:
                raise TypeError(f'TwoStageDistiller: the {role} must be an mmdet TwoStageDetector '
                                f'with an RPN (Faster / Mask R-CNN), got {type(model).__name__}')
            if not isinstance(head, StandardRoIHead) or any(
                    getattr(type(head), f) is not getattr(StandardRoIHead, f)
                    for f in ('loss', 'bbox_loss', 'mask_loss', '_bbox_forward')):
                raise TypeError(f'TwoStageDistiller: the {role} RoI head must be a StandardRoIHead '
                                f'(its losses not overridden), got {type(head).__name__}')
            box = head.bbox_head
            if box.custom_cls_channels or getattr(box.loss_cls, 'use_sigmoid', False):
                raise TypeError(f'TwoStageDistiller: the {role} box head must give softmax '
                                f'(C+1)-class logits, {type(box).__name__} does not')
        n_s = self.student.roi_head.bbox_head.num_classes
        for role, teacher in self.teachers:
            n_t = self.distilled_classes(role, teacher.roi_head.bbox_head.num_classes)
            if n_s != n_t:
                raise ValueError(f'TwoStageDistiller: the student has {n_s} classes and the '
                                 f'{role} {n_t}; they must be the same')

    def select_classes(self, output: Dict[str, Tensor], index: Tensor) -> Dict[str, Tensor]:
        """The student's classes of RoI logits / views, background (last) kept; the
        mask logits are already taken at the mapped label channels."""
        out = dict(output)
        for key in ('logits', 'views'):
            if key in out:
                background = index.new_tensor([out[key].shape[1] - 1])
                out[key] = out[key].index_select(1, torch.cat([index, background]))
        return out

    def loss_requirements(self, name: str) -> dict:
        """Mask losses: sigmoid maps of logits, no labels."""
        if name in self.mask_losses:
            return dict(accepted=('logits', ), sigmoid=True, target=False,
                        head='the mask logits of the positive RoIs')
        box_head = type(self.student.roi_head.bbox_head).__name__
        return dict(head=f'the RoI class logits of {box_head}')

    def check_loss(self, name: str, loss: nn.Module) -> None:
        """Mask heads for mask losses, ``ignore_index`` against the RoI labels."""
        roi_s = self.student.roi_head
        if name in self.mask_losses:
            if not (roi_s.with_mask and all(t.roi_head.with_mask for _, t in self.teachers)):
                raise TypeError('TwoStageDistiller: mask_distill_losses need a mask head in '
                                'the student and in the teacher (Mask R-CNN)')
            return
        ignore, num_classes = getattr(loss, 'ignore_index', None), roi_s.bbox_head.num_classes
        if ignore is not None and 0 <= ignore <= num_classes:
            raise ValueError(f'TwoStageDistiller: {type(loss).__name__} {name!r} has '
                             f'ignore_index={ignore}, a RoI label of these {num_classes}+1 '
                             'classes: set it to None')
        if self.input_of[name] == 'views' and not self.view_extractors:
            self.view_extractors = {role: double_res_extractor(model.roi_head)
                                    for role, model in [('student', self.student)] +
                                    self.teachers}

    def num_classes_for(self, name: str) -> Optional[int]:
        """``C + 1`` RoI classes (background included); 1 mask channel."""
        return 1 if name in self.mask_losses else self.student.roi_head.bbox_head.num_classes + 1

    def student_loss_keys(self) -> Set[str]:
        """``loss_rpn_cls``, ``loss_rpn_bbox``, ``loss_cls``, ``loss_bbox`` (``loss_mask``)."""
        roi_head = self.student.roi_head
        keys = loss_module_keys(self.student.rpn_head, 'rpn_') | loss_module_keys(
            roi_head.bbox_head)
        return keys | loss_module_keys(roi_head.mask_head) if roi_head.with_mask else keys

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        """Student losses (as ``student.loss``) plus ``loss_<name>`` terms."""
        from mmdet.structures.bbox import bbox2roi
        s = self.student_pass(inputs, data_samples)
        kinds = {'mask' if n in self.mask_losses else k for n, k in self.input_of.items()}
        if 'mask' in kinds:
            pos_labels = torch.cat([res.pos_gt_labels for res in s.sampling_results])
            pos_rois = bbox2roi([res.pos_priors for res in s.sampling_results])
            mask_s = label_channel(s.mask_preds, pos_labels, self.student.roi_head.mask_head)
        if 'views' in kinds:
            views_s = roi_view_logits(self.view_extractors['student'],
                                      self.student.roi_head.bbox_head, s.x, s.rois)
        # The teachers: features, then the RoI head on exactly the student's RoIs.
        roles = {id(model): role for role, model in self.teachers}

        def teacher_pass(teacher: nn.Module, x: Tensor) -> Dict[str, Tensor]:
            x_t, roi_t, out = teacher.extract_feat(x), teacher.roi_head, {}
            if 'logits' in kinds:
                out['logits'] = roi_bbox_forward(roi_t, x_t, s.rois)['cls_score']
            if 'views' in kinds:
                out['views'] = roi_view_logits(self.view_extractors[roles[id(teacher)]],
                                               roi_t.bbox_head, x_t, s.rois)
            if 'mask' in kinds:
                index = self.class_index(roles[id(teacher)])
                labels = pos_labels if index is None else index[pos_labels]
                out['mask'] = label_channel(roi_mask_forward(roi_t, x_t, pos_rois)['mask_preds'],
                                            labels, roi_t.mask_head)
            return out

        out_t = self.teacher_outputs(teacher_pass, inputs, data_samples)
        distill = {}
        for name, loss in self.distill_losses.items():
            if name in self.mask_losses:
                distill[f'loss_{name}'] = loss(mask_s, out_t['mask'])
            elif self.input_of[name] == 'logits':
                distill[f'loss_{name}'] = loss(s.cls_score, out_t['logits'], s.labels)
            else:
                distill[f'loss_{name}'] = loss.loss_on_views(views_s, out_t['views'], s.labels)
        return self.add_distill_losses(s.losses, distill)

    def student_pass(self, inputs: Tensor, data_samples: list) -> StudentPass:
        """What ``TwoStageDetector.loss`` and ``StandardRoIHead.loss`` run, keeping the RoIs."""
        from mmdet.models.utils import unpack_gt_instances
        from mmdet.structures.bbox import bbox2roi
        student, roi_head = self.student, self.student.roi_head
        x = student.extract_feat(inputs)
        # TwoStageDetector.loss: the RPN, on class-agnostic labels.
        proposal_cfg = student.train_cfg.get('rpn_proposal', student.test_cfg.rpn)
        rpn_data_samples = copy.deepcopy(data_samples)
        for data_sample in rpn_data_samples:
            data_sample.gt_instances.labels = torch.zeros_like(data_sample.gt_instances.labels)
        rpn_losses, rpn_results_list = student.rpn_head.loss_and_predict(
            x, rpn_data_samples, proposal_cfg=proposal_cfg)
        losses = {(f'rpn_{k}' if 'loss' in k and 'rpn' not in k else k): v
                  for k, v in rpn_losses.items()}
        # StandardRoIHead.loss: assign and sample RoIs, then box and mask losses.
        gt_instances, gt_instances_ignore, _ = unpack_gt_instances(data_samples)
        sampling_results = []
        for i, rpn_results in enumerate(rpn_results_list):
            rpn_results.priors = rpn_results.pop('bboxes')
            assign_result = roi_head.bbox_assigner.assign(rpn_results, gt_instances[i],
                                                          gt_instances_ignore[i])
            sampling_results.append(roi_head.bbox_sampler.sample(
                assign_result, rpn_results, gt_instances[i], feats=[lvl[i][None] for lvl in x]))
        rois = bbox2roi([res.priors for res in sampling_results])
        bbox_results = roi_bbox_forward(roi_head, x, rois)
        bbox_loss_and_target = roi_head.bbox_head.loss_and_target(
            bbox_results['cls_score'], bbox_results['bbox_pred'], rois, sampling_results,
            roi_head.train_cfg)
        losses.update(bbox_loss_and_target['loss_bbox'])
        mask_preds = None
        if roi_head.with_mask:
            mask_results = roi_head.mask_loss(x, sampling_results, bbox_results['bbox_feats'],
                                              gt_instances)
            losses.update(mask_results['loss_mask'])
            mask_preds = mask_results['mask_preds']
        return StudentPass(x, rois, bbox_loss_and_target['bbox_targets'][0],
                           bbox_results['cls_score'], sampling_results, losses, mask_preds)


def label_channel(mask_preds: Tensor, labels: Tensor, mask_head: nn.Module) -> Tensor:
    """The ground-truth class channel of ``(P, C, h, w)`` mask logits: ``(P, 1, h, w)``."""
    channel = torch.zeros_like(labels) if mask_head.class_agnostic else labels
    return mask_preds[torch.arange(len(labels), device=labels.device), channel][:, None]


__all__: List[str] = ['TwoStageDistiller', 'label_channel']
