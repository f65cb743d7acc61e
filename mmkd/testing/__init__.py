"""Test helpers: run mmkd's tools in a subprocess.

The synthetic data and its config overrides are in :mod:`mmkd.datasets`, the
from-scratch recipes in :mod:`mmkd.recipes`, the shipped configs and tools are
found by :mod:`mmkd.resources`.
"""
from .tools import ROOT, cfg_options, run_tool

__all__ = ['run_tool', 'cfg_options', 'ROOT']
