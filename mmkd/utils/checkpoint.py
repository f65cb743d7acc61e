"""Checkpoints are data, not programs: every load is ``torch.load(weights_only=True)``.

A runner checkpoint of MMEngine holds more than tensors (the message hub's
``HistoryBuffer``, numpy arrays and scalars), so torch's plain
``weights_only=True`` refuses it, and unpickling it with ``weights_only=False``
runs whatever code the file names. :func:`safe_load` takes the middle road:
``torch.load(weights_only=True)`` with :data:`ALLOWLIST`, exactly the types that
OpenMMLab runner and model-zoo checkpoints hold, allowed for that one call only
(torch's allowlist is saved and restored around it: nothing stays allowed in
the process afterwards). Any other type is refused with
:class:`UnsafeCheckpointError`, which names the file, the type and the opt-in;
a truncated or non-checkpoint file gives :class:`CheckpointReadError`, naming
the file.

The one opt-in for trusted legacy files is the environment variable
``MMKD_TRUST_CHECKPOINTS=1`` (mmkd's tools set it for ``--trust-checkpoint``).
With it, a file that the safe load refuses is loaded with
``weights_only=False``, and a warning names it. It is never on by default.

Where it applies:

* the distillers' ``teacher_ckpt`` (a path or an http(s) URL), in any process
  (:func:`load_checkpoint_file`, called by ``load_teacher_checkpoint``);
* ``tools/model_converters/extract_student.py``;
* in ``tools/train.py`` and ``tools/test.py``, every load that goes through
  MMEngine's ``CheckpointLoader``: ``--resume``, ``load_from``, test.py's
  CHECKPOINT and the pretrained weights of ``init_cfg=dict(type='Pretrained')``.
  :func:`register_checkpoint_loader` registers, through MMEngine's public
  ``CheckpointLoader.register_scheme``, mmkd's loaders for local paths,
  ``http(s)://``, ``torchvision://`` (``modelzoo://``), ``open-mmlab://``
  (``openmmlab://``) and ``mmcls://``. MMEngine's scheme table is
  process-wide; after the registration every such load in the process is
  *safer* than MMEngine's own (whose http loader passes
  ``weights_only=False``), and allows nothing beyond :data:`ALLOWLIST`.
  ``pavi://`` and ``s3://`` keep MMEngine's loaders, which call ``torch.load``
  with torch's own default (``weights_only=True``, no allowlist).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import os.path as osp
import pickle
import re
import zipfile
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import (
    CheckpointLoader,
    get_deprecated_model_names,
    get_external_models,
    get_mmcls_models,
    get_torchvision_models,
)

#: The environment variable of the opt-in for trusted legacy checkpoints.
TRUST_ENV = 'MMKD_TRUST_CHECKPOINTS'
#: The flag of mmkd's tools that sets :data:`TRUST_ENV`.
TRUST_FLAG = '--trust-checkpoint'

MapLocation = Optional[Union[str, torch.device, Callable, Dict[str, str]]]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a type outside :data:`ALLOWLIST` (and no opt-in was given)."""


class CheckpointReadError(RuntimeError):
    """A file is not a readable PyTorch checkpoint (truncated, empty, not written by torch.save)."""


# ---------------------------------------------------------------------------
# The allowlist
# ---------------------------------------------------------------------------

#: ``getattr(cls, name)`` calls a checkpoint may make: pickle (protocol 2, as
#: torch.save writes) stores a function defined in a class body as
#: ``getattr(<class>, '<name>')``. ``HistoryBuffer.__getstate__`` stores its
#: statistics methods that way (``message_hub.log_scalars.*`` of every runner
#: checkpoint).
_GETATTR_ALLOWED: Dict[type, Tuple[str, ...]] = {
    HistoryBuffer: ('min', 'max', 'current', 'mean'),
}


