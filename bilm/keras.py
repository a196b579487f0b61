"""``bilm.keras``: ELMo as a Keras 3 layer, ``ELMo`` (the code lives in ``bilm.embedding.keras``)."""
from .embedding.keras import ELMo

__all__ = ["ELMo"]
