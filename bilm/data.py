"""The original library's ``bilm.data`` import path: vocabularies and batchers."""
from .batching import Batcher, TokenBatcher
from .vocabulary import UnicodeCharsVocabulary, Vocabulary

__all__ = ["Vocabulary", "UnicodeCharsVocabulary", "Batcher", "TokenBatcher"]
