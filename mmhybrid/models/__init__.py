"""Backbones. Importing this module registers every family in ``mmhybrid.registry.MODELS``."""
from .cloformer import CloFormer
from .conformer import Conformer
from .conv2former import Conv2Former
from .crossformer import CrossFormer
from .crossformer_pp import CrossFormerPP
from .cvt import CvT

__all__ = ['CloFormer', 'Conformer', 'Conv2Former', 'CrossFormer', 'CrossFormerPP', 'CvT']
