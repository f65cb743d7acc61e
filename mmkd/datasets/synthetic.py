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
* ``cls_fine``: the same layout with 20 partly confusable classes, colour family x
  shape (``red_circle`` ... ``green_star``; :func:`make_cls_fine`): 5 shape
  superclasses, of which circle / hexagon / square and cross / star are alike at
  32 x 32, times 4 neighbouring hue families (red, orange, yellow, green, 30 degrees
  apart, hue jitter sd 7.5 degrees: about 3.4 % of the objects lie nearer another
  family's hue), so that a teacher's soft labels carry class similarities ("dark
  knowledge", as on CIFAR-100 / ImageNet). ``cls`` is easy (6 shapes, random colour).

Everything is deterministic by ``seed``: the same call writes byte-identical
files. Objects of one image never overlap, so every instance mask is exact.

Command line::

    python -m mmkd.datasets.synthetic data/shapes --tasks det seg cls
"""
from __future__ import annotations

import argparse
import colorsys
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


#: Shapes of :func:`make_cls_fine`, in superclass order (alike ones next to each other).
FINE_SHAPES: Tuple[str, ...] = ('circle', 'hexagon', 'square', 'cross', 'star')
#: Colour families of :func:`make_cls_fine` and their hue centres (HSV, degrees).
FINE_HUES: Dict[str, float] = {'red': 0.0, 'orange': 30.0, 'yellow': 60.0, 'green': 90.0}
#: Standard deviation of the object hue around its family's centre (degrees).
FINE_HUE_SD: float = 7.5
#: The classes of :func:`make_cls_fine`, ``<colour>_<shape>``, sorted (label order).
FINE_CLASSES: Tuple[str, ...] = tuple(sorted(f'{c}_{s}' for c in FINE_HUES for s in FINE_SHAPES))


def render(rng: np.random.Generator, h: int, w: int, objs: Sequence[dict]) -> Image.Image:
    """Draws the objects over a random background, each in its ``color`` (an RGB tuple) if it
    has one, else in a random colour."""
    img = _background(rng, h, w)
    draw = ImageDraw.Draw(img)
    for obj in objs:
        color = obj.get('color') or tuple(int(c) for c in rng.integers(0, 256, size=3))
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


def fine_object_color(rng: np.random.Generator, hue: float) -> Tuple[Tuple[int, int, int], float]:
    """An RGB colour of a :func:`make_cls_fine` object of the family centred at ``hue``
    (degrees): hue jittered with sd :data:`FINE_HUE_SD`, saturation in [0.6, 1], value in
    [0.65, 1]. Returns the colour and its hue (degrees, in [0, 360))."""
    h = (hue + rng.normal(0, FINE_HUE_SD)) % 360
    s, v = rng.uniform(0.6, 1.0), rng.uniform(0.65, 1.0)
    rgb = colorsys.hsv_to_rgb(h / 360, s, v)
    return tuple(int(round(255 * c)) for c in rgb), h


def fine_image(rng: np.random.Generator, h: int, w: int, shape: str,
               hue: float) -> Tuple[Image.Image, List[Tuple[float, float]], float]:
    """One :func:`make_cls_fine` image: a ``shape`` of the colour family centred at ``hue``
    over a random texture. Returns the image, the shape's polygon and the drawn hue."""
    r = rng.uniform(0.25, 0.42) * min(h, w)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    poly = shape_polygon(shape, cx, cy, r, rng.uniform(0, 2 * math.pi))
    color, drawn = fine_object_color(rng, hue)
    return render(rng, h, w, [dict(polygon=poly, color=color)]), poly, drawn


def make_cls_fine(root: str, num_train: int = 400, num_val: int = 100,
                  img_size: Tuple[int, int] = (32, 32), seed: int = 0) -> Dict[str, object]:
    """Writes a 20-class image-folder classification set ``{split}/<class>/*.png`` whose
    classes are partly confusable, so that a teacher's soft labels carry class
    similarities (the "dark knowledge" of CIFAR-100 / ImageNet), unlike :func:`make_cls`.

    Classes: colour family x shape, named ``<colour>_<shape>`` (:data:`FINE_CLASSES`),

    * 5 shapes, the superclasses (:data:`FINE_SHAPES`): circle, hexagon, square, cross,
      star. At 32 x 32 with a blur, a hexagon is close to a circle and, turned, to a
      square; a cross and a star are both spiky (thin arms vs five points);
    * 4 colour families (:data:`FINE_HUES`): red, orange, yellow, green with hue centres
      0, 30, 60, 90 degrees. The object hue is drawn around its centre with sd
      :data:`FINE_HUE_SD` = 7.5 degrees (half the gap), so neighbouring families overlap:
      a hue is more than 15 degrees off its centre towards a neighbour with probability
      2.3 % per side, i.e. about 3.4 % of all objects (4.6 % of orange and yellow,
      2.3 % of red and green, which have one neighbour) are genuinely ambiguous,
      nearer another family's hue. Saturation (0.6-1) and value (0.65-1) are jittered
      too, which makes dark orange vs red and yellow vs green harder still.

    The background is the random texture of :func:`make_cls` (any colour). Classes are
    balanced (image ``i`` has the ``i % 20``-th class); the same seed writes the same
    files. Each image holds one shape of circumradius 25-42 % of the image side.

    Returns:
        dict: ``data_root``, ``train_prefix``, ``val_prefix``, ``classes`` (sorted: the
        label order of an image-folder dataset), like :func:`make_cls`.
    """
    h, w = img_size
    rng = np.random.default_rng(seed)
    classes = FINE_CLASSES
    for split, num in _split_names(num_train, num_val):
        for c in classes:
            os.makedirs(osp.join(root, split, c), exist_ok=True)
        for i in range(num):
            name = classes[i % len(classes)]
            colour, shape = name.split('_')
            img, _, _ = fine_image(rng, h, w, shape, FINE_HUES[colour])
            img.save(osp.join(root, split, name, f'{split}_{i:05d}.png'))
    return dict(data_root=root, train_prefix='train', val_prefix='val', classes=classes)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description='Write the synthetic shapes datasets.')
    parser.add_argument('out', help='output folder; det/, seg/, cls/ (cls_fine/) are made inside')
    parser.add_argument('--tasks', nargs='+', default=['det', 'seg', 'cls'],
                        choices=['det', 'seg', 'cls', 'cls_fine'])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=None,
                        help='training images per task (default: the task default)')
    parser.add_argument('--num-val', type=int, default=None)
    args = parser.parse_args(argv)
    sizes = {k: v for k, v in dict(num_train=args.num_train, num_val=args.num_val).items() if v}
    makers = dict(det=make_det, seg=make_seg, cls=make_cls, cls_fine=make_cls_fine)
    for task in args.tasks:
        info = makers[task](osp.join(args.out, task), seed=args.seed, **sizes)
        print(f'{task}: {info["data_root"]}')


if __name__ == '__main__':
    main()
