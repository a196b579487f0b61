"""Earlier releases' ``bilm.precompute`` import path (the code lives in ``embedder`` and ``dumps``)."""
from .dumps import dump_bilm_embeddings, dump_token_embeddings, merge_shards
from .embedder import ElmoEmbedder

__all__ = ["ElmoEmbedder", "dump_token_embeddings", "dump_bilm_embeddings", "merge_shards"]
