"""mmkd.utils.memory: the RSS readings the benchmarks report."""
import subprocess
import sys

import pytest

from mmkd.utils.memory import rss_mib

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='/proc is Linux')

# In a fresh process: in the test process, freed pages of earlier tests can be reused
# without raising the RSS.
CHECK = """
import numpy as np
from mmkd.utils.memory import reset_peak_rss, rss_mib
if not reset_peak_rss():
    print('SKIP'); raise SystemExit
base = rss_mib('VmRSS')
assert 0 < base <= rss_mib('VmHWM') + 1
x = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
grown = rss_mib('VmHWM') - base
del x
assert reset_peak_rss()
print(round(grown), round(rss_mib('VmHWM') - base))
"""


def test_peak_follows_an_allocation_after_a_reset():
    out = subprocess.run([sys.executable, '-c', CHECK], capture_output=True, text=True,
                         check=True).stdout.split()
    if out == ['SKIP']:
        pytest.skip('clear_refs not allowed here')
    grown, after_reset = map(int, out)
    assert grown >= 60 and after_reset < 60


def test_unknown_field_is_named():
    with pytest.raises(KeyError, match='VmNothing'):
        rss_mib('VmNothing')
