"""Run mmkd's tools in a subprocess, as a user does (tests)."""
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

from mmkd.resources import project_dir

#: The folder that holds ``configs/`` and ``tools/`` (:func:`mmkd.resources.project_dir`): the
#: checkout's root, or ``mmkd/.mim`` of an installed wheel. Tests join README paths to it.
ROOT = project_dir()


def run_tool(args: List[str], timeout: int = 900, env: Optional[Dict[str, str]] = None) -> str:
    """Runs ``python tools/<args>`` in :data:`ROOT`; returns stdout+stderr, raises on failure."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f'{" ".join(args)} failed ({proc.returncode}):\n{out[-6000:]}')
    return out


def cfg_options(flat: Dict[str, Any]) -> Sequence[str]:
    """Renders ``{'a.b': 1}`` as ``--cfg-options`` arguments (``a.b=1``)."""
    out = []
    for k, v in flat.items():
        if isinstance(v, (tuple, list)):
            v = '[' + ','.join(str(x) for x in v) + ']' if isinstance(v, list) else \
                '(' + ','.join(str(x) for x in v) + ',)'
        out.append(f'{k}={v}')
    return out
