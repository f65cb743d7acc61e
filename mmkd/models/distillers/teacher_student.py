"""The teacher-student distiller base: a student, a frozen teacher and distillation losses.

Task distillers (classification, two-stage and dense detection, semantic
segmentation) subclass :class:`TeacherStudentDistiller` and implement
:meth:`~StudentDistiller.loss`, calling the student's and the teacher's own
public methods. On top of :class:`~mmkd.models.distillers.StudentDistiller`
(student, losses, hooks, key checks) this class

* builds the teacher from a model dict or a config
  (``'mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py'`` or a path);
* loads ``teacher_ckpt`` (path or URL, on the CPU) strictly, freezes the
  teacher and keeps it in ``eval()`` whatever mode the distiller is put in;
* converts the student's normalised batch for a teacher that normalises
  differently (:meth:`teacher_inputs`).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from mmkd.utils import load_checkpoint_file
from mmkd.utils.compat import image_normalisation

from .base import ModelCfg, StudentDistiller, build_model_from_cfg


def load_teacher_checkpoint(teacher: nn.Module, filename: str) -> None:
    """Loads ``filename`` (a path or URL) into ``teacher`` on the CPU, strictly.

    Accepts plain model checkpoints and mmkd distiller checkpoints (whose
    ``student.`` weights are taken). A missing, truncated or non-checkpoint
    file, or keys that do not fit the teacher, raise an error naming
    ``teacher_ckpt`` and the file: no silent random teacher. The file is read
    with :func:`mmkd.utils.safe_load` (``weights_only=True`` and mmkd's
    allowlist; a URL is downloaded into the cache first), in any process.
    """
    ckpt = load_checkpoint_file(filename, map_location='cpu', what='teacher_ckpt')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
    state = {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}
    if any(k.startswith('student.') for k in state):
        state = {k[8:]: v for k, v in state.items() if k.startswith('student.')}
    own = teacher.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        def show(keys: List[str]) -> str:
            return f'{len(keys)} (e.g. {keys[:3]})' if keys else '0'
        raise RuntimeError(
            f'teacher_ckpt {filename!r} does not fit the teacher model '
            f'({type(teacher).__name__}): missing keys {show(missing)}, unexpected keys '
            f'{show(unexpected)}, shape mismatches {show(mismatched)}. Check that '
            'the teacher config matches the checkpoint (depth, number of classes).')
    teacher.load_state_dict(state, strict=True)


class Renormalise(nn.Module):
    """Turns a batch normalised for one model into the batch another model expects.

    ``x * std_s + mean_s`` undoes the student's normalisation, a channel flip
    swaps BGR/RGB if only one of them converts, ``(x - mean_t) / std_t``
    applies the teacher's. The statistics are (non-persistent) buffers, so they
    follow the distiller through ``.to()``, ``.cuda()`` and ``.double()`` and
    are not written to checkpoints. Given the batch's data samples, the padded
    border of each image (outside its ``img_shape``) gets the teacher's own
    padding value, as if the teacher's preprocessor had padded it, instead of
    the re-normalised student padding.
    """

    def __init__(self, mean_s: Tensor, std_s: Tensor, flip: bool, mean_t: Tensor,
                 std_t: Tensor, pad_value: float = 0.0) -> None:
        super().__init__()
        self.flip = flip
        self.pad_value = float(pad_value)
        for name, value in (('mean_s', mean_s), ('std_s', std_s), ('mean_t', mean_t),
                            ('std_t', std_t)):
            self.register_buffer(name, value.detach().clone().reshape(-1, 1, 1),
                                 persistent=False)

    @classmethod
    def between(cls, student: nn.Module, teacher: nn.Module) -> Optional[Renormalise]:
        """The conversion from the student's preprocessing to the teacher's, None if equal."""
        mean_s, std_s, rgb_s = image_normalisation(student.data_preprocessor)
        mean_t, std_t, rgb_t = image_normalisation(teacher.data_preprocessor)
        if rgb_s == rgb_t and (mean_s is None) == (mean_t is None) and (
                mean_s is None or (torch.equal(mean_s, mean_t) and torch.equal(std_s, std_t))):
            return None
        zeros, ones = torch.zeros(3), torch.ones(3)
        pre_t = teacher.data_preprocessor  # mmengine / mmdet: pad_value; mmseg: pad_val
        pad = getattr(pre_t, 'pad_value', getattr(pre_t, 'pad_val', 0))
        return cls(zeros if mean_s is None else mean_s, ones if std_s is None else std_s,
                   rgb_s != rgb_t, zeros if mean_t is None else mean_t,
                   ones if std_t is None else std_t, pad)

    def forward(self, inputs: Tensor, data_samples: Optional[list] = None) -> Tensor:
        x = inputs * self.std_s + self.mean_s
        if self.flip:
            x = x.flip(1)
        x = (x - self.mean_t) / self.std_t
        for i, sample in enumerate(data_samples or []):
            shape = getattr(sample, 'metainfo', {}).get('img_shape')
            if shape is not None:
                h, w = shape[:2]
                x[i, :, h:] = self.pad_value
                x[i, :, :, w:] = self.pad_value
        return x

    def extra_repr(self) -> str:
        return f'flip={self.flip}, pad_value={self.pad_value}'


class TeacherStudentDistiller(StudentDistiller):
    """Base class of the teacher-student distillers.

    Args:
        student (dict | str): The student model config (an mmdet / mmseg /
            mmpretrain model dict).
        teacher (dict | str): The teacher model config, or the path of a
            config file, also as ``'mmdet::path/in/package.py'``.
        teacher_ckpt (str, optional): Path or URL of the teacher checkpoint.
            ``None`` leaves the teacher randomly initialised (for tests and
            ``tools/test.py`` only; a warning says so). Defaults to None.
        distill_losses (dict, optional): ``name -> loss config``; each adds the
            key ``loss_<name>``. Defaults to None.
        data_preprocessor (dict, optional): See
            :class:`~mmkd.models.distillers.StudentDistiller`. Defaults to None.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 student: ModelCfg,
                 teacher: ModelCfg,
                 teacher_ckpt: Optional[str] = None,
                 distill_losses: Optional[Dict[str, dict]] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(student, distill_losses, data_preprocessor, init_cfg)
        self.teacher = build_model_from_cfg(teacher)
        self.teacher_ckpt = teacher_ckpt
        if teacher_ckpt is not None:
            load_teacher_checkpoint(self.teacher, teacher_ckpt)
        else:
            print_log('mmkd: teacher_ckpt is None, the teacher keeps its initial weights '
                      '(right for tools/test.py and for loading a distiller checkpoint, which '
                      'holds the teacher; wrong for training from scratch)',
                      logger='current', level=30)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        #: Student batch -> teacher batch, or None when both preprocess alike.
        self.renormalise = Renormalise.between(self.student, self.teacher)

    def init_weights(self) -> None:
        """Initialises the student only: the teacher keeps its checkpoint."""
        self.student.init_weights()

    def train(self, mode: bool = True) -> TeacherStudentDistiller:
        super().train(mode)
        self.teacher.eval()
        return self

    def teacher_inputs(self, inputs: Tensor, data_samples: Optional[list] = None) -> Tensor:
        """The student's normalised batch, re-normalised for the teacher.

        With ``data_samples`` (detection, segmentation), the padding outside
        each image's ``img_shape`` gets the teacher's padding value.
        """
        if self.renormalise is None:
            return inputs
        return self.renormalise(inputs, data_samples)
