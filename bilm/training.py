"""The original library's ``bilm.training`` import path: training, evaluation, export of checkpoints.

The code lives in ``lm_graph`` (the training graph), ``trainer`` (the loop),
``evaluation`` (perplexity) and ``checkpoints`` (save directories, ``dump_weights``).
"""
from .checkpoints import dump_weights, load_options_latest_checkpoint
from .evaluation import test
from .lm_dataset import load_vocab
from .lm_graph import LanguageModel, average_gradients, build_training_graph
from .trainer import train

__all__ = ["train", "test", "load_vocab", "load_options_latest_checkpoint", "dump_weights", "LanguageModel",
           "build_training_graph", "average_gradients"]
