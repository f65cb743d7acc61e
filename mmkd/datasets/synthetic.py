"""Synthetic shapes datasets in the real OpenMMLab formats.

COCO, Cityscapes and ImageNet cannot be downloaded everywhere, so tests, the
demo and the benchmarks use small images of coloured shapes on a textured
background, written in the layouts that mmdet, mmseg and mmpretrain read:

* ``det``: COCO json (``annotations/instances_{train,val}.json``) with boxes
  and polygon instance masks; images under ``{train,val}/``.
* ``seg``: mmseg folders ``img_dir/{train,val}/*.png`` and
  ``ann_dir/{train,val}/*.png`` (uint8 labels: 0 background, ``i + 1`` the
  i-th shape, 255 a one-pixel ignore band on every shape border, as the
  Cityscapes void label).
* ``cls``: an image folder ``{train,val}/<class>/*.png`` with one shape per
  image, for mmpretrain's ``CustomDataset``.

Everything is deterministic by ``seed``: the same call writes byte-identical
files. Objects of one image never overlap, so every instance mask is exact.

Command line::

    python -m mmkd.datasets.synthetic data/shapes --tasks det seg cls
"""
from __future__ import annotations

import argparse
import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: The shape classes, in label order.
SHAPE_CLASSES: Tuple[str, ...] = ('circle', 'square', 'triangle', 'star', 'hexagon', 'cross')
#: Class names for segmentation (background first, label 0).
SEG_CLASSES: Tuple[str, ...] = ('background', ) + SHAPE_CLASSES
#: The palette mmseg uses to draw the classes (one RGB colour per class).
SEG_PALETTE: List[List[int]] = [[0, 0, 0], [220, 20, 60], [0, 130, 180], [250, 170, 30],
                                [107, 142, 35], [152, 251, 152], [119, 11, 32]]


def shape_polygon(name: str, cx: float, cy: float, r: float, angle: float) -> List[Tuple[float,
                                                                                     float]]:
    """Vertices of a shape of circumradius ``r`` centred at ``(cx, cy)``."""
    if name == 'circle':
        angles = [2 * math.pi * i / 32 for i in range(32)]
        radii = [r] * 32
    elif name == 'square':
        angles = [angle + math.pi / 4 + i * math.pi / 2 for i in range(4)]
        radii = [r] * 4
    elif name == 'triangle':
        angles = [angle + i * 2 * math.pi / 3 for i in range(3)]
        radii = [r] * 3
    elif name == 'hexagon':
        angles = [angle + i * math.pi / 3 for i in range(6)]
        radii = [r] * 6
    elif name == 'star':
        angles = [angle + i * math.pi / 5 for i in range(10)]
        radii = [r if i % 2 == 0 else 0.45 * r for i in range(10)]
    elif name == 'cross':
        # A plus sign: 12 vertices with arm half-width w.
        w = 0.35 * r
        pts = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r), (-w, -r), (-w, -w), (-r, -w),
               (-r, w), (-w, w), (-w, r)]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    else:
        raise ValueError(f'unknown shape {name!r}; expected one of {SHAPE_CLASSES}')
    return [(cx + rr * math.cos(a), cy + rr * math.sin(a)) for a, rr in zip(angles, radii)]


