"""The synthetic shapes generator: deterministic, valid, readable by the task packages."""
import filecmp
import json
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from mmkd.datasets import SEG_CLASSES, SHAPE_CLASSES, make_cls, make_det, make_seg
from mmkd.datasets.synthetic import _polygon_area, shape_polygon


def _same_tree(a, b):
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only and not cmp.diff_files
    for sub in cmp.common_dirs:
        _same_tree(osp.join(a, sub), osp.join(b, sub))


@pytest.mark.parametrize('maker', [make_det, make_seg, make_cls])
def test_deterministic_by_seed(tmp_path, maker):
    maker(str(tmp_path / 'a'), num_train=3, num_val=2, seed=3)
    maker(str(tmp_path / 'b'), num_train=3, num_val=2, seed=3)
    maker(str(tmp_path / 'c'), num_train=3, num_val=2, seed=4)
    _same_tree(str(tmp_path / 'a'), str(tmp_path / 'b'))
    with pytest.raises(AssertionError):
        _same_tree(str(tmp_path / 'a'), str(tmp_path / 'c'))


def test_polygon_area_hand_made():
    assert _polygon_area([(0, 0), (4, 0), (4, 3), (0, 3)]) == 12
    # A square of circumradius r has side r * sqrt(2): area 2 r^2.
    assert _polygon_area(shape_polygon('square', 10, 10, 5, 0.3)) == pytest.approx(50)
    with pytest.raises(ValueError, match='unknown shape'):
        shape_polygon('blob', 0, 0, 1, 0)


def test_det_coco_json(det_data):
    from pycocotools.coco import COCO
    root = det_data['data_root']
    coco = COCO(osp.join(root, det_data['train_ann']))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(SHAPE_CLASSES)
    assert len(coco.getImgIds()) == 8
    for ann in coco.loadAnns(coco.getAnnIds()):
        img = coco.loadImgs(ann['image_id'])[0]
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and x + w <= img['width'] and y + h <= img['height']
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        # The rasterised polygon fills its box (up to a pixel) and its area.
        assert xs.min() >= int(x) - 1 and xs.max() <= x + w + 1
        assert abs(mask.sum() - ann['area']) <= 0.15 * ann['area'] + 10
    for img in coco.loadImgs(coco.getImgIds()):
        assert Image.open(osp.join(root, det_data['train_img'], img['file_name'])).size == (128,
                                                                                          128)


def test_det_empty_images(tmp_path):
    info = make_det(str(tmp_path), num_train=4, num_val=1, empty_every=2)
    coco = json.load(open(osp.join(tmp_path, info['train_ann'])))
    with_objects = {a['image_id'] for a in coco['annotations']}
    assert with_objects == {1, 3}


def test_seg_labels(seg_data):
    root = seg_data['data_root']
    ann_dir = osp.join(root, seg_data['ann_dir'].format(split='train'))
    img_dir = osp.join(root, seg_data['img_dir'].format(split='train'))
    names = sorted(os.listdir(ann_dir))
    assert names == sorted(os.listdir(img_dir)) and len(names) == 8
    values = set()
    for n in names:
        label = np.asarray(Image.open(osp.join(ann_dir, n)))
        assert label.shape == (128, 256) and label.dtype == np.uint8
        values |= set(np.unique(label).tolist())
    assert values <= set(range(len(SEG_CLASSES))) | {255}
    assert {0, 255} <= values and len(values) >= 4


def test_cls_folders(cls_data):
    root = cls_data['data_root']
    counts = {c: len(os.listdir(osp.join(root, 'train', c))) for c in SHAPE_CLASSES}
    assert counts == {c: 4 for c in SHAPE_CLASSES}


def test_task_datasets_read_the_data(det_data, seg_data, cls_data):
    """mmdet's CocoDataset, mmseg's BaseSegDataset and mmpretrain's CustomDataset load it."""
    from mmdet.datasets import CocoDataset
    from mmpretrain.datasets import CustomDataset
    from mmseg.datasets import BaseSegDataset
    det = CocoDataset(data_root=det_data['data_root'], ann_file=det_data['train_ann'],
                      data_prefix=dict(img=det_data['train_img']),
                      metainfo=dict(classes=SHAPE_CLASSES), pipeline=[])
    assert len(det) == 8 and det.metainfo['classes'] == SHAPE_CLASSES
    item = det[0]
    assert len(item['instances']) >= 1 and item['instances'][0]['mask']
    seg = BaseSegDataset(data_root=seg_data['data_root'], img_suffix='.png',
                         seg_map_suffix='.png',
                         data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
                         metainfo=dict(classes=SEG_CLASSES, palette=seg_data['palette']),
                         pipeline=[])
    assert len(seg) == 8 and seg[0]['seg_map_path'].endswith('.png')
    cls = CustomDataset(data_root=cls_data['data_root'], data_prefix='train', with_label=True,
                        pipeline=[])
    assert len(cls) == 24 and sorted(cls.CLASSES) == sorted(SHAPE_CLASSES)


def test_cls_classes_are_in_label_order(cls_data):
    """mmpretrain numbers the sub-folders in sorted order: the names must follow it."""
    from mmpretrain.datasets import CustomDataset
    assert list(cls_data['classes']) == sorted(SHAPE_CLASSES)
    ds = CustomDataset(data_root=cls_data['data_root'], data_prefix='train', with_label=True,
                       metainfo=dict(classes=cls_data['classes']), pipeline=[])
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        folder = osp.basename(osp.dirname(info['img_path']))
        assert ds.metainfo['classes'][info['gt_label']] == folder
