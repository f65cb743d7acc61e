from .checkpoint import load_from_local_file, register_checkpoint_loader
from .dist import setup_cpu_distributed
from .misc import default_work_dir

__all__ = ['load_from_local_file', 'register_checkpoint_loader', 'setup_cpu_distributed',
           'default_work_dir']