def _background(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A smooth random texture, so that shapes are not found by colour alone."""
    base = rng.integers(60, 200, size=3)
    noise = rng.normal(0, 40, size=(h // 8 + 1, w // 8 + 1, 3))
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    img = img.resize((w, h), Image.BILINEAR)
    fine = rng.normal(0, 8, size=(h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img, np.float64) + fine, 0, 255).astype(np.uint8))


def _place_objects(rng: np.random.Generator, h: int, w: int, num: int, num_classes: int,
                   radius: Tuple[float, float] = (0.08, 0.22)) -> List[dict]:
    """Non-overlapping objects: class, polygon, bbox (x1, y1, x2, y2); circumradius
    ``radius`` (a range, times min(h, w))."""
    objs: List[dict] = []
    for _ in range(num * 20):
        if len(objs) == num:
            break
        r = rng.uniform(*radius) * min(h, w)
        cx, cy = rng.uniform(r + 1, w - r - 1), rng.uniform(r + 1, h - r - 1)
        label = int(rng.integers(num_classes))
        poly = shape_polygon(SHAPE_CLASSES[label], cx, cy, r, rng.uniform(0, 2 * math.pi))
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        box = (min(xs), min(ys), max(xs), max(ys))
        if any(box[0] < o['bbox'][2] + 2 and o['bbox'][0] < box[2] + 2
               and box[1] < o['bbox'][3] + 2 and o['bbox'][1] < box[3] + 2 for o in objs):
            continue
        objs.append(dict(label=label, polygon=poly, bbox=box))
    return objs


def render(rng: np.random.Generator, h: int, w: int, objs: Sequence[dict]) -> Image.Image:
    """Draws the objects in random colours over a random background."""
    img = _background(rng, h, w)
    draw = ImageDraw.Draw(img)
    for obj in objs:
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.polygon(obj['polygon'], fill=color)
    return img.filter(ImageFilter.GaussianBlur(0.6))


def _split_names(num_train: int, num_val: int) -> List[Tuple[str, int]]:
    return [('train', num_train), ('val', num_val)]


def make_det(root: str, num_train: int = 64, num_val: int = 16, img_size: Tuple[int, int] = (
        128, 128), max_objects: int = 4, num_classes: int = len(SHAPE_CLASSES), seed: int = 0,
             empty_every: int = 0) -> Dict[str, str]:
    """Writes a COCO-format detection + instance-segmentation set.

    Args:
        root (str): Output folder.
        num_train (int): Training images. Defaults to 64.
        num_val (int): Validation images. Defaults to 16.
        img_size (tuple[int, int]): (height, width). Defaults to (128, 128).
        max_objects (int): At most this many objects per image (at least 1).
            Defaults to 4.
        num_classes (int): Use the first ``num_classes`` shapes. Defaults to 6.
        seed (int): Random seed. Defaults to 0.
        empty_every (int): If > 0, every ``empty_every``-th image has no
            object at all. Defaults to 0.

    Returns:
        dict: ``data_root``, ``train_ann``, ``val_ann``, ``train_img``,
        ``val_img`` (the latter four relative to ``data_root``), ``classes``.
    """
    h, w = img_size
    classes = SHAPE_CLASSES[:num_classes]
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    ann_id = 1
    for split, num in _split_names(num_train, num_val):
        os.makedirs(osp.join(root, split), exist_ok=True)
        images, anns = [], []
        for i in range(num):
            n = 0 if empty_every and i % empty_every == empty_every - 1 else int(
                rng.integers(1, max_objects + 1))
            objs = _place_objects(rng, h, w, n, num_classes)
            name = f'{split}_{i:05d}.png'
            render(rng, h, w, objs).save(osp.join(root, split, name))
            images.append(dict(id=i + 1, file_name=name, height=h, width=w))
            for obj in objs:
                x1, y1, x2, y2 = obj['bbox']
                poly = [round(c, 2) for p in obj['polygon'] for c in p]
                area = _polygon_area(obj['polygon'])
                anns.append(
                    dict(id=ann_id, image_id=i + 1, category_id=obj['label'] + 1,
                         bbox=[round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                         area=round(area, 2), iscrowd=0, segmentation=[poly]))
                ann_id += 1
        coco = dict(images=images, annotations=anns,
                    categories=[dict(id=k + 1, name=c) for k, c in enumerate(classes)])
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(coco, f)
    return dict(data_root=root, train_ann='annotations/instances_train.json',
                val_ann='annotations/instances_val.json', train_img='train/', val_img='val/',
                classes=classes)


def _polygon_area(poly: Sequence[Tuple[float, float]]) -> float:
    """Shoelace formula."""
    s = 0.0
    for (x1, y1), (x2, y2) in zip(poly, list(poly[1:]) + [poly[0]]):
        s += x1 * y2 - x2 * y1
    return abs(s) / 2


def make_seg(root: str, num_train: int = 32, num_val: int = 8, img_size: Tuple[int, int] = (
        128, 256), max_objects: int = 5, num_classes: int = len(SHAPE_CLASSES),
             seed: int = 0, radius: Tuple[float, float] = (0.08, 0.22)) -> Dict[str, object]:
    """Writes an mmseg-format semantic-segmentation set (Cityscapes-like 1:2 images).

    Label 0 is background, ``i + 1`` the i-th shape, 255 a one-pixel band
    around each shape (ignored, like Cityscapes' void).

    Args:
        radius (tuple[float, float]): Range of the shapes' circumradius, as a
            fraction of min(h, w). Defaults to (0.08, 0.22). Larger shapes
            (e.g. (0.15, 0.35)) are learnt from scratch within minutes.

    Returns:
        dict: ``data_root``, ``img_dir``, ``ann_dir`` (``{split}`` to format),
        ``classes`` (background included), ``palette``.
    """
    h, w = img_size
    rng = np.random.default_rng(seed)
    for split, num in _split_names(num_train, num_val):
        os.makedirs(osp.join(root, 'img_dir', split), exist_ok=True)
        os.makedirs(osp.join(root, 'ann_dir', split), exist_ok=True)
        for i in range(num):
            objs = _place_objects(rng, h, w, int(rng.integers(1, max_objects + 1)), num_classes,
                                  radius)
            render(rng, h, w, objs).save(osp.join(root, 'img_dir', split, f'{split}_{i:05d}.png'))
            label = Image.new('L', (w, h), 0)
            draw = ImageDraw.Draw(label)
            for obj in objs:
                draw.polygon(obj['polygon'], fill=obj['label'] + 1, outline=255)
            label.save(osp.join(root, 'ann_dir', split, f'{split}_{i:05d}.png'))
    return dict(data_root=root, img_dir='img_dir/{split}', ann_dir='ann_dir/{split}',
                classes=SEG_CLASSES[:num_classes + 1], palette=SEG_PALETTE[:num_classes + 1])


def make_cls(root: str, num_train: int = 96, num_val: int = 24, img_size: Tuple[int, int] = (
        32, 32), num_classes: int = len(SHAPE_CLASSES), seed: int = 0) -> Dict[str, object]:
    """Writes an image-folder classification set ``{split}/<class>/*.png``.

    Each image holds one shape; classes are balanced (image ``i`` has class
    ``i % num_classes``).

    Returns:
        dict: ``data_root``, ``train_prefix``, ``val_prefix``, ``classes`` (sorted:
        the label order of an image-folder dataset).
    """
    h, w = img_size
    classes = SHAPE_CLASSES[:num_classes]
    rng = np.random.default_rng(seed)
    for split, num in _split_names(num_train, num_val):
        for c in classes:
            os.makedirs(osp.join(root, split, c), exist_ok=True)
        for i in range(num):
            label = i % num_classes
            r = rng.uniform(0.25, 0.42) * min(h, w)
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            poly = shape_polygon(classes[label], cx, cy, r, rng.uniform(0, 2 * math.pi))
            img = render(rng, h, w, [dict(label=label, polygon=poly)])
            img.save(osp.join(root, split, classes[label], f'{split}_{i:05d}.png'))
    # Image-folder datasets (mmpretrain's CustomDataset) number the sub-folders in sorted
    # order: return the class names in that order, so that metainfo names fit the labels.
    return dict(data_root=root, train_prefix='train', val_prefix='val',
                classes=tuple(sorted(classes)))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description='Write the synthetic shapes datasets.')
    parser.add_argument('out', help='output folder; det/, seg/ and cls/ are made inside')
    parser.add_argument('--tasks', nargs='+', default=['det', 'seg', 'cls'],
                        choices=['det', 'seg', 'cls'])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=None,
                        help='training images per task (default: the task default)')
    parser.add_argument('--num-val', type=int, default=None)
    args = parser.parse_args(argv)
    sizes = {k: v for k, v in dict(num_train=args.num_train, num_val=args.num_val).items() if v}
    makers = dict(det=make_det, seg=make_seg, cls=make_cls)
    for task in args.tasks:
        info = makers[task](osp.join(args.out, task), seed=args.seed, **sizes)
        print(f'{task}: {info["data_root"]}')


if __name__ == '__main__':
    main()
