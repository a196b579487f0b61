"""The original library's ``bilm.model`` import path (the code lives in ``bilm.core.inference`` and
``bilm.embedding.dumps``)."""
from .embedding.dumps import dump_bilm_embeddings, dump_token_embeddings
from .core.inference import BidirectionalLanguageModel

__all__ = ["BidirectionalLanguageModel", "dump_token_embeddings", "dump_bilm_embeddings"]
