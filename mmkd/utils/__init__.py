from .checkpoint import load_from_local_file, register_checkpoint_loader

__all__ = ['load_from_local_file', 'register_checkpoint_loader']
