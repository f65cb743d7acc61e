"""Semantic segmentation distillation for mmseg ``EncoderDecoder`` models."""
from typing import Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmkd.registry import MODELS

from .base import ModelCfg
from .teacher_student import TeacherStudentDistiller


def _aux_heads(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(loss prefix, head)`` of each auxiliary head, as mmseg names their losses."""
    heads = getattr(model, 'auxiliary_head', None)
    if heads is None:
        return []
    if isinstance(heads, nn.ModuleList):
        return [(f'aux_{i}', h) for i, h in enumerate(heads)]
    return [('aux', heads)]


def _loss_modules(head: nn.Module) -> List[nn.Module]:
    """The loss modules of an mmseg decode head (``loss_decode``: one or a list)."""
    losses = getattr(head, 'loss_decode', [])
    return list(losses) if isinstance(losses, nn.ModuleList) else [losses]


def seg_labels(data_samples: Sequence, size: Tuple[int, int]) -> Tensor:
    """The batch's ``gt_sem_seg`` labels ``(N, h, w)`` resized (nearest) to ``size``."""
    labels = torch.stack([ds.gt_sem_seg.data for ds in data_samples])  # (N, 1, H, W)
    if tuple(labels.shape[-2:]) != tuple(size):
        labels = F.interpolate(labels.float(), size=size, mode='nearest').to(labels.dtype)
    return labels[:, 0].long()


@MODELS.register_module()
class SegDistiller(TeacherStudentDistiller):
    """Distils an mmseg ``EncoderDecoder`` from another one through its logits.

    The student computes its own decode-head (and auxiliary-head) losses, with
    mmseg's keys and values (``decode.loss_ce``, ``aux.loss_ce``, ...). The
    teacher runs ``extract_feat`` and its decode head's forward (its
    auxiliary heads' only when ``aux_distill_weight > 0``) under
    ``torch.no_grad()``, never its losses. Every distillation loss compares the
    two ``(N, C, h, w)`` logit maps at the student's decoder resolution: the
    teacher's are resized bilinearly if their resolution differs, and the
    labels are resized with nearest interpolation and passed as ``target``, so
    ``ignore_index`` pixels are excluded from every loss.

    Args:
        student (dict): The student ``EncoderDecoder`` config.
        teacher (dict | str): The teacher model config or config file
            (``'mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py'``).
        teacher_ckpt (str, optional): Teacher checkpoint path or URL.
            Defaults to None.
        distill_losses (dict, optional): ``name -> loss config`` of losses that
            consume ``'logits'`` (per pixel: ``KDLoss``, ``DISTLoss``,
            ``DKDLoss``, ``ReKDLoss``, ``RLDLoss``) or ``'logit_maps'``
            (``ChannelWiseDivergence``); each adds ``loss_<name>``. Defaults
            to None.
        aux_distill_weight (float): When positive, every distillation loss is
            also applied to the auxiliary heads' logits (student head ``i``
            against teacher head ``i``), multiplied by this weight, as
            ``loss_<name>_aux`` (``loss_<name>_aux_<i>`` for several heads).
            The official DIST segmentation recipe uses 0.4 (the weight of the
            auxiliary cross-entropy). Defaults to 0.0 (off).
        data_preprocessor (dict, optional): The config's top-level data
            preprocessor, used by a student dict without one. Defaults to None.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
        **kwargs: ``teachers``, ``teacher_dtype``: see
            :class:`TeacherStudentDistiller` (several teachers: the weighted
            mean of their logits, each resized to the student's resolution).
    """

    accepted_inputs = ('logits', 'logit_maps')

    def __init__(self,
                 student: ModelCfg,
                 teacher: Optional[ModelCfg] = None,
                 teacher_ckpt: Optional[str] = None,
                 distill_losses: Optional[Dict[str, dict]] = None,
                 aux_distill_weight: float = 0.0,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        if not aux_distill_weight >= 0:
            raise ValueError(f'aux_distill_weight must be >= 0, got {aux_distill_weight}')
        super().__init__(student, teacher, teacher_ckpt, distill_losses, data_preprocessor,
                         init_cfg, **kwargs)
        self.aux_distill_weight = float(aux_distill_weight)

    def check_models(self) -> None:
        try:
            from mmseg.models.segmentors import CascadeEncoderDecoder, EncoderDecoder
        except ImportError as e:
            raise ImportError('SegDistiller needs mmsegmentation (pip install '
                              '"mmsegmentation==1.2.2")') from e
        for role, model in [('student', self.student)] + self.teachers:
            if not isinstance(model, EncoderDecoder) or isinstance(model, CascadeEncoderDecoder):
                raise TypeError(f'SegDistiller: the {role} must be an mmseg EncoderDecoder '
                                f'(cascades are not supported), got {type(model).__name__}.')
        for role, teacher in self.teachers:
            pairs = [('decode_head', self.student.decode_head, teacher.decode_head)]
            if self.aux_distill_weight > 0:
                aux_s, aux_t = _aux_heads(self.student), _aux_heads(teacher)
                if not aux_s or len(aux_s) != len(aux_t):
                    raise ValueError(
                        f'SegDistiller: aux_distill_weight={self.aux_distill_weight} needs the '
                        f'same number of auxiliary heads in student and {role}, got '
                        f'{len(aux_s)} and {len(aux_t)}.')
                pairs += [(f'auxiliary head {p}', hs, ht)
                          for (p, hs), (_, ht) in zip(aux_s, aux_t)]
            for where, head_s, head_t in pairs:
                num_t = self.distilled_classes(role, head_t.out_channels)
                if head_s.out_channels != num_t:
                    raise ValueError(
                        f'SegDistiller: the student predicts {head_s.out_channels} classes but '
                        f'the {role} {num_t} ({where} num_classes): distillation '
                        'needs the same classes in both models.')

    def check_loss(self, name: str, loss: nn.Module) -> None:
        """The loss ignores the label the student's decode head ignores."""
        ignore = self.student.decode_head.ignore_index
        if getattr(loss, 'ignore_index', ignore) != ignore:
            raise ValueError(
                f'SegDistiller: distill_losses.{name} has ignore_index={loss.ignore_index} '
                f'but the student decode head ignores {ignore}; set them equal.')

    def num_classes_for(self, name: str) -> Optional[int]:
        return self.student.decode_head.out_channels

    def student_loss_keys(self) -> Set[str]:
        """mmseg's keys: ``decode.loss_ce``, ``aux.loss_ce``... (never ``loss_<name>``)."""
        heads = [('decode', self.student.decode_head)] + _aux_heads(self.student)
        return {f'{prefix}.{loss.loss_name}' for prefix, head in heads
                for loss in _loss_modules(head)}

    def distill_loss_keys(self, name: str) -> List[str]:
        """``loss_<name>``, and ``loss_<name>_aux`` (``_aux_<i>``) with ``aux_distill_weight``."""
        if self.aux_distill_weight == 0:
            return [f'loss_{name}']
        return [f'loss_{name}'] + [f'loss_{name}_{p}' for p, _ in _aux_heads(self.student)]

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        student = self.student
        feats = student.extract_feat(inputs)
        logits_s = [student.decode_head(feats)]
        losses = self._head_losses('decode', student.decode_head, logits_s[0], data_samples)
        for prefix, head in _aux_heads(student):
            out = head(feats)
            losses.update(self._head_losses(prefix, head, out, data_samples))
            logits_s.append(out)

        n_heads = 1 + len(_aux_heads(student)) if self.aux_distill_weight > 0 else 1

        def teacher_pass(teacher: nn.Module, x: Tensor) -> List[Tensor]:
            """Decoder (and auxiliary) logits at the student's resolutions."""
            feats_t = teacher.extract_feat(x)
            heads = [teacher.decode_head] + [head for _, head in _aux_heads(teacher)]
            out = []
            for head, out_s in zip(heads[:n_heads], logits_s):
                logits = head(feats_t)
                if logits.shape[-2:] != out_s.shape[-2:]:
                    logits = F.interpolate(logits, size=out_s.shape[-2:], mode='bilinear',
                                           align_corners=student.align_corners)
                out.append(logits)
            return out

        logits_t = self.teacher_outputs(teacher_pass, inputs, data_samples)
        suffixes = [''] + [f'_{p}' for p, _ in _aux_heads(student)]
        weights = [1.0] + [self.aux_distill_weight] * (len(logits_t) - 1)
        targets: Dict[Tuple[int, int], Tensor] = {}  # labels per decoder resolution
        distill: Dict[str, Tensor] = {}
        for out_s, out_t, suffix, weight in zip(logits_s, logits_t, suffixes, weights):
            size = tuple(out_s.shape[-2:])
            if size not in targets:
                targets[size] = seg_labels(data_samples, size)
            target = targets[size]
            for name, loss in self.distill_losses.items():
                value = loss(out_s, out_t, target)
                distill[f'loss_{name}{suffix}'] = value * weight if weight != 1.0 else value
        return self.add_distill_losses(losses, distill)

    @staticmethod
    def _head_losses(prefix: str, head: nn.Module, logits: Tensor,
                     data_samples: list) -> Dict[str, Tensor]:
        """The head's own ``loss_by_feat``, keys prefixed as mmseg does."""
        return {f'{prefix}.{k}': v for k, v in head.loss_by_feat(logits, data_samples).items()}
