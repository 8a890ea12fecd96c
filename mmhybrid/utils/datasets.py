"""Check, before a Runner is built, that a config's datasets can be read and trained on.

Without the data, mmdet and mmseg fail deep inside dataset or metric construction
with a bare ``FileNotFoundError`` traceback. :func:`check_dataset_paths` instead
names every missing path, the config key that sets it, and how to get the data.
:func:`check_dataset_classes` stops a COCO-format dataset whose categories are not the
config's classes (mmdet would drop every image) in one line, and warns when training keeps
fewer than half of the images.
"""
import importlib
import json
import logging
import os.path as osp
from typing import List, Optional, Sequence, Tuple

from mmengine.logging import print_log

DATALOADER_EVALUATORS = {
    'train_dataloader': None,
    'val_dataloader': 'val_evaluator',
    'test_dataloader': 'test_evaluator',
}

_HOW_TO_GET = {
    'coco': ('COCO 2017: download train2017.zip, val2017.zip and '
             'annotations_trainval2017.zip from https://cocodataset.org/#download '
             'and unzip them into data/coco/ (data/coco/train2017/, '
             'data/coco/val2017/, data/coco/annotations/instances_*2017.json).'),
    'ade20k': ('ADE20K: download ADEChallengeData2016.zip from '
               'http://data.csail.mit.edu/places/ADEchallenge/'
               'ADEChallengeData2016.zip and unzip it into data/ade/ '
               '(data/ade/ADEChallengeData2016/images/, '
               'data/ade/ADEChallengeData2016/annotations/).'),
}
_HOW_TO_GET_OTHER = ('Put the dataset at the paths above (relative paths are '
                     'relative to the directory you run the command from).')


class DatasetNotFoundError(FileNotFoundError):
    """Raised by :func:`check_dataset_paths` when dataset files are missing.

    Args:
        missing (list[tuple[str, str]]): ``(config key, path)`` for each missing
            file or directory.
        dataset_types (set[str]): Lower-cased type names of the datasets (and
            evaluators) with missing paths; they select the download hints.
        overrides (list[str]): ``--cfg-options`` items that point the config
            elsewhere, e.g. ``'train_dataloader.dataset.data_root=/path/to/data/'``.
    """

    def __init__(self, missing, dataset_types, overrides):
        self.missing = missing
        lines = ['Dataset files not found:']
        lines += [f'  {path}  (set by {key})' for key, path in missing]
        lines.append('How to get the data:')
        hints = [hint for name, hint in _HOW_TO_GET.items()
                 if any(name in t for t in dataset_types)]
        lines += [f'  {hint}' for hint in hints or [_HOW_TO_GET_OTHER]]
        lines.append('Or point the config to where the data is: '
                     f'--cfg-options {" ".join(overrides)}')
        super().__init__('\n'.join(lines))


def _is_local(cfg):
    """Whether a dataset or evaluator config reads from the local file system.

    Args:
        cfg (dict): Dataset or evaluator config.

    Returns:
        bool: False when its ``backend_args`` name a non-local backend.
    """
    backend_args = cfg.get('backend_args') or {}
    return backend_args.get('backend', 'local') == 'local'


def _type_name(cfg):
    """Lower-cased type name of a dataset or evaluator config.

    Args:
        cfg (dict): A config with a ``type`` (str or class).

    Returns:
        str: e.g. ``'mmdet.cocodataset'``.
    """
    obj_type = cfg.get('type', '')
    return (obj_type if isinstance(obj_type, str) else obj_type.__name__).lower()


def _dataset_paths(dataset, key):
    """Files and directories a dataset config reads, wrappers included.

    Paths are joined with ``data_root`` the way mmengine's ``BaseDataset`` joins
    them: ``ann_file`` and each ``data_prefix`` value, unless absolute or empty.

    Args:
        dataset (dict): Dataset config; wrappers keep theirs under ``dataset``
            (RepeatDataset, ClassBalancedDataset, ...) or ``datasets``
            (ConcatDataset).
        key (str): Config key of ``dataset``, e.g. ``'train_dataloader.dataset'``.

    Yields:
        tuple[str, str, str, str]: Config key that sets the path, the path, the
        dataset's lower-cased type name, and a ``--cfg-options`` item that
        moves it (the dataset's ``data_root``).
    """
    if isinstance(dataset.get('dataset'), dict):
        yield from _dataset_paths(dataset['dataset'], f'{key}.dataset')
    for i, child in enumerate(dataset.get('datasets') or []):
        if isinstance(child, dict):
            yield from _dataset_paths(child, f'{key}.datasets.{i}')
    if not _is_local(dataset):
        return
    data_root = dataset.get('data_root') or ''
    named = [('ann_file', dataset.get('ann_file'))]
    named += [(f'data_prefix.{name}', prefix)
              for name, prefix in (dataset.get('data_prefix') or {}).items()]
    for name, path in named:
        if not isinstance(path, str):
            continue
        if not path and (name == 'ann_file' or not data_root):
            continue  # no annotation file (the dataset scans folders) / no folder
        full = path if osp.isabs(path) else osp.join(data_root, path)
        yield (f'{key}.{name}', full, _type_name(dataset),
               f'{key}.data_root=/path/to/your/data/')


