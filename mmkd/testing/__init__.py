"""Helpers for tests, the demo and benchmarks: synthetic-data config overrides."""
from .configs import (
                      cfg_options,
                      cls_overrides,
                      det_overrides,
                      no_pretrained,
                      seg_overrides,
                      write_config,
)
from .tools import ROOT, run_tool

__all__ = ['det_overrides', 'seg_overrides', 'cls_overrides', 'no_pretrained', 'write_config',
           'cfg_options', 'run_tool', 'ROOT']
