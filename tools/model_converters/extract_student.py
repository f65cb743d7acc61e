"""Turn an mmkd distillation checkpoint into a plain student checkpoint.

The result holds only the student's weights (``student.`` prefix removed; the
teacher and self-distillation auxiliary heads dropped) and loads with the
student's own config in mmdet's / mmseg's / mmpretrain's ``tools/test.py``::

    python tools/model_converters/extract_student.py work_dirs/x/epoch_12.pth student.pth

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


def extract_student(ckpt: dict) -> dict:
    """The student's ``state_dict`` (and the checkpoint's ``meta``) of ``ckpt``."""
    state = ckpt.get('state_dict', ckpt)
    student = {k[len('student.'):]: v for k, v in state.items() if k.startswith('student.')}
    if not student:
        raise ValueError('no "student." weights in this checkpoint: is it an mmkd '
                         'distillation checkpoint?')
    out = dict(state_dict=student)
    if 'meta' in ckpt:
        meta = {k: v for k, v in ckpt['meta'].items() if k in ('dataset_meta', 'mmkd_version',
                                                              'experiment_name', 'epoch', 'iter')}
        out['meta'] = meta
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('src', help='distillation checkpoint written by tools/train.py')
    parser.add_argument('dst', help='output path of the student checkpoint')
    add_trust_argument(parser)
    args = parser.parse_args()
    enable_trust(args.trust_checkpoint)
    out = extract_student(load_checkpoint_file(args.src, map_location='cpu'))
    torch.save(out, args.dst)
    print(f'wrote {len(out["state_dict"])} student tensors to {args.dst}')


if __name__ == '__main__':
    main()
