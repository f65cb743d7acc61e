"""Logit distillation for two-stage detectors (Faster / Mask R-CNN, mmdet 3.x)."""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmkd.registry import MODELS

from ..losses.sdd_loss import SDDLoss, sdd_loss
from ..losses.utils import fp32_compute, prepare_logits, reduce_rows, valid_rows
from .base import BaseDistiller, ModelCfg

#: Loss keys of the student (``loss_<name>`` must not shadow them).
_STUDENT_KEYS = ('loss_cls', 'loss_bbox', 'loss_mask', 'loss_rpn_cls', 'loss_rpn_bbox')


@MODELS.register_module()
class TwoStageDistiller(BaseDistiller):
    """Distils the RoI class logits of a two-stage detector.

    The student runs exactly what mmdet's ``TwoStageDetector.loss`` and
    ``StandardRoIHead.loss`` run (RPN ``loss_and_predict``, assign and sample
    RoIs, box and mask losses), so its own loss keys and values are unchanged.
    The teacher runs ``extract_feat`` and its RoI extractor + box head on the
    student's sampled RoIs, under ``torch.no_grad()``; never its RPN or its
    losses. Each loss of ``distill_losses`` compares the ``(R, C+1)`` student
    and teacher logits with the RoI labels (background ``= C``) as targets,
    as the official DKD detection code does (Zhao et al., CVPR 2022).

    ``SDDLoss`` (Wei et al., CVPR 2024) works on RoI features instead: each
    model extracts its RoI features at twice its box head's resolution
    (``2k x 2k``, RoIAlign with half the sampling ratio, so that view 0 equals
    the ordinary ``k x k`` feature for even ratios); view 0 is their 2x2
    average pooling and views 1-4 the stride-2 subsamples with offsets
    (0,0), (0,1), (1,1), (1,0); every view goes through the model's own box
    head, giving ``(R, C+1, 5)`` logits for the SDD loss. ``scales`` and
    ``pool_base`` of the loss are not used here.

    Args:
        student (dict): A ``TwoStageDetector`` config with a ``StandardRoIHead``.
        teacher (dict | str): The same, or a config path / ``'mmdet::...'``.
        teacher_ckpt (str, optional): Teacher checkpoint. Defaults to None.
        distill_losses (dict): ``name -> loss config`` on the RoI class
            logits. Defaults to None.
        mask_distill_losses (dict, optional): ``name -> loss config`` on the
            mask logits of positive RoIs, ground-truth class channel, as
            ``(P, 1, h, w)`` sigmoid maps (``KDLoss`` / ``DISTLoss`` with
            ``use_sigmoid=True``). Mask R-CNN only. Defaults to None (off).
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
        mask_losses = dict(mask_distill_losses or {})
        clash = set(mask_losses) & set(distill_losses or {})
        if clash:
            raise ValueError(f'TwoStageDistiller: loss names {sorted(clash)} appear in both '
                             'distill_losses and mask_distill_losses')
        super().__init__(student, teacher, teacher_ckpt, {**(distill_losses or {}), **mask_losses},
                         data_preprocessor, init_cfg)
        self.mask_loss_names = tuple(mask_losses)
        self.check_losses()
        self.sdd_extractors = nn.ModuleDict()
        if any(isinstance(m, SDDLoss) for m in self.distill_losses.values()):
            self.sdd_extractors['student'] = _double_res_extractor(self.student.roi_head)
            self.sdd_extractors['teacher'] = _double_res_extractor(self.teacher.roi_head)

    def check_compatibility(self) -> None:
        from mmdet.models.detectors import TwoStageDetector
        from mmdet.models.roi_heads import StandardRoIHead
        for role, model in (('student', self.student), ('teacher', self.teacher)):
            if not isinstance(model, TwoStageDetector) or not model.with_rpn or \
                    type(model).loss is not TwoStageDetector.loss:
                raise TypeError(f'TwoStageDistiller: the {role} must be an mmdet TwoStageDetector '
                                f'with an RPN (Faster / Mask R-CNN), got {type(model).__name__}')
            head = model.roi_head
            if not isinstance(head, StandardRoIHead) or any(
                    getattr(type(head), f) is not getattr(StandardRoIHead, f)
                    for f in ('loss', 'bbox_loss', 'mask_loss', '_bbox_forward')):
                raise TypeError(f'TwoStageDistiller: the {role} RoI head must be a StandardRoIHead '
                                f'(no override of its losses), got {type(head).__name__}')
            box = head.bbox_head
            if box.custom_cls_channels or getattr(box.loss_cls, 'use_sigmoid', False):
                raise TypeError(f'TwoStageDistiller: the {role} box head {type(box).__name__} '
                                'must have softmax (C+1)-class logits')
        n_s = self.student.roi_head.bbox_head.num_classes
        n_t = self.teacher.roi_head.bbox_head.num_classes
        if n_s != n_t:
            raise ValueError(f'TwoStageDistiller: the student has {n_s} classes and the teacher '
                             f'{n_t}; they must be the same')

    def check_losses(self) -> None:
        """Loss names, ``ignore_index`` against the RoI labels, mask losses."""
        num_classes = self.student.roi_head.bbox_head.num_classes
        for name, loss in self.distill_losses.items():
            if f'loss_{name}' in _STUDENT_KEYS:
                raise ValueError(f'TwoStageDistiller: distillation loss name {name!r} would '
                                 f'overwrite the student\'s "loss_{name}"; rename it')
            ignore = getattr(loss, 'ignore_index', None)
            if name not in self.mask_loss_names and ignore is not None and \
                    0 <= ignore <= num_classes:
                raise ValueError(f'TwoStageDistiller: {type(loss).__name__} {name!r} has '
                                 f'ignore_index={ignore}, a RoI label of these {num_classes}+1 '
                                 'classes; set ignore_index=None')
        if not self.mask_loss_names:
            return
        if not (self.student.roi_head.with_mask and self.teacher.roi_head.with_mask):
            raise TypeError('TwoStageDistiller: mask_distill_losses need a mask head in the '
                            'student and in the teacher (Mask R-CNN)')
        for name in self.mask_loss_names:
            loss = self.distill_losses[name]
            if not getattr(loss, 'use_sigmoid', False):
                raise ValueError(f'TwoStageDistiller: mask loss {name!r} ({type(loss).__name__}) '
                                 'must be a sigmoid loss (KDLoss / DISTLoss with use_sigmoid=True)')

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        """Student losses (as ``student.loss``) plus ``loss_<name>`` terms."""
        from mmdet.models.utils import unpack_gt_instances
        from mmdet.structures.bbox import bbox2roi
        student, roi_head = self.student, self.student.roi_head
        x = student.extract_feat(inputs)
        # TwoStageDetector.loss: the RPN, with class-agnostic labels.
        proposal_cfg = student.train_cfg.get('rpn_proposal', student.test_cfg.rpn)
        rpn_data_samples = copy.deepcopy(data_samples)
        for data_sample in rpn_data_samples:
            data_sample.gt_instances.labels = torch.zeros_like(data_sample.gt_instances.labels)
        rpn_losses, rpn_results_list = student.rpn_head.loss_and_predict(
            x, rpn_data_samples, proposal_cfg=proposal_cfg)
        losses = {(f'rpn_{k}' if 'loss' in k and 'rpn' not in k else k): v
                  for k, v in rpn_losses.items()}
        # StandardRoIHead.loss: assign and sample RoIs, box and mask losses.
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
        labels = bbox_loss_and_target['bbox_targets'][0]  # (R,), background = num_classes
        if roi_head.with_mask:
            mask_results = roi_head.mask_loss(x, sampling_results, bbox_results['bbox_feats'],
                                              gt_instances)
            losses.update(mask_results['loss_mask'])

        # The teacher: features, then its RoI head on exactly these RoIs.
        logit_losses = [n for n in self.distill_losses if n not in self.mask_loss_names]
        with torch.no_grad():
            x_t = self.teacher.extract_feat(self.teacher_inputs(inputs))
            cls_t = self.teacher.roi_head._bbox_forward(x_t, rois)['cls_score'] if any(
                not isinstance(self.distill_losses[n], SDDLoss) for n in logit_losses) else None
        for name in logit_losses:
            if isinstance(self.distill_losses[name], SDDLoss):
                views_s = self.roi_views('student', x, rois)
                with torch.no_grad():
                    views_t = self.roi_views('teacher', x_t, rois)
                losses[f'loss_{name}'] = self.distill_loss_scale * sdd_views_loss(
                    self.distill_losses[name], views_s, views_t, labels)
            else:
                losses[f'loss_{name}'] = self.distill_loss(name, bbox_results['cls_score'], cls_t,
                                                           labels)
        if self.mask_loss_names:
            pos_rois = bbox2roi([res.pos_priors for res in sampling_results])
            pos_labels = torch.cat([res.pos_gt_labels for res in sampling_results])
            with torch.no_grad():
                mask_t = self.teacher.roi_head._mask_forward(x_t, pos_rois)['mask_preds']
            mask_s = _label_channel(mask_results['mask_preds'], pos_labels, roi_head.mask_head)
            mask_t = _label_channel(mask_t, pos_labels, self.teacher.roi_head.mask_head)
            for name in self.mask_loss_names:
                losses[f'loss_{name}'] = self.distill_loss(name, mask_s, mask_t)
        return losses

    def roi_views(self, role: str, x: Tuple[Tensor], rois: Tensor) -> Tensor:
        """SDD's five views of every RoI through the model's box head: ``(R, C+1, 5)``."""
        extractor = self.sdd_extractors[role]
        feats = extractor(x[:extractor.num_inputs], rois)  # (R, D, 2k, 2k)
        views = [F.avg_pool2d(feats, 2)] + [feats[..., i::2, j::2]
                                            for i, j in ((0, 0), (0, 1), (1, 1), (1, 0))]
        box_head = getattr(self, role).roi_head.bbox_head
        cls_score = box_head(torch.cat(views))[0]  # (5R, C+1)
        return cls_score.reshape(len(views), rois.shape[0], -1).permute(1, 2, 0)


def _double_res_extractor(roi_head: nn.Module) -> nn.Module:
    """A copy of ``roi_head``'s box RoI extractor at twice its output size."""
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    ext = roi_head.bbox_roi_extractor
    if type(ext) is not SingleRoIExtractor or roi_head.with_shared_head:
        raise TypeError(f'SDD on RoIs needs a SingleRoIExtractor box RoI extractor and no shared '
                        f'head, got {type(ext).__name__}')
    layer = ext.roi_layers[0]
    sampling = layer.sampling_ratio // 2 if layer.sampling_ratio > 1 else layer.sampling_ratio
    roi_layer = dict(type=type(layer).__name__, output_size=tuple(2 * s for s in layer.output_size),
                     sampling_ratio=sampling, pool_mode=layer.pool_mode, aligned=layer.aligned)
    return SingleRoIExtractor(roi_layer, ext.out_channels, ext.featmap_strides, ext.finest_scale)


def _label_channel(mask_preds: Tensor, labels: Tensor, mask_head: nn.Module) -> Tensor:
    """The ground-truth class channel of ``(P, C, h, w)`` mask logits: ``(P, 1, h, w)``."""
    channel = torch.zeros_like(labels) if mask_head.class_agnostic else labels
    return mask_preds[torch.arange(len(labels), device=labels.device), channel][:, None]


def sdd_views_loss(loss: SDDLoss, views_S: Tensor, views_T: Tensor, target: Tensor) -> Tensor:
    """``loss`` (its base, weights, temperature, reduction) on ``(R, C+1, V)`` view logits."""
    with fp32_compute(views_S):
        s, t = prepare_logits(views_S, views_T, loss.logit_stand)
        valid, target = valid_rows(target, None, loss.ignore_index, (s.shape[0], ))
        per_roi = sdd_loss(s, t, target, loss.base, loss.complementary_weight, loss.alpha,
                           loss.beta, loss.temperature)
        return reduce_rows(per_roi, valid, None, loss.reduction, None) * loss.loss_weight


__all__: List[str] = ['TwoStageDistiller', 'sdd_views_loss']
