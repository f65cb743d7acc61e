"""The first distiller base: a student plus distillation losses.

:class:`StudentDistiller` is all that a distiller without a teacher needs
(:class:`~mmkd.models.distillers.LightSKD`); the teacher-student base
:class:`~mmkd.models.distillers.TeacherStudentDistiller` builds on it. It

* builds the student from a model dict (or a config file / ``pkg::path``),
  with the config's top-level data preprocessor if the dict has none;
* builds the distillation losses (``name -> loss config``, ``mmkd`` scope),
  each of which adds the key ``loss_<name>``, and scales them by
  ``distill_loss_scale`` (:class:`~mmkd.engine.DistillLossScheduleHook` sets it);
* runs ``predict`` and ``tensor`` modes on the student alone;
* decides which input each loss gets from what the loss class declares
  (``inputs``, ``requires_target``, ``sigmoid_capable`` / ``use_sigmoid``; see
  :class:`~mmkd.models.losses.BaseDistillLoss`) and what the distiller
  declares it can give (:attr:`accepted_inputs`, :attr:`sigmoid_classes`,
  :attr:`gives_target`), never from class names;
* refuses a distillation key that would overwrite one of the student's loss
  keys, at build time for the keys it can know (:meth:`student_loss_keys`)
  and in every training step for the rest (:meth:`add_distill_losses`).

Build hooks. Once the constructor of the concrete class has returned (so a
subclass ``__init__`` that adds options simply sets them after
``super().__init__``), these run once, in this order:

1. :meth:`check_models`: raise if the models cannot be distilled;
2. :meth:`check_losses`: for each loss, pick its input (:meth:`input_for`,
   with :meth:`loss_requirements`), check its keys against
   :meth:`student_loss_keys` / :meth:`distill_loss_keys`, let the loss check
   its settings against :meth:`num_classes_for` (``check_classes``), then call
   :meth:`check_loss` for task-specific checks.
"""
from __future__ import annotations

import copy
from abc import ABCMeta
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

from mmengine.config import Config, ConfigDict
from mmengine.model import BaseModel
from torch import Tensor, nn

from mmkd.registry import MODELS

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


def loss_module_keys(module: nn.Module, infix: str = '') -> Set[str]:
    """The loss keys of a head whose ``loss_<x>`` submodules give ``loss_<infix><x>``.

    mmdet's heads name their loss modules after their keys (``loss_cls``,
    ``loss_bbox``, ``loss_centerness``, ``loss_dfl``...); the RPN's become
    ``loss_rpn_cls`` / ``loss_rpn_bbox`` (``infix='rpn_'``).
    """
    return {f'loss_{infix}{name[5:]}' for name, _ in module.named_children()
            if name.startswith('loss_')}


class _BuildHooks(ABCMeta):
    """Runs the build hooks once the concrete class's constructor has returned."""

    def __call__(cls, *args, **kwargs):
        model = super().__call__(*args, **kwargs)
        model.check_models()
        model.check_losses()
        return model


