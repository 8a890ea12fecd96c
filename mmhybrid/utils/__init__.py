"""Helpers for the project's tools: checkpoint loading, dataset checks, CPU distributed launch."""
from .checkpoint import allow_mmengine_checkpoints, mmengine_checkpoint_safe_globals
from .datasets import DatasetNotFoundError, check_dataset_paths
from .launch import LauncherError, finish_distributed, setup_distributed_without_cuda

__all__ = [
    'allow_mmengine_checkpoints', 'mmengine_checkpoint_safe_globals',
    'DatasetNotFoundError', 'check_dataset_paths', 'LauncherError', 'finish_distributed',
    'setup_distributed_without_cuda'
]
