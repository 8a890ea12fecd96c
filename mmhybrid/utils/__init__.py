"""Helpers for the project's tools: dataset checks, config walking, distributed launch (checkpoints: ``mmhybrid.checkpoints``)."""
from .datasets import DatasetClassesError, DatasetNotFoundError, check_dataset_classes, check_dataset_paths
from .launch import (LauncherError, finish_distributed, setup_distributed_without_cuda,
                     unused_parameters_message)

__all__ = [
    'DatasetClassesError', 'DatasetNotFoundError', 'check_dataset_classes',
    'check_dataset_paths', 'LauncherError',
    'finish_distributed', 'setup_distributed_without_cuda', 'unused_parameters_message'
]