class StudentDistiller(BaseModel, metaclass=_BuildHooks):
    """A student model plus distillation losses (no teacher).

    Subclasses implement :meth:`loss` and, as needed, the build hooks
    :meth:`check_models` and :meth:`check_loss`, and declare what they give
    the losses with :attr:`accepted_inputs`, :attr:`sigmoid_classes` and
    :attr:`gives_target`.

    Args:
        student (dict | str): The student model config (an mmdet / mmseg /
            mmpretrain model dict), or a config file / ``'pkg::path'``.
        distill_losses (dict, optional): ``name -> loss config``; each adds the
            key ``loss_<name>``. Types are looked up in the ``mmkd`` scope.
            Defaults to None (no loss).
        data_preprocessor (dict, optional): The config's top-level data
            preprocessor, which MMEngine's Runner passes to the model
            (mmpretrain and mmseg configs keep it outside ``model``). It is
            given to the student if the student dict has none. Defaults to None.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    #: Input kinds (see ``BaseDistillLoss.inputs``) this distiller gives its
    #: losses, preferred first.
    accepted_inputs: Tuple[str, ...] = ('logits', )
    #: Whether the distilled classes are independent sigmoids (a loss must then
    #: be ``sigmoid_capable`` and run with ``use_sigmoid=True``) or a softmax
    #: over exclusive classes (``use_sigmoid=True`` is refused).
    sigmoid_classes: bool = False
    #: Whether the distiller passes class labels to its losses as ``target``.
    gives_target: bool = True

    def __init__(self,
                 student: ModelCfg,
                 distill_losses: Optional[Dict[str, dict]] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        student_model = build_model_from_cfg(with_preprocessor(student, data_preprocessor))
        # The batch is normalised once, by the student's preprocessor.
        super().__init__(data_preprocessor=student_model.data_preprocessor, init_cfg=init_cfg)
        self.student = student_model
        self.distill_losses = build_distill_losses(distill_losses)
        #: Multiplies every distillation loss (warm-up / stop schedules).
        self.distill_loss_scale = 1.0
        #: ``name -> input kind`` of every loss, set by :meth:`check_losses`.
        self.input_of: Dict[str, str] = {}

    # ------------------------------------------------------------ build hooks
    def check_models(self) -> None:
        """Build hook 1: raises if the models cannot be distilled (task-specific)."""

    def check_losses(self) -> None:
        """Build hook 2: picks each loss's input and refuses losses that do not fit.

        For every loss: :meth:`input_for` (from the attributes the loss
        declares), the loss's ``check_classes`` with :meth:`num_classes_for`,
        a key check against :meth:`student_loss_keys`, then the task-specific
        :meth:`check_loss`.
        """
        reserved = self.student_loss_keys()
        for name, loss in self.distill_losses.items():
            self.input_of[name] = self.input_for(loss, name, **self.loss_requirements(name))
            num_classes = self.num_classes_for(name)
            if num_classes is not None and hasattr(loss, 'check_classes'):
                try:
                    loss.check_classes(num_classes)
                except ValueError as e:
                    raise ValueError(f'{type(self).__name__}: distill_losses.{name}: {e}') from e
            for key in self.distill_loss_keys(name):
                if key in reserved:
                    raise ValueError(
                        f'{type(self).__name__}: distill_losses.{name} would write "{key}" '
                        f'and overwrite the student\'s own loss of that name (its loss keys: '
                        f'{sorted(reserved)}); rename the distillation loss')
            self.check_loss(name, loss)

    def loss_requirements(self, name: str) -> dict:
        """Keyword arguments of :meth:`input_for` for loss ``name``: ``head`` (what
        is distilled, for messages) and, for a distiller with several kinds of
        losses, ``accepted`` / ``sigmoid`` / ``target``. Defaults to none."""
        return {}

    def num_classes_for(self, name: str) -> Optional[int]:
        """The number of classes of the logits loss ``name`` distils (for the losses'
        ``check_classes``); None where unknown. Defaults to None."""
        return None

    def check_loss(self, name: str, loss: nn.Module) -> None:
        """Task-specific checks of one loss (``ignore_index`` against the labels...)."""

    def student_loss_keys(self) -> Set[str]:
        """The keys of the student's (and the distiller's own) task losses known at build time."""
        return set()

    def distill_loss_keys(self, name: str) -> List[str]:
        """The keys distillation loss ``name`` adds (``loss_<name>``)."""
        return [f'loss_{name}']

    @classmethod
    def input_for(cls,
                  loss: nn.Module,
                  name: str = 'loss',
                  accepted: Optional[Sequence[str]] = None,
                  sigmoid: Optional[bool] = None,
                  target: Optional[bool] = None,
                  head: str = 'these logits') -> str:
        """The input kind this distiller gives ``loss``, from its declared capabilities.

        Args:
            loss (nn.Module): A distillation loss declaring ``inputs``,
                ``requires_target``, ``sigmoid_capable`` and ``use_sigmoid``.
            name (str): Its name in ``distill_losses`` (for messages).
            accepted, sigmoid, target: Override :attr:`accepted_inputs`,
                :attr:`sigmoid_classes` and :attr:`gives_target` (a distiller
                with several kinds of losses, e.g. mask losses).
            head (str): What is distilled, for messages.

        Raises:
            TypeError: If the loss declares no ``inputs``.
            ValueError: If it does not fit, naming the loss and the reason.
        """
        accepted = tuple(cls.accepted_inputs if accepted is None else accepted)
        sigmoid = cls.sigmoid_classes if sigmoid is None else sigmoid
        target = cls.gives_target if target is None else target
        kind = type(loss).__name__
        where = f'{cls.__name__}: loss {name!r} ({kind}) cannot distil {head}'
        inputs = getattr(loss, 'inputs', None)
        if not inputs:
            raise TypeError(f'{where}: it does not declare what it consumes (`inputs`); mmkd '
                            'losses subclass mmkd.models.losses.BaseDistillLoss, which does')
        usable = [k for k in accepted if k in inputs]
        if not usable:
            raise ValueError(f'{where}: it consumes {tuple(inputs)}, this distiller gives '
                             f'{accepted}')
        if sigmoid and not getattr(loss, 'sigmoid_capable', False):
            raise ValueError(f'{where}: {kind} is defined only for a softmax over mutually '
                             'exclusive classes; use a sigmoid-capable loss (KDLoss, DISTLoss) '
                             'with use_sigmoid=True')
        if sigmoid != bool(getattr(loss, 'use_sigmoid', False)):
            raise ValueError(f'{where}: set use_sigmoid={sigmoid} (the classes are '
                             f'{"independent sigmoids" if sigmoid else "a softmax"})')
        if getattr(loss, 'requires_target', False) and not target:
            raise ValueError(f'{where}: it needs class labels (`target`), which are not '
                             'available here')
        return usable[0]

    # ---------------------------------------------------------------- running
    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        """Student losses plus ``loss_<name>`` distillation losses."""
        raise NotImplementedError

    def add_distill_losses(self, losses: Dict[str, Tensor],
                           distill: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """``losses`` updated with the (scaled) distillation losses, refusing overwrites.

        Catches, before the first optimizer step, a key that the build-time
        check could not know (a head whose keys do not follow its modules).
        """
        clash = sorted(set(losses) & set(distill))
        if clash:
            raise ValueError(f'{type(self).__name__}: distillation loss key(s) {clash} would '
                             f'overwrite the student\'s own loss(es) of the same name (student '
                             f'keys: {sorted(losses)}); rename the distillation loss')
        scale = self.distill_loss_scale
        losses.update({k: v * scale if scale != 1.0 else v for k, v in distill.items()})
        return losses

    def forward(self, inputs: Tensor, data_samples: Optional[list] = None, mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode in ('predict', 'tensor'):
            return self.student(inputs, data_samples, mode=mode)
        raise RuntimeError(f'Invalid mode "{mode}". Only supports loss, predict and tensor mode')

