"""Session-wide synthetic datasets, generated once per test run (no downloads)."""
import pytest

from mmkd.datasets import make_cls, make_det, make_seg


@pytest.fixture(scope='session')
def det_data(tmp_path_factory):
    """COCO-format shapes: 8 train / 4 val images of 128 x 128, boxes + masks."""
    return make_det(str(tmp_path_factory.mktemp('det')), num_train=8, num_val=4, seed=0)


@pytest.fixture(scope='session')
def seg_data(tmp_path_factory):
    """mmseg-format shapes: 8 train / 4 val images of 128 x 256."""
    return make_seg(str(tmp_path_factory.mktemp('seg')), num_train=8, num_val=4, seed=0)


@pytest.fixture(scope='session')
def cls_data(tmp_path_factory):
    """Image-folder shapes: 24 train / 12 val images of 32 x 32, 6 classes."""
    return make_cls(str(tmp_path_factory.mktemp('cls')), num_train=24, num_val=12, seed=0)
