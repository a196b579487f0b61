"""Earlier releases' ``bilm.precompute`` import path (the code lives in ``bilm.embedding``)."""
from .embedding.dumps import dump_bilm_embeddings, dump_token_embeddings, merge_shards
from .embedding.embedder import ElmoEmbedder

__all__ = ["ElmoEmbedder", "dump_token_embeddings", "dump_bilm_embeddings", "merge_shards"]
