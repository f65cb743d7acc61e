"""Train a model (a distiller, or any mmdet / mmseg / mmpretrain model).

Usage, as mmdet's tools/train.py::

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]]
                                 [--cfg-options k=v ...] [--launcher pytorch]
                                 [--trust-checkpoint]

Every checkpoint it reads (``teacher_ckpt``, ``--resume``, ``load_from``,
pretrained ``init_cfg``; paths and URLs) is loaded with
``torch.load(weights_only=True)`` and mmkd's allowlist
(:mod:`mmkd.utils.checkpoint`); ``--trust-checkpoint`` (or
``MMKD_TRUST_CHECKPOINTS=1``) is the opt-in for trusted files holding other types.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

# Run from a checkout without installing: the repo root before site-packages.
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
import mmkd  # noqa: E402,F401  (creates the mmkd registries)
from mmkd.engine import check_ema_hooks  # noqa: E402
from mmkd.utils import (  # noqa: E402
    add_trust_argument,
    check_training_set,
    default_work_dir,
    enable_trust,
    register_checkpoint_loader,
    setup_cpu_distributed,
)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model with mmkd')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='enable automatically scaling LR')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or, without a path, from the latest '
        'checkpoint in the work directory')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, as key=value pairs (key="[a,b]" for lists)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    add_trust_argument(parser)
    # torch.distributed.launch / torchrun pass --local-rank (or --local_rank).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main():
    args = parse_args()
    enable_trust(args.trust_checkpoint)
    register_checkpoint_loader()  # every checkpoint load: weights_only=True + allowlist

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # work_dir: CLI > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = default_work_dir(args.config)

    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        # mmdet configs have auto_scale_lr = dict(enable=False, base_batch_size=16),
        # mmpretrain's dict(base_batch_size=256) (no `enable`), mmseg's none.
        if 'base_batch_size' in cfg.get('auto_scale_lr', {}):
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError('--auto-scale-lr needs "auto_scale_lr.base_batch_size" (the '
                               'total batch size the learning rate is set for) in the config')

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    check_ema_hooks(cfg)  # mmengine's EMAHook on a distiller: refused, StudentEMAHook named
    setup_cpu_distributed(cfg, args.launcher)  # torchrun without GPUs: gloo, CPU DDP
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    check_training_set(cfg.get('train_dataloader'))  # an empty set: a clear error, now
    runner.train()


if __name__ == '__main__':
    main()
