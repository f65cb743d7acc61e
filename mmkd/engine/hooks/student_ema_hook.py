"""EMA of the student of a distiller (RTMDet, YOLOX and other EMA recipes).

MMEngine's ``EMAHook`` averages ``runner.model``: for a distiller that is the
student *and* the frozen teacher, which it deep-copies (a second teacher in
memory) and averages for nothing. :class:`StudentEMAHook` averages
``distiller.student`` only; :func:`check_ema_hooks` refuses mmengine's hook on
a teacher-student distiller config before the runner is built.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Optional

from mmengine.hooks import EMAHook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import MODELS as MMENGINE_MODELS

from mmkd.registry import HOOKS

#: The attribute of a distiller that holds the averaged model.
STUDENT = 'student'


@HOOKS.register_module()
class StudentEMAHook(EMAHook):
    """MMEngine's ``EMAHook`` on the student of a distiller, not on the distiller.

    ``runner.model`` (unwrapped from DDP / FSDP wrappers) is a distiller with
    a ``student``: only the student is copied and averaged; the teacher is
    neither copied nor averaged. A model without ``student`` (a plain
    detector) is averaged whole, exactly as by ``EMAHook``.

    Everything ``EMAHook`` does is kept, for the student: validation and test
    run the student's EMA weights (swapped in before, the trained ones back
    after); a saved checkpoint holds the EMA weights in ``state_dict`` under
    the distiller's keys (``student.<name>``), so that ``tools/test.py`` and
    ``extract_student.py`` use them, and the trained (raw) weights plus the
    EMA's step counter in ``ema_state_dict`` (``module.<name>``, ``steps``);
    resuming swaps them back and continues the average exactly; a checkpoint
    without ``ema_state_dict`` (or ``load_from`` without resuming) starts the
    average from its ``state_dict``'s ``student.`` weights.

    Args:
        ema_type (str): The averaging model, as in ``EMAHook``: a
            ``BaseAveragedModel`` type such as ``'ExponentialMovingAverage'``,
            ``'MomentumAnnealingEMA'`` or mmdet's ``'ExpMomentumEMA'``
            (``'mmdet.ExpMomentumEMA'`` outside the mmdet scope).
            Defaults to 'ExponentialMovingAverage'.
        strict_load (bool): Whether the student's keys of a loaded checkpoint
            must match the averaged student's exactly. Defaults to False.
        begin_iter (int): The iteration from which the average is updated
            (before it, the EMA copies the student). Defaults to 0.
        begin_epoch (int): The epoch from which the average is updated; not
            together with ``begin_iter``. Defaults to 0.
        **kwargs: Arguments of the averaging model (``momentum``,
            ``interval``, ``update_buffers``, ``gamma``...), with its own
            defaults.
    """

    def __init__(self,
                 ema_type: str = 'ExponentialMovingAverage',
                 strict_load: bool = False,
                 begin_iter: int = 0,
                 begin_epoch: int = 0,
                 **kwargs) -> None:
        super().__init__(ema_type=ema_type, strict_load=strict_load, begin_iter=begin_iter,
                         begin_epoch=begin_epoch, **kwargs)
        #: ``'student.'`` when a distiller's student is averaged, ``''`` for a whole model.
        self.prefix = ''

    def before_run(self, runner) -> None:
        """Copies the student (or a model without one) into the averaging model."""
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        student = getattr(model, STUDENT, None)
        self.prefix = f'{STUDENT}.' if student is not None else ''
        self.src_model = student if student is not None else model
        self.ema_model = MMENGINE_MODELS.build(self.ema_cfg,
                                               default_args=dict(model=self.src_model))
        if self.prefix:
            print_log(f'StudentEMAHook: averaging {type(model).__name__}.{STUDENT} '
                      f'({type(self.src_model).__name__}) only; the teacher is not copied',
                      'current')

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Resumes the average (``ema_state_dict``), or starts it from the checkpoint's
        student weights (no ``ema_state_dict``, or loading without resuming)."""
        from mmengine.runner.checkpoint import load_state_dict
        if 'ema_state_dict' in checkpoint and runner._resume:
            # state_dict holds the EMA weights, ema_state_dict the raw ones: swap them
            # back, so that the runner loads the raw weights into the model.
            self._swap_ema_state_dict(checkpoint)
            self.ema_model.load_state_dict(checkpoint['ema_state_dict'],
                                           strict=self.strict_load)
            return
        if runner._resume:
            print_log('There is no `ema_state_dict` in checkpoint. `StudentEMAHook` will make '
                      'a copy of the student in `state_dict` as the initial EMA', 'current',
                      logging.WARNING)
        n = len(self.prefix)
        state = {k[n:]: v for k, v in checkpoint['state_dict'].items()
                 if k.startswith(self.prefix)}
        load_state_dict(self.ema_model.module, copy.deepcopy(state), strict=self.strict_load)

    def _swap_ema_state_dict(self, checkpoint: dict) -> None:
        """Swaps ``ema_state_dict['module.<k>']`` with ``state_dict[prefix + '<k>']``."""
        model_state = checkpoint['state_dict']
        ema_state = checkpoint['ema_state_dict']
        pairs = [(k, self.prefix + k[len('module.'):]) for k in ema_state
                 if k.startswith('module.')]
        missing = [name for _, name in pairs if name not in model_state]
        if missing:
            raise ValueError(
                f'StudentEMAHook: {len(missing)} averaged weight(s) have no entry in the '
                f'checkpoint\'s state_dict (e.g. {missing[:3]}): its ema_state_dict was not '
                f'written by StudentEMAHook for this model (mmengine\'s EMAHook on a distiller '
                f'writes "module.student.<name>" keys)')
        for k, name in pairs:
            ema_state[k], model_state[name] = model_state[name], ema_state[k]


