"""Logit distillation for two-stage detectors (Faster / Mask R-CNN, mmdet 3.x)."""
from __future__ import annotations

import copy
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from mmkd.registry import MODELS

from ..losses.sdd_loss import SDDLoss
from .base import BaseDistiller, ModelCfg
from .sdd_roi import double_res_extractor, roi_view_logits

#: Loss keys of the student (``loss_<name>`` must not shadow them).
STUDENT_KEYS = ('loss_cls', 'loss_bbox', 'loss_mask', 'loss_rpn_cls', 'loss_rpn_bbox')


@MODELS.register_module()
class TwoStageDistiller(BaseDistiller):
    """Distils the RoI class logits of a two-stage detector.

    The student runs what mmdet's ``TwoStageDetector.loss`` and
    ``StandardRoIHead.loss`` run (RPN ``loss_and_predict``, RoI assignment and
    sampling, box and mask losses): its loss keys and values are unchanged.
    Under ``torch.no_grad()`` the teacher runs ``extract_feat``, then its RoI
    extractor and box head on the student's sampled RoIs; never its RPN or
    its losses. Each loss of ``distill_losses`` compares the ``(R, C+1)``
    logits of both, with the RoI labels (background ``= C``) as targets, as
    the official DKD detection code (Zhao et al., CVPR 2022). ``SDDLoss``
    compares five views of every RoI through each box head instead (see
    :mod:`mmkd.models.distillers.sdd_roi`; the loss's ``scales`` are unused).

    Args:
        student (dict): A ``TwoStageDetector`` config with a ``StandardRoIHead``.
        teacher (dict | str): The same, or a config path / ``'mmdet::...'``.
        teacher_ckpt (str, optional): Teacher checkpoint. Defaults to None.
        distill_losses (dict): ``name -> loss config`` on the RoI class
            logits. Defaults to None.
        mask_distill_losses (dict, optional): ``name -> loss config`` on the
            mask logits of the positive RoIs, ground-truth class channel, as
            ``(P, 1, h, w)`` sigmoid maps (``KDLoss`` / ``DISTLoss`` with
            ``use_sigmoid=True``). Mask R-CNN. Defaults to None (off).
        data_preprocessor (dict, optional): See :class:`BaseDistiller`.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 student: ModelCfg,
                 teacher: ModelCfg,
                 teacher_ckpt: Optional[str] = None,
                 distill_losses: Optional[Dict[str, dict]] = None,
                 mask_distill_losses: Optional[Dict[str, dict]] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        logit_losses, mask_losses = dict(distill_losses or {}), dict(mask_distill_losses or {})
        if set(logit_losses) & set(mask_losses):
            raise ValueError(f'TwoStageDistiller: loss names {set(logit_losses) & set(mask_losses)}'
                             ' are in both distill_losses and mask_distill_losses')
        super().__init__(student, teacher, teacher_ckpt, {**logit_losses, **mask_losses},
                         data_preprocessor, init_cfg)
        #: ``name -> 'logits' | 'sdd' | 'mask'``: what each distillation loss compares.
        self.loss_kinds = {name: 'mask' if name in mask_losses else 'sdd' if isinstance(
            loss, SDDLoss) else 'logits' for name, loss in self.distill_losses.items()}
        self.check_losses()
        self.sdd_extractors = nn.ModuleDict()  # RoIAlign only: no weights
        if 'sdd' in self.loss_kinds.values():
            for role in ('student', 'teacher'):
                self.sdd_extractors[role] = double_res_extractor(getattr(self, role).roi_head)

    def check_compatibility(self) -> None:
        from mmdet.models.detectors import TwoStageDetector
        from mmdet.models.roi_heads import StandardRoIHead
        for role, model in (('student', self.student), ('teacher', self.teacher)):
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
        n_s, n_t = (m.roi_head.bbox_head.num_classes for m in (self.student, self.teacher))
        if n_s != n_t:
            raise ValueError(f'TwoStageDistiller: the student has {n_s} classes and the teacher '
                             f'{n_t}; they must be the same')

    def check_losses(self) -> None:
        """Loss names, ``ignore_index`` against the RoI labels, mask losses."""
        num_classes = self.student.roi_head.bbox_head.num_classes
        for name, loss in self.distill_losses.items():
            kind, ignore = type(loss).__name__, getattr(loss, 'ignore_index', None)
            if f'loss_{name}' in STUDENT_KEYS:
                raise ValueError(f'TwoStageDistiller: a distillation loss named {name!r} would '
                                 f'overwrite the student\'s "loss_{name}"')
            if self.loss_kinds[name] == 'mask':
                if not (self.student.roi_head.with_mask and self.teacher.roi_head.with_mask):
                    raise TypeError('TwoStageDistiller: mask_distill_losses need a mask head in '
                                    'the student and in the teacher (Mask R-CNN)')
                if not getattr(loss, 'use_sigmoid', False):
                    raise ValueError(f'TwoStageDistiller: mask loss {name!r} ({kind}) must be '
                                     'KDLoss / DISTLoss with use_sigmoid=True')
            elif ignore is not None and 0 <= ignore <= num_classes:
                raise ValueError(f'TwoStageDistiller: {kind} {name!r} has ignore_index={ignore}, '
                                 f'a RoI label of these {num_classes}+1 classes: set it to None')

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        """Student losses (as ``student.loss``) plus ``loss_<name>`` terms."""
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
        bbox_results = roi_head._bbox_forward(x, rois)
        bbox_loss_and_target = roi_head.bbox_head.loss_and_target(
            bbox_results['cls_score'], bbox_results['bbox_pred'], rois, sampling_results,
            roi_head.train_cfg)
        losses.update(bbox_loss_and_target['loss_bbox'])
        labels = bbox_loss_and_target['bbox_targets'][0]  # (R,); background = num_classes
        if roi_head.with_mask:
            mask_results = roi_head.mask_loss(x, sampling_results, bbox_results['bbox_feats'],
                                              gt_instances)
            losses.update(mask_results['loss_mask'])

        # The student's side of the SDD views and mask losses, then the teacher: its
        # features, its RoI head on exactly the student's RoIs (and positive RoIs).
        teacher, kinds = self.teacher, self.loss_kinds
        if 'mask' in kinds.values():
            pos_labels = torch.cat([res.pos_gt_labels for res in sampling_results])
            pos_rois = bbox2roi([res.pos_priors for res in sampling_results])
            mask_s = label_channel(mask_results['mask_preds'], pos_labels, roi_head.mask_head)
        if 'sdd' in kinds.values():
            views_s = roi_view_logits(self.sdd_extractors['student'], roi_head.bbox_head, x, rois)
        with torch.no_grad():
            x_t = teacher.extract_feat(self.teacher_inputs(inputs))
            if 'logits' in kinds.values():
                cls_t = teacher.roi_head._bbox_forward(x_t, rois)['cls_score']
            if 'sdd' in kinds.values():
                views_t = roi_view_logits(self.sdd_extractors['teacher'],
                                          teacher.roi_head.bbox_head, x_t, rois)
            if 'mask' in kinds.values():
                mask_t = label_channel(teacher.roi_head._mask_forward(x_t, pos_rois)['mask_preds'],
                                       pos_labels, teacher.roi_head.mask_head)
        for name, kind in kinds.items():
            if kind == 'logits':
                losses[f'loss_{name}'] = self.distill_loss(name, bbox_results['cls_score'], cls_t,
                                                           labels)
            elif kind == 'sdd':
                losses[f'loss_{name}'] = self.distill_loss_scale * self.distill_losses[
                    name].loss_on_views(views_s, views_t, labels)
            else:
                losses[f'loss_{name}'] = self.distill_loss(name, mask_s, mask_t)
        return losses


def label_channel(mask_preds: Tensor, labels: Tensor, mask_head: nn.Module) -> Tensor:
    """The ground-truth class channel of ``(P, C, h, w)`` mask logits: ``(P, 1, h, w)``."""
    channel = torch.zeros_like(labels) if mask_head.class_agnostic else labels
    return mask_preds[torch.arange(len(labels), device=labels.device), channel][:, None]


__all__: List[str] = ['TwoStageDistiller', 'label_channel']
