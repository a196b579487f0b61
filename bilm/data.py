"""The original library's ``bilm.data`` import path: vocabularies, batchers, training data."""
from .batching import Batcher, TokenBatcher
from .lm_dataset import BidirectionalLMDataset, LMDataset
from .vocabulary import UnicodeCharsVocabulary, Vocabulary

__all__ = ["Vocabulary", "UnicodeCharsVocabulary", "Batcher", "TokenBatcher", "LMDataset", "BidirectionalLMDataset"]
