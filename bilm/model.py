"""The original library's ``bilm.model`` import path (the code lives in ``inference`` and ``dumps``)."""
from .dumps import dump_bilm_embeddings, dump_token_embeddings
from .inference import BidirectionalLanguageModel

__all__ = ["BidirectionalLanguageModel", "dump_token_embeddings", "dump_bilm_embeddings"]
