"""Resident-memory readings of this process (Linux ``/proc``), for the benchmarks."""
from __future__ import annotations


def rss_mib(field: str = 'VmRSS') -> float:
    """A memory field of ``/proc/self/status`` in MiB (``VmRSS`` now, ``VmHWM`` the peak).

    Raises:
        KeyError: If the field is not in the file.
        OSError: Where there is no ``/proc`` (not Linux).
    """
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024
    raise KeyError(f'{field} is not in /proc/self/status')


def reset_peak_rss() -> bool:
    """Resets ``VmHWM`` to the current RSS (``/proc/self/clear_refs``).

    Returns:
        bool: False where the kernel does not allow it (the peak then keeps
        counting from the start of the process).
    """
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False