def _restricted_getattr(obj: Any, name: str) -> Any:
    """``builtins.getattr`` for checkpoints: only the pairs of :data:`_GETATTR_ALLOWED`."""
    for cls, names in _GETATTR_ALLOWED.items():
        if obj is cls and name in names:
            return getattr(cls, name)
    what = f'{obj.__module__}.{obj.__qualname__}' if isinstance(obj, type) else type(obj).__name__
    raise pickle.UnpicklingError(
        f'Unsupported global: GLOBAL {what}.{name} (builtins.getattr) was not an allowed global')


def _numpy_multiarray() -> Any:
    """numpy's ``multiarray`` module: ``numpy._core`` in numpy 2, ``numpy.core`` before."""
    if int(np.__version__.split('.')[0]) >= 2:
        from numpy._core import multiarray
    else:
        from numpy.core import multiarray
    return multiarray


#: The numpy dtypes a checkpoint may hold (arrays and scalars): booleans,
#: signed and unsigned integers, floats, complex numbers, str and bytes.
#: Object, void and datetime dtypes are not allowed.
_NUMPY_DTYPE_CODES = '?bhilqBHILQefdgFDGSU'


def _build_allowlist() -> List[Union[Callable, Tuple[Callable, str]]]:
    multiarray = _numpy_multiarray()
    entries: List[Union[Callable, Tuple[Callable, str]]] = [
        # MMEngine's message hub: checkpoint['message_hub']['log_scalars'][key] of every
        # runner checkpoint (mmpretrain, mmdet, mmseg, mmkd distillers alike), and of
        # model-zoo checkpoints published with mmseg's publish_model.py (it drops only
        # the optimizer).
        HistoryBuffer,
        # ... whose pickled state names its statistics methods through getattr
        # (restricted to those methods: see _GETATTR_ALLOWED).
        (_restricted_getattr, 'builtins.getattr'),
        # numpy arrays: HistoryBuffer._log_history / _count_history (float64, int64).
        np.ndarray,
        # numpy dtypes, rebuilt by numpy.dtype('f8', ...) for every array and scalar.
        np.dtype,
    ]
    # The dtype objects' own classes (numpy.dtypes.Float64DType, Int64DType, ...):
    # the unpickler rebuilds a dtype, then sets its state, which needs its class.
    entries += sorted({type(np.dtype(code)) for code in _NUMPY_DTYPE_CODES}, key=str)
    # The functions that rebuild numpy arrays and scalars, under the names numpy 1.x
    # (numpy.core) and numpy 2.x (numpy._core) write, mapped to the installed
    # numpy's functions: checkpoints written with either numpy load with both.
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        # arrays (the HistoryBuffer's)
        entries.append((multiarray._reconstruct, f'{module}._reconstruct'))
        # scalars: message_hub.runtime_info['eta'] (numpy.float64) of runner checkpoints;
        # numpy values in meta (e.g. an evaluation hook's best score)
        entries.append((multiarray.scalar, f'{module}.scalar'))
    # Allowed by torch itself and not repeated here: tensors, parameters, torch.Size,
    # OrderedDict (state_dict), collections.Counter (MultiStepLR's milestones in
    # checkpoint['param_schedulers']), set, complex, bytes (_codecs.encode).
    return entries


#: Exactly what :func:`safe_load` allows beyond torch's own weights-only types
#: (the origin of each entry is commented in :func:`_build_allowlist`).
ALLOWLIST = _build_allowlist()


def _allowed_name(entry: Union[Callable, Tuple[Callable, str]]) -> str:
    if isinstance(entry, tuple):
        return entry[1]
    return f'{entry.__module__}.{entry.__qualname__}'


#: The global names in :data:`ALLOWLIST`.
ALLOWED_GLOBALS = frozenset(_allowed_name(e) for e in ALLOWLIST)


@contextlib.contextmanager
def allowlisted() -> Iterator[None]:
    """Allows :data:`ALLOWLIST` for ``torch.load(weights_only=True)`` inside the block.

    torch's own allowlist (``torch.serialization.get_safe_globals()``, which the
    user may have set) is restored exactly on exit.
    """
    before = torch.serialization.get_safe_globals()
    torch.serialization.add_safe_globals(ALLOWLIST)
    try:
        yield
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def trust_checkpoints() -> bool:
    """Whether the opt-in for trusted legacy checkpoints (``MMKD_TRUST_CHECKPOINTS=1``) is on."""
    return os.environ.get(TRUST_ENV, '').strip().lower() in ('1', 'true', 'yes', 'on')


