"""Where the configs and tools that mmkd ships are, in a checkout and in an installed wheel.

The package carries the repository's ``configs/`` and ``tools/`` as
``mmkd/.mim/configs`` and ``mmkd/.mim/tools`` (OpenMMLab's layout, in which
MMEngine resolves ``mmkd::<method>/<config>.py``). In a checkout and an
editable install they are symlinks to the repository's folders; a wheel copies
them. The functions below return the real folders (symlinks resolved): the
checkout's ``configs/`` and ``tools/``, or the installed package's copies, so
that nothing derives the repository from ``__file__`` (in a wheel that lands in
``site-packages``, which holds neither folder).
"""
import os.path as osp

__all__ = ['configs_dir', 'tools_dir', 'project_dir']


def _shipped(name: str) -> str:
    path = osp.realpath(osp.join(osp.dirname(osp.abspath(__file__)), '.mim', name))
    if not osp.isdir(path):
        raise FileNotFoundError(
            f'{path} is not a folder: this mmkd has no {name}/ (a checkout links '
            f'mmkd/.mim/{name} to {name}/; a wheel built from it copies the folder)')
    return path


def configs_dir() -> str:
    """The folder of mmkd's configs (``<method>/<model>_<teacher>_<student>_<dataset>.py``).

    The checkout's ``configs/``, or ``<site-packages>/mmkd/.mim/configs`` of a wheel.
    """
    return _shipped('configs')


def tools_dir() -> str:
    """The folder of mmkd's tools (``train.py``, ``test.py``, ``analysis_tools/``, ...).

    The checkout's ``tools/``, or ``<site-packages>/mmkd/.mim/tools`` of a wheel.
    """
    return _shipped('tools')


def project_dir() -> str:
    """The folder that holds ``configs/`` and ``tools/``.

    The checkout's root, or ``<site-packages>/mmkd/.mim`` of a wheel: paths
    written as in the README (``configs/kd/...``, ``tools/train.py``) resolve
    against it in both.
    """
    return osp.dirname(configs_dir())
