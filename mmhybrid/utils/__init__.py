"""Helpers for the project's tools: the safe checkpoint loader, dataset checks, CPU distributed launch."""
from .checkpoint import (CheckpointLoadError, CheckpointNotFoundError, install_safe_checkpoint_loaders,
                         load_checkpoint_file, mmengine_checkpoint_safe_globals)
from .datasets import DatasetClassesError, DatasetNotFoundError, check_dataset_classes, check_dataset_paths
from .launch import (LauncherError, finish_distributed, setup_distributed_without_cuda,
                     unused_parameters_message)

__all__ = [
    'CheckpointLoadError', 'CheckpointNotFoundError', 'install_safe_checkpoint_loaders', 'load_checkpoint_file',
    'mmengine_checkpoint_safe_globals', 'DatasetClassesError', 'DatasetNotFoundError', 'check_dataset_classes',
    'check_dataset_paths', 'LauncherError',
    'finish_distributed', 'setup_distributed_without_cuda', 'unused_parameters_message'
]