def _evaluator_paths(evaluator, key):
    """Annotation files an evaluator config reads (e.g. CocoMetric's ``ann_file``).

    Args:
        evaluator (dict | list[dict]): Evaluator config, or a list of them.
        key (str): Its config key, e.g. ``'val_evaluator'``.

    Yields:
        tuple[str, str, str, str]: Config key, path, lower-cased metric type
        name, and the ``--cfg-options`` item that moves it.
    """
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    for i, metric in enumerate(metrics):
        if not isinstance(metric, dict) or not _is_local(metric):
            continue
        ann_file = metric.get('ann_file')
        if isinstance(ann_file, str) and ann_file:
            metric_key = key if metric is evaluator else f'{key}.{i}'
            yield (f'{metric_key}.ann_file', ann_file, _type_name(metric),
                   f'{metric_key}.ann_file=/path/to/your/annotations.json')


def _missing_paths(cfg, dataloaders=None):
    """The missing dataset paths ``(config key, path)`` (each once), the type names of their datasets,
    and the ``--cfg-options`` items that move them (see :func:`check_dataset_paths`)."""
    if dataloaders is None:
        dataloaders = [k for k in DATALOADER_EVALUATORS if cfg.get(k) is not None]
    found = []
    for loader_key in dataloaders:
        loader = cfg.get(loader_key)
        if isinstance(loader, dict) and isinstance(loader.get('dataset'), dict):
            found += _dataset_paths(loader['dataset'], f'{loader_key}.dataset')
        evaluator_key = DATALOADER_EVALUATORS.get(loader_key)
        if evaluator_key and cfg.get(evaluator_key) is not None:
            found += _evaluator_paths(cfg.get(evaluator_key), evaluator_key)
    missing, types, overrides = [], set(), []
    for key, path, type_name, override in found:
        if '://' in path or osp.exists(path):
            continue
        if path not in [p for _, p in missing]:
            missing.append((key, path))
        types.add(type_name)
        if override not in overrides:
            overrides.append(override)
    return missing, types, overrides


def missing_dataset_paths(cfg, dataloaders=None) -> List[Tuple[str, str]]:
    """``(config key, path)`` of every file or folder the datasets (and evaluators) of
    ``dataloaders`` read that does not exist (see :func:`check_dataset_paths`).

    Args:
        cfg (mmengine.Config | dict): The full config.
        dataloaders (Sequence[str], optional): Dataloader keys; by default every one the config sets.
    """
    return _missing_paths(cfg, dataloaders)[0]


def check_dataset_paths(cfg, dataloaders=None):
    """Raise :class:`DatasetNotFoundError` if files the datasets read are missing.

    Checks each dataloader's dataset (``data_root`` + ``ann_file``, ``data_root``
    + each ``data_prefix`` value) and the evaluator that goes with it (its
    ``ann_file``). Paths on non-local backends and URLs are not checked.

    Args:
        cfg (mmengine.Config | dict): The full config.
        dataloaders (Sequence[str], optional): The dataloader keys the command
            uses, e.g. ``['train_dataloader', 'val_dataloader']``. Defaults to
            every one of ``train_dataloader``, ``val_dataloader`` and
            ``test_dataloader`` that the config sets.

    Raises:
        DatasetNotFoundError: Lists every missing path (each once) with the key
            that sets it, how to download COCO / ADE20K, and which
            ``--cfg-options`` point elsewhere.
    """
    missing, types, overrides = _missing_paths(cfg, dataloaders)
    if missing:
        raise DatasetNotFoundError(missing, types, overrides)


# ---------------------------------------------------------------------------------------
# the config's classes against a COCO-format dataset's categories
# ---------------------------------------------------------------------------------------

class DatasetClassesError(ValueError):
    """A COCO-format dataset none of whose categories is among the config's classes (every
    annotation, then every training image, would be dropped)."""


def _dataset_nodes(dataset: dict, key: str):
    """``(config key, dataset config)`` for a dataset config and the datasets it wraps."""
    if isinstance(dataset.get('dataset'), dict):
        yield from _dataset_nodes(dataset['dataset'], f'{key}.dataset')
    for i, child in enumerate(dataset.get('datasets') or []):
        if isinstance(child, dict):
            yield from _dataset_nodes(child, f'{key}.datasets.{i}')
    if dataset.get('ann_file'):
        yield key, dataset


def config_classes(dataset: dict, scope: Optional[str]) -> Optional[Tuple[str, ...]]:
    """The classes a dataset config keeps: its ``metainfo.classes``, else its class's ``METAINFO``."""
    metainfo = dataset.get('metainfo') or {}
    if metainfo.get('classes'):
        return tuple(metainfo['classes'])
    dataset_type = dataset.get('type')
    if isinstance(dataset_type, str):
        try:   # the registry of the config's scope (mmdet's), which imports its datasets on demand
            dataset_type = importlib.import_module(f'{scope or "mmengine"}.registry').DATASETS.get(dataset_type)
        except (ImportError, KeyError):
            return None
    classes = (getattr(dataset_type, 'METAINFO', None) or {}).get('classes')
    return tuple(classes) if classes else None


