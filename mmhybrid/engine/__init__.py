"""Training-side pieces: the layer-wise learning-rate decay optimizer constructor."""
from .layer_decay import LayerDecayOptimizerConstructor

__all__ = ['LayerDecayOptimizerConstructor']
