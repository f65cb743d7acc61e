"""Logit distillation between mmpretrain image classifiers."""
from typing import Dict, List, Mapping, Optional, Set, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from mmkd.registry import MODELS
from mmkd.utils.compat import cls_head_loss

from .teacher_student import TeacherStudentDistiller


def classifier_forward(model: nn.Module, inputs: Tensor) -> Tuple[Tuple[Tensor, ...], Tensor]:
    """Backbone features and head logits of an mmpretrain ``ImageClassifier``.

    The same computation as ``model(inputs, mode='tensor')``, keeping the
    backbone's feature maps (before global pooling) that SDD needs.
    """
    feats = model.extract_feat(inputs, stage='backbone')
    neck = model.neck(feats) if model.with_neck else feats
    return feats, model.head(neck)


def num_classes_of(model: nn.Module) -> int:
    """The number of classes of a classifier's head (clear error if unknown)."""
    head = getattr(model, 'head', None)
    num = getattr(head, 'num_classes', None)
    if num is None and isinstance(getattr(head, 'fc', None), nn.Linear):
        num = head.fc.out_features
    if num is None:
        raise TypeError(f'cannot tell the number of classes of {type(model).__name__} '
                        f'(head {type(head).__name__}): expected an mmpretrain '
                        'ImageClassifier with a classification head')
    return int(num)


def gt_labels(data_samples: List) -> Tensor:
    """The int64 labels ``(B,)`` of mmpretrain ``DataSample`` s."""
    if any('gt_label' not in ds for ds in data_samples):
        raise ValueError('mmkd: classification distillation needs a gt_label in every data '
                         'sample')
    return torch.cat([ds.gt_label for ds in data_samples]).long()


def soft_labels(data_samples: List) -> Optional[Tensor]:
    """The soft labels ``(B, C)`` of mmpretrain ``DataSample`` s, or None.

    mmpretrain's batch augments (``Mixup``, ``CutMix``, set in
    ``ClsDataPreprocessor(batch_augments=...)``) write the mixed class
    probabilities to ``gt_score`` and leave ``gt_label`` holding the unmixed
    labels; its heads then train on ``gt_score`` (``ClsHead._get_loss``
    decides, as here, from the first sample).
    """
    if not data_samples or 'gt_score' not in data_samples[0]:
        return None
    return torch.stack([ds.gt_score for ds in data_samples])


def distill_target(owner: str, losses: Mapping[str, nn.Module], data_samples: List,
                   device: torch.device) -> Optional[Tensor]:
    """The labels the distillation ``losses`` get: the hard labels, or None under soft labels.

    With soft labels (``gt_score``: Mixup / CutMix) there is no hard label of
    the mixed images (``gt_label`` is the unmixed one): losses that only mask
    rows with the target get None, and a loss that needs the labels
    (``requires_target``: DKD, RLD, SDD...) is refused.

    Raises:
        ValueError: A loss with ``requires_target=True`` on a batch with soft
            labels, at its first step.
    """
    if soft_labels(data_samples) is None:
        return gt_labels(data_samples).to(device)
    for name, loss in losses.items():
        if getattr(loss, 'requires_target', False):
            raise ValueError(
                f'{owner}: distill loss "{name}" ({type(loss).__name__}) needs hard class '
                f'labels (requires_target=True), but the batch has mixed soft labels (gt_score, '
                f'e.g. Mixup/CutMix), set by data_preprocessor.batch_augments, which leave no '
                f'hard label: drop the batch augment or use a loss without labels such as '
                f'KDLoss or DISTLoss.')
    return None


def disable_class_ignore_index(name: str, loss: nn.Module, num_classes: int) -> None:
    """Classification labels have no ignore value: an ``ignore_index`` (255 by
    default, a dense-prediction convention) that is a real class is disabled."""
    index = getattr(loss, 'ignore_index', None)
    if index is not None and 0 <= index < num_classes:
        print_log(f'mmkd: distill loss "{name}": ignore_index={index} is a class of this '
                  f'{num_classes}-class classifier; disabled', logger='current')
        loss.ignore_index = None


