"""LightSKD self-distillation of an mmpretrain image classifier (no teacher)."""
import copy
from typing import Dict, Optional, Set, Tuple

import torch.nn.functional as F
from torch import Tensor

from mmkd.registry import MODELS
from mmkd.utils.compat import cls_head_loss

from .base import ModelCfg, StudentDistiller
from .cls_distiller import distill_target, gt_labels, num_classes_of, soft_labels


@MODELS.register_module()
class LightSKD(StudentDistiller):
    """LightSKD: an ``ImageClassifier`` distils itself with DRG and DSR.

    Lightweight Self-Knowledge Distillation with Multi-source Information
    Fusion, arXiv:2305.09183, 2023.

    * DRG: an auxiliary head (:class:`~mmkd.models.heads.DRGHead`) on backbone
      stage ``aux_stage`` is trained by its own cross-entropy (``loss_aux``)
      and, detached, guides the final logits through
      :class:`~mmkd.models.losses.DRGLoss` (``loss_drg``). Any loss that
      consumes ``'logits'`` is used this way: it gets
      ``(final logits, auxiliary logits, labels)``.
    * DSR: :class:`~mmkd.models.losses.DSRLoss` (``loss_dsr``) pulls the sorted
      final logits towards the previous batch's, which the loss module keeps
      (one per model, never in checkpoints; 0 on the first batch). Losses that
      consume ``'student_logits'`` get the final logits alone.

    The backbone is made to also return stage ``aux_stage`` (its
    ``out_indices`` are extended); the student's neck and head still see
    only the stages of its config. The auxiliary head lives outside
    ``self.student``, so ``predict`` / ``tensor`` use the student's normal head
    alone and ``tools/model_converters/extract_student.py`` drops it. The
    distillation losses (not ``loss_aux``) are scaled by
    ``distill_loss_scale``, which :class:`~mmkd.engine.DistillLossScheduleHook`
    sets. A distillation loss named ``aux`` (key ``loss_aux``) is refused.

    Args:
        student (dict): The mmpretrain ``ImageClassifier`` config.
        aux_head (dict): The auxiliary head config; ``num_classes`` defaults
            to the student's. Defaults to ``dict(type='DRGHead',
            in_channels=128)`` (ResNet-18 / ResNet-34 second stage).
        aux_stage (int): 0-based backbone stage (mmpretrain ``out_indices``
            convention) of the auxiliary head. Defaults to 1 (ResNet's
            ``layer2``: the paper's stage 2).
        aux_loss_weight (float): Weight of the auxiliary cross-entropy.
            Defaults to 1.0.
        distill_losses (dict, optional): ``name -> loss config``. Defaults
            to ``drg=DRGLoss(T=4, loss_weight=0.2)`` and
            ``dsr=DSRLoss(T=4, loss_weight=1.0)`` (the official settings).
        data_preprocessor (dict, optional): The config's top-level data
            preprocessor (set by the Runner), used if the student dict has
            none. Defaults to None.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    accepted_inputs = ('logits', 'student_logits')

    def __init__(self,
                 student: ModelCfg,
                 aux_head: Optional[dict] = None,
                 aux_stage: int = 1,
                 aux_loss_weight: float = 1.0,
                 distill_losses: Optional[Dict[str, dict]] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if distill_losses is None:
            distill_losses = dict(drg=dict(type='DRGLoss', temperature=4.0, loss_weight=0.2),
                                  dsr=dict(type='DSRLoss', temperature=4.0, loss_weight=1.0))
        super().__init__(student, distill_losses, data_preprocessor, init_cfg)
        backbone = self.student.backbone
        if not hasattr(backbone, 'out_indices'):
            raise TypeError(f'LightSKD needs a backbone with out_indices (such as ResNet), got '
                            f'{type(backbone).__name__}')
        self._main_indices = tuple(backbone.out_indices)
        if not 0 <= aux_stage < max(self._main_indices):
            raise ValueError(f'aux_stage must be a backbone stage before the last one used by '
                             f'the head ({max(self._main_indices)}), got {aux_stage}')
        self.aux_stage = aux_stage
        self._out_indices = tuple(sorted(set(self._main_indices) | {aux_stage}))
        backbone.out_indices = self._out_indices
        aux_head = copy.deepcopy(aux_head or dict(type='DRGHead', in_channels=128))
        aux_head.setdefault('num_classes', num_classes_of(self.student))
        aux_head.setdefault('_scope_', 'mmkd')
        if aux_head['num_classes'] != num_classes_of(self.student):
            raise ValueError(f'aux_head has {aux_head["num_classes"]} classes, the student '
                             f'{num_classes_of(self.student)}')
        self.aux_head = MODELS.build(aux_head)
        self.aux_loss_weight = aux_loss_weight

    def num_classes_for(self, name: str) -> Optional[int]:
        return num_classes_of(self.student)

    def student_loss_keys(self) -> Set[str]:
        """The head's ``loss`` and the auxiliary head's ``loss_aux``."""
        return {'loss', 'loss_aux'}

    def extract_feat(self, inputs: Tensor) -> Tuple[Tensor, tuple]:
        """The auxiliary stage's feature map and the student's neck output."""
        feats = self.student.extract_feat(inputs, stage='backbone')
        aux = feats[self._out_indices.index(self.aux_stage)]
        main = tuple(feats[self._out_indices.index(i)] for i in self._main_indices)
        return aux, (self.student.neck(main) if self.student.with_neck else main)

    def forward(self, inputs: Tensor, data_samples: Optional[list] = None, mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.student.head.predict(self.extract_feat(inputs)[1], data_samples)
        if mode == 'tensor':
            return self.student.head(self.extract_feat(inputs)[1])
        raise RuntimeError(f'Invalid mode "{mode}". Only supports loss, predict and tensor mode')

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        """Student head loss, ``loss_aux`` and ``loss_<name>`` (DRG, DSR)."""
        aux_feat, neck = self.extract_feat(inputs)
        logits = self.student.head(neck)
        losses = cls_head_loss(self.student.head, logits, data_samples)
        in_channels = getattr(self.aux_head, 'in_channels', aux_feat.shape[1])
        if aux_feat.shape[1] != in_channels:
            raise ValueError(f'aux_head expects {in_channels} channels but backbone stage '
                             f'{self.aux_stage} gives {aux_feat.shape[1]}: set '
                             f'aux_head.in_channels={aux_feat.shape[1]}')
        aux_logits = self.aux_head(aux_feat)
        # Like the student's head: the soft labels of Mixup / CutMix when the batch has them.
        scores = soft_labels(data_samples)
        aux_target = gt_labels(data_samples) if scores is None else scores
        losses['loss_aux'] = F.cross_entropy(
            aux_logits, aux_target.to(logits.device)) * self.aux_loss_weight
        target = distill_target(
            type(self).__name__,
            {n: loss for n, loss in self.distill_losses.items() if self.input_of[n] == 'logits'},
            data_samples, logits.device)
        distill = {}
        for name, loss in self.distill_losses.items():
            if self.input_of[name] == 'logits':
                distill[f'loss_{name}'] = loss(logits, aux_logits.detach(), target)
            else:
                distill[f'loss_{name}'] = loss(logits)
        return self.add_distill_losses(losses, distill)
