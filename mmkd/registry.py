"""Registries of mmkd, children of MMEngine's root registries.

Everything mmkd registers lives in the ``mmkd`` scope. Configs reach it with
``type='mmkd.KDLoss'`` (or ``_scope_='mmkd'``) after
``custom_imports=dict(imports=['mmkd'])``; the ``locations`` below make the
registries import the modules that fill them, so no import side effect has to
be remembered by the user.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

#: Losses, distillers and auxiliary heads.
MODELS = Registry('model', parent=MMENGINE_MODELS, locations=['mmkd.models'])
#: Training hooks (the distillation-loss weight schedule).
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, locations=['mmkd.engine'])

__all__ = ['MODELS', 'HOOKS']
