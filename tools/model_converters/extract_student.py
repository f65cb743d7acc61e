"""Turn an mmkd distillation checkpoint into a plain student checkpoint.

The result holds only the student's weights (``student.`` prefix removed; the
teacher and self-distillation auxiliary heads dropped) and loads with the
student's own config in mmdet's / mmseg's / mmpretrain's ``tools/test.py``::

    python tools/model_converters/extract_student.py work_dirs/x/epoch_12.pth student.pth

A checkpoint written with an EMA hook (``mmkd.StudentEMAHook``, or
mmengine's ``EMAHook`` around a whole distiller) holds the EMA weights in
``state_dict`` and the trained (raw) ones in ``ema_state_dict`` (the hooks
swap them when saving): the student written is the EMA one, unless
``--no-ema`` asks for the raw one. The output's ``meta['mmkd_student_weights']``
says which (``'ema'`` or ``'raw'``).

The source is read with ``torch.load(weights_only=True)`` and mmkd's allowlist
(:mod:`mmkd.utils.checkpoint`): a file holding other types is refused unless
``--trust-checkpoint`` (or ``MMKD_TRUST_CHECKPOINTS=1``) says it is trusted.
The output holds tensors and plain values only.
"""
import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
from mmkd.utils import add_trust_argument, enable_trust, load_checkpoint_file  # noqa: E402


def _raw_student(ema_state: dict, keys: list) -> dict:
    """The raw weights of the student's ``keys`` in an ``ema_state_dict``: ``module.<k>``
    (``StudentEMAHook``) or ``module.student.<k>`` (``EMAHook`` around a distiller)."""
    for prefix in ('module.student.', 'module.'):
        if all(prefix + k in ema_state for k in keys):
            return {k: ema_state[prefix + k] for k in keys}
    raise ValueError('the checkpoint\'s ema_state_dict does not hold the student\'s raw weights '
                     '(neither "module.<name>" nor "module.student.<name>" for every student '
                     'weight); extract without --no-ema')


def extract_student(ckpt: dict, ema: bool = True) -> dict:
    """The student's ``state_dict`` (and the checkpoint's ``meta``) of ``ckpt``.

    Args:
        ckpt (dict): A distillation checkpoint (or a bare distiller ``state_dict``).
        ema (bool): With an ``ema_state_dict`` in ``ckpt``, the EMA student (True: what
            the EMA hooks leave in ``state_dict``) or the raw one (False: from
            ``ema_state_dict``). Defaults to True.

    Returns:
        dict: ``state_dict`` (student keys without ``student.``) and ``meta``, whose
        ``mmkd_student_weights`` is ``'ema'`` or ``'raw'``.
    """
    state = ckpt.get('state_dict', ckpt)
    student = {k[len('student.'):]: v for k, v in state.items() if k.startswith('student.')}
    if not student:
        raise ValueError('no "student." weights in this checkpoint: is it an mmkd '
                         'distillation checkpoint?')
    ema_state = ckpt.get('ema_state_dict')
    if ema_state is not None and not ema:
        student = _raw_student(ema_state, list(student))
    meta = {}
    if 'meta' in ckpt:
        meta = {k: v for k, v in ckpt['meta'].items() if k in ('dataset_meta', 'mmkd_version',
                                                              'experiment_name', 'epoch', 'iter')}
    meta['mmkd_student_weights'] = 'ema' if ema_state is not None and ema else 'raw'
    return dict(state_dict=student, meta=meta)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('src', help='distillation checkpoint written by tools/train.py')
    parser.add_argument('dst', help='output path of the student checkpoint')
    parser.add_argument('--no-ema', action='store_true',
                        help='with an EMA hook\'s checkpoint, write the raw (trained, not '
                        'averaged) student instead of the EMA one')
    add_trust_argument(parser)
    args = parser.parse_args()
    enable_trust(args.trust_checkpoint)
    ckpt = load_checkpoint_file(args.src, map_location='cpu')
    out = extract_student(ckpt, ema=not args.no_ema)
    torch.save(out, args.dst)
    n = len(out['state_dict'])
    if 'ema_state_dict' not in ckpt:
        print(f'wrote {n} student tensors to {args.dst} (no EMA in this checkpoint)')
    elif args.no_ema:
        print(f'wrote {n} raw (not averaged) student tensors to {args.dst} (--no-ema)')
    else:
        print(f'wrote {n} EMA student tensors to {args.dst} (--no-ema for the raw ones)')

if __name__ == '__main__':
    main()
