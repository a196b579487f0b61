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
from .checkpoints import dump_weights, load_options_latest_checkpoint
from .evaluation import test
from .dataset import load_vocab
from .graph import LanguageModel, average_gradients, build_training_graph
from .loop import train

__all__ = ["train", "test", "load_vocab", "load_options_latest_checkpoint", "dump_weights", "LanguageModel",
           "build_training_graph", "average_gradients"]
