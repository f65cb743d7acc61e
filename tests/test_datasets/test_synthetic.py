"""The synthetic shapes generator: deterministic, valid, readable by the task packages."""
import colorsys
import filecmp
import json
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from mmkd.datasets import (
    FINE_CLASSES,
    SEG_CLASSES,
    SHAPE_CLASSES,
    make_cls,
    make_cls_fine,
    make_det,
    make_seg,
)
from mmkd.datasets.synthetic import (
    FINE_HUE_SD,
    FINE_HUES,
    FINE_SHAPES,
    _polygon_area,
    fine_image,
    fine_object_color,
    shape_polygon,
)


def _same_tree(a, b):
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only and not cmp.diff_files
    for sub in cmp.common_dirs:
        _same_tree(osp.join(a, sub), osp.join(b, sub))


@pytest.mark.parametrize('maker', [make_det, make_seg, make_cls, make_cls_fine])
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


def _hue_distance(a, b):
    """Distance of hues in degrees on the hue circle."""
    return np.abs((np.asarray(a) - np.asarray(b) + 180) % 360 - 180)


@pytest.fixture(scope='module')
def fine_data(tmp_path_factory):
    """The 20-class set: 2 train / 1 val images per class."""
    return make_cls_fine(str(tmp_path_factory.mktemp('fine')), num_train=40, num_val=20, seed=0)


def test_cls_fine_classes_balanced_and_readable(fine_data):
    from mmpretrain.datasets import CustomDataset
    root = fine_data['data_root']
    classes = list(fine_data['classes'])
    assert classes == sorted(classes) == list(FINE_CLASSES) and len(classes) == 20
    assert {tuple(c.split('_')) for c in classes} == {(c, s) for c in FINE_HUES
                                                      for s in FINE_SHAPES}
    assert 'red_circle' in classes
    for split, per_class in [('train', 2), ('val', 1)]:
        assert sorted(os.listdir(osp.join(root, split))) == classes
        for c in classes:
            names = os.listdir(osp.join(root, split, c))
            assert len(names) == per_class
            for n in names:
                img = Image.open(osp.join(root, split, c, n))
                assert img.size == (32, 32) and img.mode == 'RGB'
    ds = CustomDataset(data_root=root, data_prefix='train', with_label=True,
                       metainfo=dict(classes=fine_data['classes']), pipeline=[])
    assert len(ds) == 40
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        assert ds.metainfo['classes'][info['gt_label']] == osp.basename(
            osp.dirname(info['img_path']))


def test_cls_fine_shape_pixels_have_the_class_hue():
    """Inside the drawn polygon (away from the blurred border) the pixels have the drawn
    hue, and the drawn hue lies near the family's centre."""
    rng = np.random.default_rng(0)
    for k in range(40):
        shape = FINE_SHAPES[k % len(FINE_SHAPES)]
        family = list(FINE_HUES)[k % len(FINE_HUES)]
        img, poly, hue = fine_image(rng, 32, 32, shape, FINE_HUES[family])
        mask = Image.new('L', (32, 32), 0)
        ImageDraw.Draw(mask).polygon(poly, fill=255)
        inner = np.asarray(mask.filter(ImageFilter.MinFilter(5))) > 0
        assert inner.sum() >= 10
        rgb = np.median(np.asarray(img, np.float64)[inner], axis=0) / 255
        h, s, v = colorsys.rgb_to_hsv(*rgb)
        assert _hue_distance(h * 360, hue) < 2
        assert s >= 0.55 and v >= 0.6
        assert _hue_distance(hue, FINE_HUES[family]) < 5 * FINE_HUE_SD


def test_cls_fine_written_images_are_of_their_colour_family(fine_data):
    """In the files, most saturated pixels are of the class's colour family (the
    background is random, and a few percent of the objects are ambiguous)."""
    root = fine_data['data_root']
    centres = np.array(list(FINE_HUES.values()))
    hits = total = 0
    for c in fine_data['classes']:
        for split in ('train', 'val'):
            for n in os.listdir(osp.join(root, split, c)):
                hsv = np.asarray(Image.open(osp.join(root, split, c, n)).convert('HSV'),
                                 np.float64)
                sat = (hsv[..., 1] > 127) & (hsv[..., 2] > 140)
                d = _hue_distance(hsv[..., 0][sat][:, None] * 360 / 255, centres[None])
                family = list(FINE_HUES)[int((d < 15).sum(0).argmax())]
                hits += family == c.split('_')[0]
                total += 1
    assert total == 60 and hits >= 0.8 * total


def test_cls_fine_ambiguity_rate():
    """About 3.4 % of the object hues lie nearer another family's centre."""
    rng = np.random.default_rng(0)
    centres = np.array(list(FINE_HUES.values()))
    wrong = 0
    n = 8000
    for k in range(n):
        own = k % len(centres)
        _, hue = fine_object_color(rng, centres[own])
        wrong += int(_hue_distance(hue, centres).argmin()) != own
    assert 0.025 < wrong / n < 0.045
