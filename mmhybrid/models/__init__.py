"""Backbones. Importing this module registers every family in ``mmhybrid.registry.MODELS``."""
from .conv2former import Conv2Former
from .crossformer import CrossFormer

__all__ = ['Conv2Former', 'CrossFormer']
