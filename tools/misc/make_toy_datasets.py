"""Write small COCO-format and ADE20K-format datasets of synthetic scenes, in seconds.

    python tools/misc/make_toy_datasets.py                 # both, into data/
    python tools/misc/make_toy_datasets.py --only coco --train 400 --val 100

Scenes: shapes of five classes (circle, square, triangle, star, cross) of varied size
(about 18-64 px), rotation, colour and texture (solid, stripes, checker, noise,
gradient), placed with overlaps (each keeps most of its outline) on cluttered backgrounds
(gradients, noise, lines and translucent elongated ellipses that belong to no class). The class is carried by the
shape only: colours and textures are drawn independently of it, so a model has to
learn shapes, not colours.

Output, deterministic for a given seed (every image has its own random stream, so
the set does not depend on the order or number of images generated):

    data/toy_coco/annotations/instances_{train,val}.json   COCO instances (RLE masks)
    data/toy_coco/{train,val}/NNNNNN.jpg
    data/toy_ade/ADEChallengeData2016/images/{training,validation}/NNNNNN.jpg
    data/toy_ade/ADEChallengeData2016/annotations/{training,validation}/NNNNNN.png

The segmentation labels follow ADE20K: 0 is "ignore" (a thin band on every object
boundary), 1 is background, 2..6 the shape classes; configs read them with
``reduce_zero_label=True``.
"""
import argparse
import json
import math
import os
import os.path as osp
from typing import List, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

CLASSES = ('circle', 'square', 'triangle', 'star', 'cross')
SEG_CLASSES = ('background', ) + CLASSES
IGNORE_LABEL = 0   # ADE20K's "other", mapped to 255 by reduce_zero_label
TEXTURES = ('solid', 'stripes', 'checker', 'noise', 'gradient')
MAX_HIDDEN = 0.3   # largest fraction of a shape a later shape may cover


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, {'train': 0, 'val': 1}[split], index])


