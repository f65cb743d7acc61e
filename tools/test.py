"""Test (and evaluate) a model: a distiller checkpoint or a plain student one.

Usage, as mmdet's tools/test.py::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl]
                                           [--cfg-options k=v ...] [--launcher pytorch]
                                           [--trust-checkpoint]

CHECKPOINT (and any pretrained ``init_cfg``) is loaded with
``torch.load(weights_only=True)`` and mmkd's allowlist (:mod:`mmkd.utils.checkpoint`);
``--trust-checkpoint`` (or ``MMKD_TRUST_CHECKPOINTS=1``) is the opt-in for
trusted files holding other types.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction
from mmengine.evaluator import DumpResults
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
import mmkd  # noqa: E402,F401  (creates the mmkd registries)
from mmkd.utils import (  # noqa: E402
    add_trust_argument,
    default_work_dir,
    enable_trust,
    register_checkpoint_loader,
    setup_cpu_distributed,
)


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model with mmkd')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument('--out', type=str,
                        help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument('--show-dir',
                        help='save painted predictions in work_dir/timestamp/SHOW_DIR')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, as key=value pairs (key="[a,b]" for lists)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    add_trust_argument(parser)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def enable_visualization(cfg, show_dir):
    """Turns on the task's visualization hook (mmdet / mmseg / mmpretrain)."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise RuntimeError('--show-dir needs a "visualization" hook in default_hooks')
    if 'enable' in hook:  # mmpretrain's VisualizationHook
        hook.enable = True
        hook.out_dir = show_dir
    else:  # mmdet's DetVisualizationHook, mmseg's SegVisualizationHook
        hook.draw = True
        hook.test_out_dir = show_dir


def main():
    args = parse_args()
    enable_trust(args.trust_checkpoint)
    register_checkpoint_loader()  # every checkpoint load: weights_only=True + allowlist

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = default_work_dir(args.config)
    cfg.load_from = args.checkpoint
    if isinstance(cfg.get('model'), dict) and cfg.model.get('teacher_ckpt'):
        # Testing runs the student alone and CHECKPOINT holds the teacher's
        # weights anyway: do not read (or download) the teacher checkpoint.
        cfg.model.teacher_ckpt = None
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)

    setup_cpu_distributed(cfg, args.launcher)  # torchrun without GPUs: gloo, CPU DDP
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl or .pickle file, got {args.out}')
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    runner.test()


if __name__ == '__main__':
    main()