def enable_trust(enabled: bool = True) -> None:
    """Turns the opt-in on for this process and its children (the tools' ``--trust-checkpoint``)."""
    if enabled:
        os.environ[TRUST_ENV] = '1'


def add_trust_argument(parser: Any) -> None:
    """Adds the tools' ``--trust-checkpoint`` flag to an ``argparse`` parser."""
    parser.add_argument(
        TRUST_FLAG, action='store_true',
        help=f'load checkpoints that hold types outside mmkd\'s allowlist with '
        f'weights_only=False (as {TRUST_ENV}=1): only for files you trust, unpickling '
        'them can run code')


#: The parts of torch's weights-only errors that name a refused global or type.
_REFUSED_PATTERNS = (
    re.compile(r'Unsupported global: GLOBAL (\S+)'),
    re.compile(r'unsupported GLOBAL (\S+) whose module'),
    re.compile(r'Can only build .*? but got <class \'([^\']+)\'>'),
    re.compile(r'Can only create new object .*? but got <class \'([^\']+)\'>'),
    re.compile(r'Trying to call reduce for unrecognized function (.+?)(?: which belongs|\n|$)'),
)


def _refused_types(message: str, f: Any) -> List[str]:
    """The types a weights-only load refused: from torch's message and a scan of the file."""
    found: List[str] = []
    for pattern in _REFUSED_PATTERNS:
        found += [m.strip().rstrip('.') for m in pattern.findall(message)]
    try:
        if hasattr(f, 'seek'):
            f.seek(0)
        scanned = torch.serialization.get_unsafe_globals_in_checkpoint(f)
    except Exception:  # legacy (non-zip) format: the message alone names it
        scanned = []
    found += sorted(g for g in scanned if g not in ALLOWED_GLOBALS)
    return list(dict.fromkeys(found))  # unique, in order


def _name(f: Any, name: Optional[str]) -> str:
    if name is not None:
        return name
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    return getattr(f, 'name', repr(f))


def _trust_hint() -> str:
    return (f'If you trust this file, opt in with the environment variable {TRUST_ENV}=1 '
            f'(or the {TRUST_FLAG} flag of mmkd\'s tools) to load it with weights_only=False.')


def safe_load(f: Any, map_location: MapLocation = None, what: str = 'checkpoint',
              name: Optional[str] = None, trust: Optional[bool] = None) -> Any:
    """``torch.load(f, weights_only=True)`` with :data:`ALLOWLIST` allowed for this call.

    Args:
        f: A path or a binary file object.
        map_location: As :func:`torch.load`.
        what (str): What the file is, for error messages (``'teacher_ckpt'``,
            ``'checkpoint'``).
        name (str, optional): How to name the file in messages (defaults to
            the path, e.g. a URL and its cached file).
        trust (bool, optional): Load a refused file with ``weights_only=False``
            (with a warning). Defaults to the opt-in :func:`trust_checkpoints`.

    Raises:
        UnsafeCheckpointError: The file holds a type outside :data:`ALLOWLIST`;
            the message names the file, the types and the opt-in.
        CheckpointReadError: The file is truncated, empty or not a checkpoint.
    """
    label = f'{what} {_name(f, name)!r}'
    try:
        with allowlisted():
            return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        refused = _refused_types(str(e), f)
        if not refused:  # e.g. 'Unsupported operand': not a torch.save file at all
            raise CheckpointReadError(
                f'{label} is not a readable PyTorch checkpoint (truncated, or not written by '
                f'torch.save?): {_short(e)}') from None
        if trust_checkpoints() if trust is None else trust:
            print_log(f'{label} holds {", ".join(refused)}, outside mmkd\'s checkpoint '
                      f'allowlist: loading it with weights_only=False because {TRUST_ENV}=1 '
                      '(unpickling a file can run code: only for files you trust)',
                      logger='current', level=logging.WARNING)
            if hasattr(f, 'seek'):
                f.seek(0)
            return torch.load(f, map_location=map_location, weights_only=False)
        raise UnsafeCheckpointError(
            f'{label} holds {", ".join(refused)}, which mmkd does not unpickle: checkpoints '
            'are loaded with torch.load(weights_only=True) and only the types that '
            'OpenMMLab checkpoints hold (tensors, numpy arrays and scalars, MMEngine\'s '
            'HistoryBuffer) are allowed, because unpickling any other type can run '
            f'arbitrary code. {_trust_hint()}') from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
        if isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        if isinstance(e, RuntimeError) and not _is_read_error(str(e)):
            raise  # e.g. a CUDA tensor without CUDA: torch's own message is the right one
        raise CheckpointReadError(
            f'{label} is not a readable PyTorch checkpoint (truncated, or not written by '
            f'torch.save?): {_short(e)}') from None


