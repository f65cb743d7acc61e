"""mmkd: logit knowledge distillation for the OpenMMLab 2.x stack.

Importing :mod:`mmkd` creates the ``mmkd`` registries (children of
MMEngine's); the modules that fill them are imported lazily by the registries'
``locations``, so ``import mmkd`` needs neither mmdet, mmseg nor mmpretrain.
It also lets configs inherit mmkd's configs by package
(``_base_ = ['mmkd::rekd/faster-rcnn_r101_r50_coco.py']``).
"""
from .registry import HOOKS, MODELS
from .version import __version__


def _register_config_package() -> None:
    """Makes MMEngine resolve ``mmkd::<method>/<config>.py`` config paths.

    MMEngine resolves ``pkg::path`` only for the modules of its
    ``MODULE2PACKAGE`` table, as ``<package folder>/.mim/configs/path``
    (``mmkd/.mim/configs`` links to the repository's ``configs/``; wheels copy
    it). The value given is an importable module of mmkd rather than the
    distribution name: MMEngine then finds the package folder with
    ``importlib`` (``find_spec``), which is right for wheels and editable
    installs alike, whereas the distribution's location of an editable install
    is ``site-packages``, which has no ``mmkd`` folder. The config is parsed
    before its ``custom_imports`` are: mmkd must be imported first (mmkd's
    ``tools/train.py`` and ``tools/test.py`` do).
    """
    from mmengine.config.utils import MODULE2PACKAGE
    MODULE2PACKAGE.setdefault('mmkd', 'mmkd.registry')


_register_config_package()

__all__ = ['__version__', 'MODELS', 'HOOKS']