def _read_coco(path: str) -> Optional[dict]:
    """A COCO-format annotation file (a JSON object with ``categories`` and ``images``), else None."""
    if not path.endswith('.json') or not osp.isfile(path):
        return None
    with open(path) as f:
        try:
            data = json.load(f)
        except ValueError:
            return None
    if not isinstance(data, dict) or 'categories' not in data or 'images' not in data:
        return None
    return data


def _short(names: Sequence[str], limit: int = 8) -> str:
    shown = ', '.join(repr(n) for n in names[:limit])
    return shown + (f', ... ({len(names)} in all)' if len(names) > limit else '')


def _kept_images(coco: dict, cat_ids: set, min_size: int) -> int:
    """How many images mmdet's CocoDataset keeps for training (``filter_empty_gt``): those with an
    annotation of a kept category and a shorter side of at least ``min_size``."""
    with_ann = {a['image_id'] for a in coco.get('annotations', []) if a.get('category_id') in cat_ids}
    return sum(1 for im in coco['images']
               if im['id'] in with_ann and min(im.get('width', min_size), im.get('height', min_size)) >= min_size)


def check_dataset_classes(cfg, dataloaders: Sequence[str], log: bool = False) -> List[str]:
    """Compare the classes of a config's COCO-format datasets with the categories of their files.

    mmdet keeps only the annotations whose category name is among the config's classes
    (``metainfo.classes``, by default COCO's 80), then drops training images left without one;
    a dataset with other categories then ends in a deep error inside mmengine.

    Args:
        cfg (mmengine.Config | dict): The full config.
        dataloaders (Sequence[str]): The dataloader keys the command uses.
        log (bool): Also log the warnings (mmengine's current logger). A distributed tool logs them
            once per machine (local rank 0).

    Returns:
        list[str]: Warnings: a training set that keeps fewer than half of its images.

    Raises:
        DatasetClassesError: a dataset none of whose categories is a config class (or that keeps no
            training image), in one line that names both sets and the settings to change.
    """
    warnings_, scope = [], cfg.get('default_scope')
    for loader_key in dataloaders:
        loader = cfg.get(loader_key)
        if not isinstance(loader, dict) or not isinstance(loader.get('dataset'), dict):
            continue
        for key, dataset in _dataset_nodes(loader['dataset'], f'{loader_key}.dataset'):
            if not _is_local(dataset) or not isinstance(dataset.get('ann_file'), str):
                continue
            path = dataset['ann_file']
            path = path if osp.isabs(path) else osp.join(dataset.get('data_root') or '', path)
            classes, coco = config_classes(dataset, scope), _read_coco(path)
            if classes is None or coco is None:
                continue
            categories = {c['name']: c['id'] for c in coco['categories']}
            cat_ids = {categories[c] for c in classes if c in categories}
            if not cat_ids:
                raise DatasetClassesError(_no_class_message(path, list(categories), classes))
            filter_cfg = dataset.get('filter_cfg') or {}
            if loader_key == 'train_dataloader' and filter_cfg.get('filter_empty_gt'):
                kept, total = _kept_images(coco, cat_ids, filter_cfg.get('min_size', 0)), len(coco['images'])
                if kept == 0:
                    raise DatasetClassesError(
                        f'{path}: no training image has an annotation of the config\'s classes '
                        f'({_short(classes)}) at least {filter_cfg.get("min_size", 0)} px on its shorter side: '
                        f'check the annotations, or {key}.filter_cfg.')
                if kept < total / 2:
                    warnings_.append(
                        f'{key}: {kept} of {total} images ({100 * kept / total:.0f}%) have an annotation of the '
                        f'config\'s classes and are trained on; the other {total - kept} are dropped '
                        f'(filter_cfg.filter_empty_gt). {len(cat_ids)} of the {len(categories)} categories in '
                        f'{path} are among the config\'s {len(classes)} classes.')
    if log:
        for warning in warnings_:
            print_log(warning, logger='current', level=logging.WARNING)
    return warnings_


def _no_class_message(path: str, categories: List[str], classes: Sequence[str]) -> str:
    return (f'{path}: none of its {len(categories)} categories ({_short(categories)}) is among the config\'s '
            f'{len(classes)} classes ({_short(classes)}), so every annotation and every training image would '
            f'be dropped. Set metainfo=dict(classes=(...)) to your categories on every split '
            f'(train_dataloader.dataset, val_dataloader.dataset, test_dataloader.dataset), and the head\'s '
            f'num_classes to their number ({len(categories)}): model.bbox_head.num_classes (RetinaNet), '
            f'model.roi_head.bbox_head.num_classes and mask_head.num_classes (Mask R-CNN).')
