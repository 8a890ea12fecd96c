"""Backbones. Importing this module registers every family in ``mmhybrid.registry.MODELS``."""
from .crossformer import CrossFormer

__all__ = ['CrossFormer']
