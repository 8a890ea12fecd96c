"""Check, before a Runner is built, that the files a config's datasets read exist.

Without the data, mmdet and mmseg fail deep inside dataset or metric construction
with a bare ``FileNotFoundError`` traceback. :func:`check_dataset_paths` instead
names every missing path, the config key that sets it, and how to get the data.
"""
import os.path as osp

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
    if missing:
        raise DatasetNotFoundError(missing, types, overrides)
