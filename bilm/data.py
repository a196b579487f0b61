"""The original library's ``bilm.data`` import path: vocabularies, batchers (``bilm.core``), training
data (``bilm.training.dataset``)."""
from .core.batching import Batcher, TokenBatcher
from .training.dataset import BidirectionalLMDataset, LMDataset
from .core.vocabulary import UnicodeCharsVocabulary, Vocabulary

__all__ = ["Vocabulary", "UnicodeCharsVocabulary", "Batcher", "TokenBatcher", "LMDataset", "BidirectionalLMDataset"]
