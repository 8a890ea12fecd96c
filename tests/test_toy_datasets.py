"""The embedded toy datasets: deterministic, valid COCO / ADE20K, readable by mmdet and mmseg."""
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from mmengine.registry import DefaultScope
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('make_toy_datasets', ROOT / 'tools/misc/make_toy_datasets.py')
toy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(toy)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp('toy')
    toy.main(['--out', str(out), '--train', '24', '--val', '8'])
    return out


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob('*')):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def test_generation_is_deterministic_and_independent_of_set_size(data_dir, tmp_path):
    toy.main(['--out', str(tmp_path / 'again'), '--train', '24', '--val', '8'])
    assert _digest(data_dir) == _digest(tmp_path / 'again')
    toy.main(['--out', str(tmp_path / 'fewer'), '--only', 'coco', '--train', '5', '--val', '2'])
    same = (tmp_path / 'fewer/toy_coco/train/000004.jpg').read_bytes()
    assert same == (data_dir / 'toy_coco/train/000004.jpg').read_bytes()
    toy.main(['--out', str(tmp_path / 'seed1'), '--only', 'coco', '--train', '2', '--val', '1', '--seed', '1'])
    assert (tmp_path / 'seed1/toy_coco/train/000000.jpg').read_bytes() != \
        (data_dir / 'toy_coco/train/000000.jpg').read_bytes()


def test_coco_files_load_in_pycocotools_with_consistent_masks_and_boxes(data_dir):
    from pycocotools.coco import COCO
    coco = COCO(str(data_dir / 'toy_coco/annotations/instances_train.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(toy.CLASSES)
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= 2 * 24
    for ann in anns:
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        assert mask.sum() == ann['area'] >= 60
        assert ann['bbox'] == pytest.approx([xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                             ys.max() - ys.min() + 1])
    labels = {ann['category_id'] for ann in anns}
    assert labels == set(range(1, len(toy.CLASSES) + 1))   # every class appears
    sizes = [max(ann['bbox'][2:]) for ann in anns]
    assert min(sizes) < 30 and max(sizes) > 45              # varied object sizes


def test_overlapping_instances_keep_disjoint_visible_masks(data_dir):
    from pycocotools.coco import COCO
    coco = COCO(str(data_dir / 'toy_coco/annotations/instances_val.json'))
    for img_id in coco.getImgIds():
        masks = [coco.annToMask(a) for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id))]
        if len(masks) > 1:
            assert np.stack(masks).sum(0).max() == 1


def test_mmdet_coco_dataset_reads_the_toy_set_with_masks(data_dir):
    from mmdet.datasets import CocoDataset
    with DefaultScope.overwrite_default_scope('mmdet'):
        ds = CocoDataset(data_root=str(data_dir / 'toy_coco'), ann_file='annotations/instances_train.json',
                         data_prefix=dict(img='train/'), metainfo=dict(classes=toy.CLASSES),
                         pipeline=[dict(type='LoadImageFromFile'),
                                   dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                                   dict(type='PackDetInputs')])
        sample = ds[0]['data_samples']
    assert len(ds) == 24
    assert len(sample.gt_instances) > 0
    assert sample.gt_instances.masks.masks.shape[1:] == (160, 160)


def test_ade20k_layout_reads_in_mmseg_with_ignore_band_and_classes(data_dir):
    from mmseg.datasets import BaseSegDataset
    root = data_dir / 'toy_ade/ADEChallengeData2016'
    with DefaultScope.overwrite_default_scope('mmseg'):
        ds = BaseSegDataset(data_root=str(root), data_prefix=dict(img_path='images/training',
                                                                  seg_map_path='annotations/training'),
                            img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True,
                            metainfo=dict(classes=toy.SEG_CLASSES),
                            pipeline=[dict(type='LoadImageFromFile'),
                                      dict(type='LoadAnnotations', reduce_zero_label=True),
                                      dict(type='PackSegInputs')])
        labels = ds[0]['data_samples'].gt_sem_seg.data.unique().tolist()
    assert len(ds) == 24
    assert set(labels) <= set(range(len(toy.SEG_CLASSES))) | {255} and 255 in labels and 0 in labels
    raw = np.array(Image.open(root / 'annotations/validation/000000.png'))
    assert raw.min() == 0 and raw.max() <= len(toy.SEG_CLASSES)
    assert len(list((root / 'images/validation').glob('*.jpg'))) == 8


def test_coco_and_ade_sets_show_the_same_scenes(data_dir):
    coco_img = np.array(Image.open(data_dir / 'toy_coco/val/000003.jpg'))
    ade_img = np.array(Image.open(data_dir / 'toy_ade/ADEChallengeData2016/images/validation/000003.jpg'))
    assert np.array_equal(coco_img, ade_img)
    ann = json.loads((data_dir / 'toy_coco/annotations/instances_val.json').read_text())
    assert {im['file_name'] for im in ann['images']} == {f'{i:06d}.jpg' for i in range(8)}
