"""mmkd.utils.memory: the RSS readings the benchmarks report."""
import sys

import pytest
import torch

from mmkd.utils.memory import reset_peak_rss, rss_mib

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='/proc is Linux')


def test_peak_follows_an_allocation_after_a_reset():
    if not reset_peak_rss():
        pytest.skip('clear_refs not allowed here')
    base = rss_mib('VmRSS')
    assert 0 < base <= rss_mib('VmHWM') + 1
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    assert rss_mib('VmHWM') - base > 60
    del x
    assert reset_peak_rss() and rss_mib('VmHWM') - base < 60


def test_unknown_field_is_named():
    with pytest.raises(KeyError, match='VmNothing'):
        rss_mib('VmNothing')