def _is_read_error(message: str) -> bool:
    return any(s in message for s in ('PytorchStreamReader', 'zip archive', 'magic number',
                                      'corrupted', 'unexpected EOF', 'Invalid magic'))


def _short(e: BaseException) -> str:
    """torch's message without its weights_only boilerplate."""
    text = str(e)
    if not text.strip() or isinstance(e, KeyError):
        head = f'{type(e).__name__} {text.strip()}'.strip()
        return f'{head}: the file ends early or is not a torch.save file'
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1]
    text = ' '.join(text.split('Check the documentation of torch.load')[0].split())
    if len(text) > 300 and '. ' in text[:300]:  # whole sentences
        text = text[:300].rsplit('. ', 1)[0] + '.'
    return text


def load_from_local_file(filename: str, map_location: MapLocation = None,
                         what: str = 'checkpoint') -> Any:
    """Loads a local checkpoint with :func:`safe_load` (MMEngine's ``''`` scheme under mmkd)."""
    filename = osp.expanduser(filename)
    if osp.isdir(filename):
        raise IsADirectoryError(f'{what} {filename!r} is a directory, not a checkpoint file')
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{what} {filename!r} does not exist')
    return safe_load(filename, map_location=map_location, what=what)


def _cache_dir(model_dir: Optional[str]) -> str:
    # Where MMEngine's http loader keeps downloads (torch.hub's default): shared with it.
    return model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')


def download_checkpoint(url: str, model_dir: Optional[str] = None,
                        progress: bool = False) -> str:
    """Downloads ``url`` into the checkpoint cache once (rank 0 first); returns the local file.

    The cache is torch.hub's ``<TORCH_HOME>/hub/checkpoints``, as MMEngine's
    http loader uses; ``torch.hub.download_url_to_file`` writes a temporary
    file and moves it into place, so an interrupted download leaves nothing.
    """
    cached = osp.join(_cache_dir(model_dir), osp.basename(urlparse(url).path) or 'checkpoint')

    def fetch() -> None:
        if not osp.exists(cached):
            os.makedirs(osp.dirname(cached), exist_ok=True)
            print_log(f'Downloading {url} to {cached}', logger='current')
            torch.hub.download_url_to_file(url, cached, None, progress=progress)

    rank, world_size = get_dist_info()
    if rank == 0:
        fetch()
    if world_size > 1:
        barrier()
        if rank > 0:
            fetch()  # another node's cache
    return cached


def load_from_http(url: str, map_location: MapLocation = None, model_dir: Optional[str] = None,
                   progress: bool = False, what: str = 'checkpoint') -> Any:
    """Downloads (or finds in the cache) and :func:`safe_load`\\ s an http(s) checkpoint."""
    cached = download_checkpoint(url, model_dir, progress)
    name = f'{url} (cached as {cached})'
    if zipfile.is_zipfile(cached):
        with zipfile.ZipFile(cached) as z:
            members = z.infolist()
        if len(members) == 1 and not members[0].is_dir():
            # torch < 1.6 checkpoints zipped by hand (torch.hub's "legacy zip format")
            with zipfile.ZipFile(cached) as z:
                data = io.BytesIO(z.read(members[0]))
            return safe_load(data, map_location=map_location, what=what, name=name)
    return safe_load(cached, map_location=map_location, what=what, name=name)


