"""``bilm.export``: a biLM as a TF2 SavedModel (the code lives in ``bilm.embedding.export``)."""
from .embedding.export import export_saved_model

__all__ = ["export_saved_model"]
