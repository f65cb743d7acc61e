"""mmkd: logit knowledge distillation for the OpenMMLab 2.x stack.

Importing :mod:`mmkd` creates the ``mmkd`` registries (children of
MMEngine's); the modules that fill them are imported lazily by the registries'
``locations``, so ``import mmkd`` needs neither mmdet, mmseg nor mmpretrain.
"""
from .registry import HOOKS, MODELS
from .version import __version__

__all__ = ['__version__', 'MODELS', 'HOOKS']