def _random_color(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array([[[rng.integers(0, 180), rng.integers(60, 256), rng.integers(60, 256)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Gradient, noise, random lines and translucent elongated ellipses."""
    c0, c1 = _random_color(rng) * 0.7, _random_color(rng) * 0.7
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = np.clip(0.5 + (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle), 0, 1)[..., None]
    img = c0 * (1 - t) + c1 * t + rng.normal(0, 6, (size, size, 3)).astype(np.float32)
    for _ in range(rng.integers(2, 7)):
        p0, p1 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        cv2.line(img, tuple(int(v) for v in p0), tuple(int(v) for v in p1),
                 tuple(float(v) for v in _random_color(rng)), int(rng.integers(1, 3)))
    for _ in range(rng.integers(1, 4)):   # elongated ellipses: clutter unlike any class shape
        center = tuple(int(v) for v in rng.uniform(0, size, 2))
        long_axis = rng.uniform(10, 30)
        axes = (int(long_axis), int(long_axis / rng.uniform(2.5, 5.0)))
        blob = np.zeros((size, size), np.uint8)
        cv2.ellipse(blob, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        alpha = rng.uniform(0.4, 0.8)
        img[blob > 0] = img[blob > 0] * (1 - alpha) + _random_color(rng) * alpha
    return img


def _shape_polygon(cls: str, center: np.ndarray, radius: float, rotation: float) -> List[np.ndarray]:
    """Polygons (one or more) of a class shape; a circle is drawn as a 48-gon."""
    def ring(n, r, phase=0.0):
        a = rotation + phase + np.arange(n) * 2 * math.pi / n
        return np.stack([center[0] + r * np.cos(a), center[1] + r * np.sin(a)], 1)

    if cls == 'circle':
        return [ring(48, radius)]
    if cls == 'square':
        return [ring(4, radius, math.pi / 4)]
    if cls == 'triangle':
        return [ring(3, radius, -math.pi / 2)]
    if cls == 'star':
        outer, inner = ring(5, radius, -math.pi / 2), ring(5, radius * 0.45, -math.pi / 2 + math.pi / 5)
        return [np.stack([outer, inner], 1).reshape(-1, 2)]
    if cls == 'cross':
        w = radius * 0.38
        arm = np.array([[-w, -radius], [w, -radius], [w, -w], [radius, -w], [radius, w], [w, w],
                        [w, radius], [-w, radius], [-w, w], [-radius, w], [-radius, -w], [-w, -w]])
        rot = np.array([[math.cos(rotation), -math.sin(rotation)], [math.sin(rotation), math.cos(rotation)]])
        return [arm @ rot.T + center]
    raise ValueError(cls)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    base, other = _random_color(rng), _random_color(rng)
    kind = TEXTURES[rng.integers(len(TEXTURES))]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 'solid':
        return np.broadcast_to(base, (size, size, 3)).copy()
    if kind == 'stripes':
        a, period = rng.uniform(0, math.pi), rng.uniform(4, 10)
        on = (np.floor((xx * math.cos(a) + yy * math.sin(a)) / period) % 2)[..., None]
        return base * (1 - on) + other * on
    if kind == 'checker':
        period = rng.uniform(4, 9)
        on = ((np.floor(xx / period) + np.floor(yy / period)) % 2)[..., None]
        return base * (1 - on) + other * on
    if kind == 'noise':
        return base + rng.normal(0, 12, (size, size, 3)).astype(np.float32)
    t = (xx / size)[..., None]
    return base * (1 - t) + other * t


def render_scene(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, List[Tuple[int, np.ndarray]]]:
    """One image and its visible instance masks ``[(class index, bool mask)]``, back to front.

    Shapes may overlap, but a new shape is placed only where it hides at most
    ``MAX_HIDDEN`` of every shape already there, so each labelled object keeps most
    of its outline (a shape whose outline is gone cannot be told from clutter).
    """
    img = _background(rng, size)
    placed: List[Tuple[int, np.ndarray, int]] = []    # (class, visible mask, full area)
    for _ in range(rng.integers(4, 9)):
        cls = int(rng.integers(len(CLASSES)))
        for _attempt in range(20):
            radius = rng.uniform(9, 32)
            center = rng.uniform(radius * 0.6, size - radius * 0.6, 2)
            mask = np.zeros((size, size), np.uint8)
            cv2.fillPoly(mask, [np.round(p).astype(np.int32) for p in
                                _shape_polygon(CLASSES[cls], center, radius, rng.uniform(0, 2 * math.pi))], 1)
            mask = mask.astype(bool)
            if all((m & mask).sum() <= MAX_HIDDEN * full for _, m, full in placed):
                break
        else:
            continue
        img[mask] = _texture(rng, size)[mask]
        placed = [(c, m & ~mask, full) for c, m, full in placed]   # the new shape occludes older ones
        placed.append((cls, mask, int(mask.sum())))
    instances = [(c, m) for c, m, _ in placed if m.sum() >= 60]
    return np.clip(img, 0, 255).astype(np.uint8), instances


def _coco_annotation(mask: np.ndarray, cls: int, image_id: int, ann_id: int) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = mask_utils.toBbox(rle).tolist()
    rle['counts'] = rle['counts'].decode('ascii')
    return dict(id=ann_id, image_id=image_id, category_id=cls + 1, segmentation=rle,
                area=float(mask_utils.area(rle)), bbox=[x, y, w, h], iscrowd=0)


def _seg_label(instances: List[Tuple[int, np.ndarray]], size: int) -> np.ndarray:
    label = np.ones((size, size), np.uint8)            # 1 = background
    boundary = np.zeros((size, size), np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    for cls, mask in instances:
        m = mask.astype(np.uint8)
        label[mask] = cls + 2
        boundary |= cv2.dilate(m, kernel) - cv2.erode(m, kernel)
    label[boundary > 0] = IGNORE_LABEL
    return label


def write_coco(root: str, split: str, count: int, size: int, seed: int) -> str:
    """Write one COCO split; returns the annotation file path."""
    os.makedirs(osp.join(root, split), exist_ok=True)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        img, instances = render_scene(_rng(seed, split, i), size)
        name = f'{i:06d}.jpg'
        cv2.imwrite(osp.join(root, split, name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append(dict(id=i + 1, file_name=name, height=size, width=size))
        for cls, mask in instances:
            annotations.append(_coco_annotation(mask, cls, i + 1, len(annotations) + 1))
    categories = [dict(id=i + 1, name=n, supercategory='shape') for i, n in enumerate(CLASSES)]
    path = osp.join(root, 'annotations', f'instances_{split}.json')
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories,
                       info=dict(description=f'mmhybrid toy shapes, seed {seed}')), f)
    return path


def write_ade(root: str, split: str, count: int, size: int, seed: int) -> None:
    """Write one ADE20K-layout split (images/ + annotations/, .jpg + .png)."""
    folder = {'train': 'training', 'val': 'validation'}[split]
    img_dir, ann_dir = osp.join(root, 'images', folder), osp.join(root, 'annotations', folder)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for i in range(count):
        img, instances = render_scene(_rng(seed, split, i), size)
        cv2.imwrite(osp.join(img_dir, f'{i:06d}.jpg'), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(osp.join(ann_dir, f'{i:06d}.png'), _seg_label(instances, size))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='data', help='folder that receives toy_coco/ and toy_ade/')
    parser.add_argument('--only', choices=('coco', 'ade'), help='write one of the two datasets')
    parser.add_argument('--train', type=int, default=1200, help='training images')
    parser.add_argument('--val', type=int, default=200, help='validation images')
    parser.add_argument('--size', type=int, default=160, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.only in (None, 'coco'):
        root = osp.join(args.out, 'toy_coco')
        for split, count in (('train', args.train), ('val', args.val)):
            write_coco(root, split, count, args.size, args.seed)
        print(f'COCO-format toy dataset: {root} ({args.train} train / {args.val} val images)')
    if args.only in (None, 'ade'):
        root = osp.join(args.out, 'toy_ade', 'ADEChallengeData2016')
        for split, count in (('train', args.train), ('val', args.val)):
            write_ade(root, split, count, args.size, args.seed)
        print(f'ADE20K-format toy dataset: {root} ({args.train} train / {args.val} val images)')


if __name__ == '__main__':
    main()
