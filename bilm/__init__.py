"""bilm: ELMo's bidirectional language model on current TensorFlow (``tensorflow.compat.v1``).

Where things are:

- ``bilm.core``: the model core (options, parameter layout, the network, states,
  weights, vocabularies and batchers, the inference graph, ELMo's mix, files);
- ``bilm.training``: the training wing (data, graph, loop, evaluation, checkpoints,
  fine-tuning, clusters); its ``__init__`` is the original's ``bilm.training``;
- ``bilm.embedding``: the embedding wing (``ElmoEmbedder``, the dumps, devices, Ray,
  export, the Keras layer);
- ``bilm.cli``: the ``bilm`` command (parsing and one call; nothing imports it);
- ``bilm.errors``: the exceptions; ``bilm.models``: the shipped model and data.

The other modules here are import paths, each re-exporting from the packages above:
the original's ``bilm.model``, ``bilm.data``, ``bilm.elmo`` (and ``bilm.training``),
and ``bilm``'s own ``bilm.precompute``, ``bilm.keras``, ``bilm.export``,
``bilm.pooling``, ``bilm.download``.

Importing ``bilm`` changes no global TensorFlow setting, and does not import
TensorFlow itself: the names below load their modules (and TensorFlow) when first
used, so that ``bilm --help`` and the command's start-up stay quick and quiet.
"""
from .core.lazy import lazy_names
import importlib.util

__version__ = "0.2.0"


def _tensorflow_missing():
    try:
        return importlib.util.find_spec("tensorflow") is None
    except (ImportError, ValueError):
        return True


if _tensorflow_missing():  # pragma: no cover - depends on the environment
    raise ImportError(
        "bilm needs TensorFlow, which is not installed: in bilm's clone, `pip install '.[cpu]'` (CPU) or "
        "`pip install '.[gpu]'` (NVIDIA GPU); or install TensorFlow yourself (`pip install tensorflow`)"
    )

# name -> module that defines it (the original's ``from bilm import ...`` names first).
_EXPORTS = {
    "Batcher": "core.batching",
    "TokenBatcher": "core.batching",
    "BidirectionalLanguageModel": "core.inference",
    "weight_layers": "core.elmo",
    "dump_token_embeddings": "embedding.dumps",
    "dump_bilm_embeddings": "embedding.dumps",
    "ElmoEmbedder": "embedding.embedder",
    "merge_shards": "embedding.dumps",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
