"""Distillation losses of mmkd (torch + mmengine only).

Every loss is registered in :data:`mmkd.registry.MODELS` and has a functional
core that distillers and tests can call directly.
"""
from .base import INPUT_KINDS, BaseDistillLoss, DistillLossInfo
from .cwd_loss import ChannelWiseDivergence, cwd_channels
from .dist_loss import DISTLoss, dist_correlations, dist_loss
from .dkd_loss import DKDLoss, dkd_loss
from .drg_loss import DRGLoss
from .dsr_loss import DSRLoss, dsr_loss, sort_classes
from .kd_loss import KDLoss, kd_loss
from .kl_divergence import binary_kl, log_binary, subset_kl, subset_logsumexp
from .ld_loss import LDLoss, ld_loss
from .precision import standardize_logits
from .reduction import reduce_rows, valid_rows
from .rekd_loss import ReKDLoss, rekd_loss, topk_mask
from .rld_loss import RLDLoss, rld_loss
from .sdd_loss import SDDLoss, sdd_local_logits, sdd_loss, sdd_region_weights

__all__ = [
    'INPUT_KINDS', 'DistillLossInfo', 'BaseDistillLoss', 'KDLoss', 'DISTLoss', 'DKDLoss',
    'ReKDLoss', 'RLDLoss', 'SDDLoss', 'DRGLoss', 'DSRLoss', 'ChannelWiseDivergence', 'LDLoss',
    'kd_loss', 'ld_loss',
    'dist_loss', 'dist_correlations', 'dkd_loss', 'rekd_loss', 'topk_mask', 'rld_loss',
    'sdd_local_logits', 'sdd_loss', 'sdd_region_weights', 'dsr_loss', 'sort_classes',
    'cwd_channels', 'subset_kl', 'subset_logsumexp', 'log_binary', 'binary_kl',
    'standardize_logits', 'valid_rows', 'reduce_rows'
]
