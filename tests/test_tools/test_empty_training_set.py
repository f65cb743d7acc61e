"""An empty training set is refused by mmkd's tools before training, with a clear error."""
import json
import os
import subprocess
import sys

import pytest
from mmengine.registry import init_default_scope

from mmkd.datasets import det_overrides
from mmkd.recipes import write_config
from mmkd.testing import ROOT
from mmkd.utils import check_training_set


def coco_cfg(root, images):
    os.makedirs(root / 'images', exist_ok=True)
    ann = root / 'ann.json'
    ann.write_text(json.dumps(dict(images=images, annotations=[], categories=[
        dict(id=1, name='circle')])))
    return dict(dataset=dict(type='CocoDataset', data_root=str(root), ann_file='ann.json',
                             data_prefix=dict(img='images/'), metainfo=dict(classes=('circle', )),
                             filter_cfg=dict(filter_empty_gt=False), pipeline=[]))


def test_a_coco_file_without_images_is_refused_by_name(tmp_path):
    init_default_scope('mmdet')
    with pytest.raises(ValueError, match=r"training set is empty \(0 samples\): "
                                         r"type='CocoDataset'.*ann_file='ann.json'.*\"images\""):
        check_training_set(coco_cfg(tmp_path, []))
    image = dict(id=1, file_name='a.png', width=8, height=8)
    assert check_training_set(coco_cfg(tmp_path, [image])) == 1
    # wrapped datasets are checked through the wrapper
    wrapped = dict(dataset=dict(type='RepeatDataset', times=2,
                                dataset=coco_cfg(tmp_path, [])['dataset']))
    with pytest.raises(ValueError, match='training set is empty'):
        check_training_set(wrapped)


def test_train_py_stops_before_training_on_a_coco_file_without_images(det_data, tmp_path):
    """mmpretrain's image folders refuse emptiness themselves; COCO files did not."""
    ann = tmp_path / 'no_images.json'
    ann.write_text(json.dumps(dict(images=[], annotations=[], categories=[
        dict(id=i + 1, name=n) for i, n in enumerate(det_data['classes'])])))
    info = dict(det_data, train_ann=str(ann))
    cfg = write_config(str(tmp_path / 'kd.py'), 'configs/kd/retinanet_r101_r50_coco.py',
                       dict(det_overrides(info, scale=(64, 64)),
                            model=dict(teacher_ckpt=None)))
    proc = subprocess.run([sys.executable, 'tools/train.py', cfg, '--work-dir',
                           str(tmp_path / 'work'), '--cfg-options',
                           'model.student.backbone.init_cfg=None'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 'mmkd: the training set is empty (0 samples)' in out, out[-3000:]
    assert str(ann) in out and 'need at least one array' not in out
    assert 'Epoch(train)' not in out
