"""Loading the checkpoints that MMEngine's runner writes, under torch >= 2.6.

torch 2.6 made ``torch.load(weights_only=True)`` the default. MMEngine 0.10.x
calls ``torch.load`` without that argument, and a runner checkpoint holds more
than tensors (the message hub's ``HistoryBuffer``, numpy arrays and dtypes,
the config text), so ``--resume`` and ``load_from`` fail with
``UnpicklingError: Weights only load failed``.

:func:`register_checkpoint_loader` registers, through MMEngine's public
``CheckpointLoader.register_scheme``, a loader for local files that passes
``weights_only=False``: the behaviour of torch < 2.6. Like any pickle, load
only checkpoints you trust. URLs keep MMEngine's loader (and torch's safe
default): published model-zoo checkpoints hold tensors only.
"""
from __future__ import annotations

import os.path as osp
from typing import Any, Optional, Union

import torch
from mmengine.runner.checkpoint import CheckpointLoader


def load_from_local_file(filename: str,
                         map_location: Optional[Union[str, torch.device]] = None) -> Any:
    """Loads a local checkpoint, including the non-tensor objects MMEngine stores."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    return torch.load(filename, map_location=map_location, weights_only=False)


def register_checkpoint_loader() -> None:
    """Makes MMEngine load local runner checkpoints with ``weights_only=False``.

    Called by ``tools/train.py`` and ``tools/test.py``; call it in your own
    scripts before ``runner.train()`` if they resume from checkpoints.
    Idempotent.
    """
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_file, force=True)
