"""Run the repository's tools/ scripts in a subprocess (tests, demo, benchmarks)."""
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, List, Optional

#: The repository root (where tools/ lives).
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def run_tool(args: List[str], timeout: int = 900, env: Optional[Dict[str, str]] = None) -> str:
    """Runs ``python tools/<args>`` from the repo root; returns stdout+stderr, raises on failure."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f'{" ".join(args)} failed ({proc.returncode}):\n{out[-6000:]}')
    return out