def _registered(registry, kind: Any, default_scope: Optional[str]) -> Optional[type]:
    """The class ``kind`` (a class, or a registered name, scoped or in ``default_scope``)
    names in ``registry``, or None if it cannot be resolved."""
    if isinstance(kind, type):
        return kind
    if not isinstance(kind, str):
        return None
    names = [kind] if '.' in kind or not default_scope else [f'{default_scope}.{kind}', kind]
    for name in names:
        try:
            found = registry.get(name)
        except Exception:  # an unknown scope, a package that fails to import
            found = None
        if found is not None:
            return found
    return None


def check_ema_hooks(cfg) -> None:
    """Refuses mmengine's ``EMAHook`` (or a subclass, such as mmpretrain's) in
    ``cfg.custom_hooks`` when ``cfg.model`` is an mmkd teacher-student distiller.

    Such a hook averages the whole distiller, teacher included: a second copy
    of the frozen teacher in memory, averaged for nothing.
    :class:`StudentEMAHook` (a subclass, allowed) takes the same arguments and
    averages the student only. Nothing is built; a model or hook type that
    cannot be resolved is let through (the runner reports it).

    Raises:
        ValueError: Naming the hook's index and type, and the fix.
    """
    scope = cfg.get('default_scope')
    ema_hooks = []
    for i, hook in enumerate(cfg.get('custom_hooks') or []):
        kind = hook.get('type') if isinstance(hook, dict) else type(hook)
        hook_cls = _registered(HOOKS, kind, scope)
        if hook_cls is not None:
            is_ema = issubclass(hook_cls, EMAHook) and not issubclass(hook_cls, StudentEMAHook)
        else:
            is_ema = isinstance(kind, str) and kind.rsplit('.', 1)[-1] == 'EMAHook'
        if is_ema:
            ema_hooks.append((i, kind if isinstance(kind, str) else kind.__name__))
    if not ema_hooks:
        return
    from mmkd.models.distillers import TeacherStudentDistiller
    from mmkd.registry import MODELS
    model = cfg.get('model')
    model_cls = _registered(MODELS, model.get('type') if isinstance(model, dict) else None, scope)
    if model_cls is None or not issubclass(model_cls, TeacherStudentDistiller):
        return
    i, name = ema_hooks[0]
    raise ValueError(
        f'mmkd: custom_hooks[{i}]: {name} would average the whole distiller '
        f'{model_cls.__name__}, teacher included (a second copy of the frozen teacher in '
        f'memory, averaged for nothing); use dict(type=\'mmkd.StudentEMAHook\', ...) with '
        f'the same arguments: it averages the student only')