@MODELS.register_module()
class ClsDistiller(TeacherStudentDistiller):
    """Distils an mmpretrain ``ImageClassifier`` teacher into an ``ImageClassifier``.

    ``loss`` mode returns the student's own head loss (keys unchanged, e.g.
    ``loss``) plus ``loss_<name>`` for every distillation loss. Losses that
    consume ``'logits'`` get the head logits ``(B, C)`` of both models with the
    ground-truth labels as ``target`` (None when the batch has Mixup / CutMix
    soft labels, ``gt_score``: losses that need labels are then refused).
    Losses that consume ``'features'`` (:class:`~mmkd.models.losses.SDDLoss`)
    get the local logits of each model's last backbone feature map before
    global pooling through its own linear classifier (``head.fc``). The
    teachers run under ``torch.no_grad()`` on the batch re-normalised for
    each; several teachers give the weighted mean of their (local) logits.
    ``predict`` and ``tensor`` modes run the student alone.

    Losses whose ``ignore_index`` is one of the classes (255 on ImageNet) get
    ``ignore_index=None``: classification labels have no ignore value.

    Args:
        student (dict): The student ``ImageClassifier`` config.
        teacher (dict | str): The teacher ``ImageClassifier`` config, or a
            config path / ``'mmpretrain::resnet/resnet34_8xb32_in1k.py'``.
        teacher_ckpt (str, optional): Path or URL of the teacher checkpoint.
            Defaults to None (random teacher, for tests only).
        distill_losses (dict, optional): ``name -> loss config``. Defaults to None.
        data_preprocessor (dict, optional): The config's top-level data
            preprocessor (set by the Runner), used by the student if its dict
            has none. Defaults to None.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
        teachers, teacher_dtype: See :class:`TeacherStudentDistiller`.
    """

    accepted_inputs = ('logits', 'features')

    def check_models(self) -> None:
        """mmpretrain classifiers with the same number of classes."""
        for role, model in [('student', self.student)] + self.teachers:
            if not (hasattr(model, 'extract_feat') and hasattr(model, 'head')):
                raise TypeError(f'ClsDistiller needs mmpretrain ImageClassifier models; the '
                                f'{role} is a {type(model).__name__}')
        num_s = num_classes_of(self.student)
        for role, teacher in self.teachers:
            num_t = self.distilled_classes(role, num_classes_of(teacher))
            if num_t != num_s:
                raise ValueError(f'student and {role} must have the same classes: the student '
                                 f'has {num_s}, the {role} {num_t}')

    def check_loss(self, name: str, loss: nn.Module) -> None:
        """A linear ``head.fc`` on both models for feature losses; no class ignored."""
        if self.input_of[name] == 'features':
            for role, model in [('student', self.student)] + self.teachers:
                if not isinstance(getattr(model.head, 'fc', None), nn.Linear):
                    raise TypeError(f'{type(loss).__name__} "{name}" applies the linear '
                                    f'classifier head.fc to local features, but the {role} '
                                    f'head {type(model.head).__name__} has no nn.Linear fc')
        disable_class_ignore_index(name, loss, num_classes_of(self.student))

    def num_classes_for(self, name: str) -> Optional[int]:
        return num_classes_of(self.student)

    def student_loss_keys(self) -> Set[str]:
        return {'loss'}

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        """Student head loss plus ``loss_<name>`` distillation losses."""
        feats_S, logits_S = classifier_forward(self.student, inputs)
        cells = [n for n, kind in self.input_of.items() if kind == 'features']

        def teacher_pass(teacher: nn.Module, x: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
            feats, logits = classifier_forward(teacher, x)
            return logits, {n: self.distill_losses[n].local_logits(feats[-1], teacher.head.fc)
                            for n in cells}

        logits_T, cells_T = self.teacher_outputs(teacher_pass, inputs)
        # The head's own loss on these logits (one head forward for both uses).
        losses = cls_head_loss(self.student.head, logits_S, data_samples)
        # None under Mixup / CutMix soft labels (losses that need labels are refused).
        target = distill_target(type(self).__name__, self.distill_losses, data_samples,
                                logits_S.device)
        distill = {}
        for name, loss in self.distill_losses.items():
            if name in cells_T:
                cells_S = loss.local_logits(feats_S[-1], self.student.head.fc)
                distill[f'loss_{name}'] = loss.loss_on_cells(cells_S, cells_T[name], target)
            else:
                distill[f'loss_{name}'] = loss(logits_S, logits_T, target)
        return self.add_distill_losses(losses, distill)
