"""Auxiliary heads of mmkd (torch + mmengine only)."""
from .drg_head import DRGHead, SepConv

__all__ = ['DRGHead', 'SepConv']
