"""``bilm.pooling``: sentence vectors by masked pooling (the code lives in ``bilm.core.pooling``)."""
from .core.pooling import masked_max, masked_mean, select_layers, sentence_vectors

__all__ = ["masked_mean", "masked_max", "select_layers", "sentence_vectors"]
