"""The embedding wing: vectors from a pretrained biLM, at any scale.

- ``embedder``: ``ElmoEmbedder``, vectors of tokenized sentences as NumPy arrays;
- ``job``: one dataset job (its checked settings, what is written per sentence, its run in this process);
- ``dumps``: the batch jobs ``dump_bilm_embeddings`` (which chooses where a job runs),
  ``dump_token_embeddings``, ``merge_shards``;
- ``devices``, ``ray``: a job shared among this machine's devices; on a Ray cluster;
- ``export``, ``keras``: a TF2 SavedModel; the Keras 3 layer ``ELMo``.
- ``precision_hint``: the line telling a float32 job how much faster bfloat16 measured here.

It builds on ``bilm.core`` only.
"""
