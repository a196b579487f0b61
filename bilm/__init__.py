"""bilm: ELMo's bidirectional language model on current TensorFlow (``tensorflow.compat.v1``).

Importing ``bilm`` changes no global TensorFlow setting.
"""
try:
    import tensorflow  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "bilm needs TensorFlow, which is not installed: install the package with "
        "`pip install 'bilm[cpu]'` (CPU) or `pip install 'bilm[gpu]'` (NVIDIA GPU), "
        "or install TensorFlow yourself (`pip install tensorflow`)"
    ) from err

from .batching import Batcher, TokenBatcher
from .elmo import weight_layers
from .model import BidirectionalLanguageModel
from .precompute import ElmoEmbedder, dump_bilm_embeddings, dump_token_embeddings, merge_shards

__version__ = "0.1.0"

__all__ = [
    "Batcher",
    "TokenBatcher",
    "BidirectionalLanguageModel",
    "weight_layers",
    "dump_token_embeddings",
    "dump_bilm_embeddings",
    "ElmoEmbedder",
    "merge_shards",
]
