"""``bilm.download``: published models by name (the code lives in ``bilm.core.download``)."""
from .core.download import CATALOGUE, DownloadError, cache_dir, catalogue, download, model_files

__all__ = ["download", "model_files", "catalogue", "cache_dir", "CATALOGUE", "DownloadError"]
