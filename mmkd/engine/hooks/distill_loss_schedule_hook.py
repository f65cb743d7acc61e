"""Warm-up and stop schedule of the distillation-loss weights."""
from __future__ import annotations

from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmkd.registry import HOOKS


@HOOKS.register_module()
class DistillLossScheduleHook(Hook):
    """Scales every distillation loss by a linear warm-up, then stops it.

    Before each training iteration it sets the distiller's
    ``distill_loss_scale`` to::

        min(progress / warmup, 1)   if warmup > 0 else 1
        0                           once progress >= stop (if stop is set)

    where ``progress`` is the 1-based current epoch when ``by_epoch`` (the
    recipe of DKD, RLD and ReKD: ``min(epoch / warmup, 1)``, 20 epochs on
    CIFAR-100, 1 on ImageNet) or the 1-based current iteration otherwise. The
    scale is recomputed from the runner's counters every iteration, so a
    resumed run continues the schedule exactly.

    Args:
        warmup (int): Warm-up length in epochs or iterations; 0 disables it.
            Defaults to 0.
        stop (int, optional): From this (1-based) epoch or iteration on the
            distillation losses are 0. Defaults to None (never).
        by_epoch (bool): Count epochs (True) or iterations. Defaults to True.
    """

    priority = 'NORMAL'

    def __init__(self, warmup: int = 0, stop: Optional[int] = None,
                 by_epoch: bool = True) -> None:
        if warmup < 0:
            raise ValueError(f'warmup must be >= 0, got {warmup}')
        if stop is not None and stop < 1:
            raise ValueError(f'stop must be >= 1 or None, got {stop}')
        self.warmup = warmup
        self.stop = stop
        self.by_epoch = by_epoch

    def scale(self, progress: int) -> float:
        """The loss scale at 1-based epoch or iteration ``progress``."""
        if self.stop is not None and progress >= self.stop:
            return 0.0
        if self.warmup == 0:
            return 1.0
        return min(progress / self.warmup, 1.0)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'distill_loss_scale'):
            raise TypeError(f'DistillLossScheduleHook needs an mmkd distiller, got '
                            f'{type(model).__name__}')
        progress = runner.epoch + 1 if self.by_epoch else runner.iter + 1
        model.distill_loss_scale = self.scale(progress)
