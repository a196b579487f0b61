"""The training wing, and the original library's ``bilm.training`` import path (the names below).

- ``dataset``: training text -> windows of token and character ids (``LMDataset``, ``BidirectionalLMDataset``);
- ``graph``: the training graph (the loss of a tower, towers, averaged gradients, the update);
- ``loop``: the training loop (``train``, new runs, restarts), checkpoints written as it goes;
- ``divergence``: when a run has diverged, and what it does then;
- ``evaluation``: held-out perplexity (``test``);
- ``checkpoints``: save directories, checkpoints of both layouts, ``dump_weights``;
- ``finetune``: fine-tuning with held-out evaluation and early stopping;
- ``cluster``: training across machines (TensorFlow's collective ops).

It builds on ``bilm.core`` only.
"""
from ..core.lazy import lazy_names

# The original's names -> the module that defines them, loaded when first used (so that importing one
# module of the wing, e.g. ``lm1b`` for the command line, does not import TensorFlow).
_EXPORTS = {
    "train": "loop",
    "test": "evaluation",
    "load_vocab": "dataset",
    "load_options_latest_checkpoint": "checkpoints",
    "dump_weights": "checkpoints",
    "LanguageModel": "graph",
    "build_training_graph": "graph",
    "average_gradients": "graph",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