def load_from_torchvision(filename: str, map_location: MapLocation = None,
                          what: str = 'checkpoint') -> Any:
    """``torchvision://NAME`` (and ``modelzoo://NAME``): torchvision's URL, loaded safely."""
    name = filename.split('://', 1)[1]
    return load_from_http(get_torchvision_models()[name], map_location=map_location, what=what)


def _mmengine_home() -> str:
    # MMEngine's cache folder (mmengine.runner.checkpoint: MMENGINE_HOME, else
    # $XDG_CACHE_HOME/mmengine, else ~/.cache/mmengine).
    return osp.expanduser(os.getenv(
        'MMENGINE_HOME', osp.join(os.getenv('XDG_CACHE_HOME', '~/.cache'), 'mmengine')))


def load_from_openmmlab(filename: str, map_location: MapLocation = None,
                        what: str = 'checkpoint') -> Any:
    """``open-mmlab://NAME`` (and ``openmmlab://NAME``): MMEngine's URL table, loaded safely."""
    name = filename.split('://', 1)[1]
    name = get_deprecated_model_names().get(name, name)
    url = get_external_models()[name]
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location=map_location, what=what)
    return load_from_local_file(osp.join(_mmengine_home(), url), map_location=map_location,
                                what=what)


def load_from_mmcls(filename: str, map_location: MapLocation = None,
                    what: str = 'checkpoint') -> Any:
    """``mmcls://NAME``: the backbone weights of an mmcls model-zoo checkpoint, loaded safely."""
    ckpt = load_from_http(get_mmcls_models()[filename[len('mmcls://'):]],
                          map_location=map_location, what=what)
    state = ckpt.get('state_dict', ckpt)
    # as MMEngine's load_from_mmcls: keep the backbone, without its prefix
    return dict(state_dict=type(state)((k[9:], v) for k, v in state.items()
                                       if k.startswith('backbone.')))


def load_checkpoint_file(filename: str, map_location: MapLocation = 'cpu',
                         what: str = 'checkpoint') -> Any:
    """Loads a checkpoint from a path or a URL safely, with or without the registration.

    ``http(s)://``, ``torchvision://``, ``open-mmlab://`` and ``mmcls://`` are
    downloaded into the cache; anything else is a local path.
    """
    for prefixes, loader in _SCHEMES:
        if filename.startswith(prefixes):
            return loader(filename, map_location, what=what)
    return load_from_local_file(filename, map_location=map_location, what=what)


#: The MMEngine schemes mmkd's loaders replace.
_SCHEMES: List[Tuple[Tuple[str, ...], Callable]] = [
    (('http://', 'https://'), load_from_http),
    (('torchvision://', 'modelzoo://'), load_from_torchvision),
    (('open-mmlab://', 'openmmlab://'), load_from_openmmlab),
    (('mmcls://', ), load_from_mmcls),
]


def register_checkpoint_loader() -> None:
    """Makes MMEngine load checkpoints with :func:`safe_load` in this process.

    Registers mmkd's loaders for local paths and the schemes of
    :data:`_SCHEMES` through MMEngine's public ``CheckpointLoader.register_scheme``:
    ``--resume``, ``load_from``, ``Runner.load_checkpoint`` and pretrained
    ``init_cfg`` then read runner checkpoints (numpy values, message hub) and
    refuse anything else. Called by ``tools/train.py`` and ``tools/test.py``;
    call it in your own scripts before ``runner.train()``. Idempotent.
    """
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_file, force=True)
    for prefixes, loader in _SCHEMES:
        CheckpointLoader.register_scheme(prefixes=prefixes, loader=loader, force=True)
