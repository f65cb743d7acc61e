from .checkpoint import (
                         ALLOWLIST,
                         TRUST_ENV,
                         TRUST_FLAG,
                         CheckpointReadError,
                         UnsafeCheckpointError,
                         add_trust_argument,
                         enable_trust,
                         load_checkpoint_file,
                         load_from_local_file,
                         register_checkpoint_loader,
                         safe_load,
                         trust_checkpoints,
)
from .data import check_training_set
from .dist import setup_cpu_distributed
from .misc import default_work_dir

__all__ = [
    'ALLOWLIST', 'TRUST_ENV', 'TRUST_FLAG', 'CheckpointReadError', 'UnsafeCheckpointError',
    'add_trust_argument', 'enable_trust', 'load_checkpoint_file', 'load_from_local_file',
    'register_checkpoint_loader', 'safe_load', 'trust_checkpoints', 'setup_cpu_distributed',
    'default_work_dir', 'check_training_set'
]
