"""The distiller base: a student, a frozen teacher and distillation losses.

Task distillers (classification, two-stage and dense detection, semantic
segmentation) subclass :class:`BaseDistiller` and implement only
:meth:`BaseDistiller.loss`, calling the student's and the teacher's own public
methods; everything else lives here:

* build the student from a model dict, the teacher from a model dict or a
  config (``'mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py'`` or a path);
* load ``teacher_ckpt`` (path or URL, on the CPU), freeze the teacher, keep it
  in ``eval()`` whatever mode the distiller is put in;
* convert the student's normalised batch for a teacher that normalises
  differently;
* build the distillation losses (``loss_<name>`` keys) and scale them by
  ``distill_loss_scale``, which :class:`~mmkd.engine.DistillLossScheduleHook`
  sets for warm-up and stop schedules;
* ``predict`` and ``tensor`` modes run the student alone.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Union

import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.runner.checkpoint import _load_checkpoint
from torch import Tensor, nn

from mmkd.registry import MODELS
from mmkd.utils import load_from_local_file

ModelCfg = Union[dict, ConfigDict, str]


def build_model_from_cfg(cfg: ModelCfg) -> nn.Module:
    """Builds a task model from a model dict or a config file / ``pkg::path``."""
    if isinstance(cfg, str):
        if '::' in cfg:
            from mmengine.hub import get_config
            full = get_config(cfg)
        else:
            full = Config.fromfile(cfg)
        cfg = copy.deepcopy(full.model)
        if full.get('default_scope'):
            cfg.setdefault('_scope_', full.default_scope)
        # As MMEngine's Runner does: mmpretrain (and mmseg) configs keep the
        # data preprocessor at the top level, outside ``model``.
        if full.get('data_preprocessor') is not None:
            cfg.setdefault('data_preprocessor', copy.deepcopy(full.data_preprocessor))
    return MODELS.build(copy.deepcopy(cfg))


def build_distill_losses(cfgs: Optional[Dict[str, dict]]) -> nn.ModuleDict:
    """Builds ``name -> loss config`` in the ``mmkd`` scope (for ``loss_<name>`` keys)."""
    losses = nn.ModuleDict()
    for name, cfg in (cfgs or {}).items():
        cfg = copy.deepcopy(cfg)
        cfg.setdefault('_scope_', 'mmkd')
        losses[name] = MODELS.build(cfg)
    return losses


def with_preprocessor(cfg: ModelCfg, data_preprocessor: Optional[dict]) -> ModelCfg:
    """``cfg`` with ``data_preprocessor`` set if it is a model dict without one."""
    if data_preprocessor is None or not isinstance(cfg, dict) or \
            cfg.get('data_preprocessor') is not None:
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg['data_preprocessor'] = copy.deepcopy(data_preprocessor)
    return cfg


def load_teacher_checkpoint(teacher: nn.Module, filename: str) -> None:
    """Loads ``filename`` (a path or URL) into ``teacher`` on the CPU, strictly.

    Accepts plain model checkpoints and mmkd distiller checkpoints (whose
    ``student.`` weights are taken). A missing file or keys that do not fit
    the teacher raise an error naming them: no silent random teacher.
    """
    if filename.startswith(('http://', 'https://')):
        ckpt = _load_checkpoint(filename, map_location='cpu')
    else:
        try:
            ckpt = load_from_local_file(filename, map_location='cpu')
        except FileNotFoundError as e:
            raise FileNotFoundError(f'teacher_ckpt {filename!r} does not exist') from e
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


class BaseDistiller(BaseModel):
    """Base class of the teacher-student distillers.

    Args:
        student (dict): The student model config (an mmdet / mmseg /
            mmpretrain model dict).
        teacher (dict | str): The teacher model config, or the path of a
            config file, also as ``'mmdet::path/in/package.py'``.
        teacher_ckpt (str, optional): Path or URL of the teacher checkpoint.
            ``None`` leaves the teacher randomly initialised (for tests
            only; a warning says so). Defaults to None.
        distill_losses (dict): ``name -> loss config``; each adds the key
            ``loss_<name>``. Loss types are looked up in the ``mmkd`` scope.
            Defaults to an empty dict.
        data_preprocessor (dict, optional): The config's top-level data
            preprocessor, which MMEngine's Runner passes to the model
            (mmpretrain and mmseg configs keep it outside ``model``). It is
            given to the student if the student dict has none. Defaults to None.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 student: ModelCfg,
                 teacher: ModelCfg,
                 teacher_ckpt: Optional[str] = None,
                 distill_losses: Optional[Dict[str, dict]] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        student_model = build_model_from_cfg(with_preprocessor(student, data_preprocessor))
        # The batch is normalised once, by the student's preprocessor.
        super().__init__(data_preprocessor=student_model.data_preprocessor, init_cfg=init_cfg)
        self.student = student_model
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
        self.distill_losses = build_distill_losses(distill_losses)
        #: Multiplies every distillation loss (warm-up / stop schedules).
        self.distill_loss_scale = 1.0
        self._teacher_norm = self._normalisation_change()
        self.check_compatibility()

    # ---------------------------------------------------------------- hooks
    def check_compatibility(self) -> None:
        """Raises if student and teacher cannot be distilled (task-specific)."""

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        """Student losses plus ``loss_<name>`` distillation losses."""
        raise NotImplementedError

    # ------------------------------------------------------------- plumbing
    def init_weights(self) -> None:
        """Initialises the student only: the teacher keeps its checkpoint."""
        self.student.init_weights()

    def train(self, mode: bool = True) -> BaseDistiller:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, inputs: Tensor, data_samples: Optional[list] = None, mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode in ('predict', 'tensor'):
            return self.student(inputs, data_samples, mode=mode)
        raise RuntimeError(f'Invalid mode "{mode}". Only supports loss, predict and tensor mode')

    def distill_loss(self, name: str, *args, **kwargs) -> Tensor:
        """Runs distillation loss ``name``, scaled by the schedule."""
        return self.distill_losses[name](*args, **kwargs) * self.distill_loss_scale

    def teacher_inputs(self, inputs: Tensor) -> Tensor:
        """The student's normalised batch, re-normalised for the teacher."""
        if self._teacher_norm is None:
            return inputs
        mean_s, std_s, flip, mean_t, std_t = self._teacher_norm
        x = inputs * std_s + mean_s
        if flip:
            x = x.flip(1)
        return (x - mean_t) / std_t

    def _normalisation_change(self):
        def norm(model):
            pre = model.data_preprocessor
            mean = getattr(pre, 'mean', None) if getattr(pre, '_enable_normalize', False) else None
            std = getattr(pre, 'std', None) if mean is not None else None
            # mmengine/mmdet: _channel_conversion; mmseg: channel_conversion;
            # mmpretrain ClsDataPreprocessor: to_rgb.
            rgb = any(bool(getattr(pre, a, False))
                      for a in ('_channel_conversion', 'channel_conversion', 'to_rgb'))
            return mean, std, rgb

        mean_s, std_s, rgb_s = norm(self.student)
        mean_t, std_t, rgb_t = norm(self.teacher)
        same = rgb_s == rgb_t and (mean_s is None) == (mean_t is None) and (
            mean_s is None or (torch.equal(mean_s, mean_t) and torch.equal(std_s, std_t)))
        if same:
            return None
        zeros = torch.zeros(3, 1, 1)
        ones = torch.ones(3, 1, 1)
        return (mean_s if mean_s is not None else zeros, std_s if std_s is not None else ones,
                rgb_s != rgb_t, mean_t if mean_t is not None else zeros,
                std_t if std_t is not None else ones)
