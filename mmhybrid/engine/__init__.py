"""Training-side pieces: the layer-wise learning-rate decay optimizer constructor and
the mixed precision optimizer wrapper (CUDA or CPU bf16)."""
from .amp import MixedPrecisionOptimWrapper, configure_mixed_precision
from .layer_decay import LayerDecayOptimizerConstructor

__all__ = ['LayerDecayOptimizerConstructor', 'MixedPrecisionOptimWrapper', 'configure_mixed_precision']
