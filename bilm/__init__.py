"""bilm: ELMo's bidirectional language model on current TensorFlow (``tensorflow.compat.v1``).

Importing ``bilm`` changes no global TensorFlow setting, and does not import
TensorFlow itself: the names below load their modules (and TensorFlow) when first
used, so that ``bilm --help`` and the command's start-up stay quick and quiet.
"""
import importlib
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
    "Batcher": "batching",
    "TokenBatcher": "batching",
    "BidirectionalLanguageModel": "inference",
    "weight_layers": "elmo",
    "dump_token_embeddings": "dumps",
    "dump_bilm_embeddings": "dumps",
    "ElmoEmbedder": "embedder",
    "merge_shards": "dumps",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bilm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
