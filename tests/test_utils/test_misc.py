import os.path as osp

from mmkd.utils import default_work_dir


def test_default_work_dir_keeps_the_method_folder():
    kd = default_work_dir('configs/kd/pspnet_r101_r18_cityscapes.py')
    dist = default_work_dir('configs/dist/pspnet_r101_r18_cityscapes.py')
    assert kd == osp.join('./work_dirs', 'kd', 'pspnet_r101_r18_cityscapes')
    assert kd != dist
    assert default_work_dir('my_project/configs/rekd_shapes.py') == osp.join(
        './work_dirs', 'rekd_shapes')
