"""Warm-up and stop schedule of the distillation-loss weights."""
from __future__ import annotations

from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

from mmkd.registry import HOOKS


def loop_counts_epochs(loop_type: type) -> Optional[bool]:
    """Whether a train loop class counts epochs (True), iterations (False) or neither (None).

    mmengine's ``EpochBasedTrainLoop`` (and subclasses) runs epochs; its
    ``IterBasedTrainLoop`` runs one endless "epoch" of ``max_iters`` iterations
    (its ``max_epochs`` is always 1), so only the class tells them apart.
    """
    if issubclass(loop_type, EpochBasedTrainLoop):
        return True
    if issubclass(loop_type, IterBasedTrainLoop):
        return False
    return None


@HOOKS.register_module()
class DistillLossScheduleHook(Hook):
    """Scales every distillation loss by a linear warm-up, then stops it.

    Before each training iteration it sets the distiller's
    ``distill_loss_scale`` to::

        min(progress / warmup, 1)   if warmup > 0 else 1
        0                           once progress >= stop (if stop is set)

    where ``progress`` is the 1-based current epoch when counting epochs (the
    recipe of DKD, RLD and ReKD: ``min(epoch / warmup, 1)``, 20 epochs on
    CIFAR-100, 1 on ImageNet) or the 1-based current iteration otherwise. The
    scale is recomputed from the runner's counters every iteration, so a
    resumed run continues the schedule exactly.

    What is counted follows the runner's train loop unless ``by_epoch`` says
    otherwise: epochs under ``EpochBasedTrainLoop`` (mmpretrain, mmdet),
    iterations under ``IterBasedTrainLoop`` (mmseg). ``by_epoch=True`` under an
    iteration-based loop is refused in ``before_train``: that loop's epoch
    never advances, so the warm-up would stay at its first value for the whole
    run. ``by_epoch=False`` under an epoch-based loop counts iterations.

    Args:
        warmup (int): Warm-up length in epochs or iterations; 0 disables it.
            Defaults to 0.
        stop (int, optional): From this (1-based) epoch or iteration on the
            distillation losses are 0. Defaults to None (never).
        by_epoch (bool, optional): Count epochs (True) or iterations (False).
            Defaults to None (follow the runner's train loop).
    """

    priority = 'NORMAL'

    def __init__(self, warmup: int = 0, stop: Optional[int] = None,
                 by_epoch: Optional[bool] = None) -> None:
        if warmup < 0:
            raise ValueError(f'warmup must be >= 0, got {warmup}')
        if stop is not None and stop < 1:
            raise ValueError(f'stop must be >= 1 or None, got {stop}')
        if by_epoch not in (None, True, False):
            raise ValueError(f'by_epoch must be True, False or None (follow the train loop), '
                             f'got {by_epoch!r}')
        self.warmup = warmup
        self.stop = stop
        self.by_epoch = by_epoch
        #: What is counted in this run (``by_epoch`` resolved against the train loop).
        self.counts_epochs: Optional[bool] = by_epoch

    def resolve(self, loop_type: type) -> bool:
        """Whether this hook counts epochs under a train loop of class ``loop_type``.

        Raises:
            ValueError: ``by_epoch=True`` under an iteration-based loop, or
                ``by_epoch=None`` under a loop that is neither epoch- nor
                iteration-based.
        """
        loop_epochs = loop_counts_epochs(loop_type)
        name = loop_type.__name__
        if self.by_epoch is None:
            if loop_epochs is None:
                raise ValueError(
                    f'DistillLossScheduleHook cannot tell whether the train loop {name} counts '
                    f'epochs or iterations (it is neither an EpochBasedTrainLoop nor an '
                    f'IterBasedTrainLoop): set by_epoch=True or by_epoch=False in the hook.')
            return loop_epochs
        if self.by_epoch and loop_epochs is False:
            raise ValueError(
                f'DistillLossScheduleHook(by_epoch=True) counts epochs, but the train loop is '
                f'{name}, whose epoch never advances: the warm-up would stay at its first '
                f'value for the whole run. Remove by_epoch (the hook then follows the loop and '
                f'counts iterations) or set by_epoch=False, and give warmup/stop in '
                f'iterations.')
        return self.by_epoch

    def before_train(self, runner) -> None:
        self.counts_epochs = self.resolve(type(runner.train_loop))

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
        if self.counts_epochs is None:  # called outside a runner's train()
            self.counts_epochs = self.resolve(type(runner.train_loop))
        progress = runner.epoch + 1 if self.counts_epochs else runner.iter + 1
        model.distill_loss_scale = self.scale(progress)
