"""Sentence vectors: masked mean or max pooling of token vectors, in TensorFlow and NumPy.

In a graph (``ops = model(ids)`` and ``elmo = weight_layers(...)["weighted_op"]``)::

    sentence = masked_mean(elmo, ops["mask"])        # (B, 2P)

From precomputed arrays (``ElmoEmbedder`` or an HDF5 dump)::

    vectors = sentence_vectors(embedder.embed_sentences(sentences), layer="average", pooling="mean")
"""
import numpy as np
import tensorflow.compat.v1 as tf

from ..errors import InputError

POOLINGS = ("mean", "max")
LAYER_CHOICES = ("all", "top", "average", "mix")


def masked_mean(values, mask):
    """Mean of ``values`` (B, T, D) over the positions where ``mask`` (B, T) is True -> (B, D); 0 if none."""
    weights = tf.cast(mask, values.dtype)[..., None]
    total = tf.reduce_sum(values * weights, axis=1)
    return total / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)


def masked_max(values, mask):
    """Maximum of ``values`` (B, T, D) over the positions where ``mask`` (B, T) is True -> (B, D); 0 if none."""
    masked = tf.where_v2(mask[..., None], values, tf.fill(tf.shape(values), values.dtype.min))
    return tf.where_v2(tf.reduce_any(mask, axis=1)[:, None], tf.reduce_max(masked, axis=1), 0.0)


def select_layers(embeddings, layer="average", mix_weights=None, gamma=1.0):
    """One token-vector array from a sentence's layers.

    Args:
        embeddings: float32 (n_layers + 1, n_tokens, 2P), as ``ElmoEmbedder`` returns.
        layer: ``"all"`` (unchanged), ``"top"``, ``"average"`` (mean of the layers), an
            int (that layer), or ``"mix"``: ``gamma * sum_l mix_weights[l] * layer_l``.
        mix_weights: the layer weights of ``"mix"``, used as given (e.g. the softmax of
            a trained ``{name}_ELMo_W``).
    Returns:
        float32 (n_tokens, 2P), or the input for ``"all"``.
    """
    embeddings = np.asarray(embeddings)
    n_layers = embeddings.shape[0]
    if layer == "all":
        return embeddings
    if layer == "top":
        return embeddings[-1]
    if layer == "average":
        return embeddings.mean(axis=0)
    if layer == "mix":
        if mix_weights is None or len(mix_weights) != n_layers:
            raise InputError(f"layer='mix' needs {n_layers} mix_weights (one per layer), got {mix_weights!r}")
        return (gamma * np.tensordot(np.asarray(mix_weights, np.float32), embeddings, axes=1)).astype(np.float32)
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool) and -n_layers <= layer < n_layers:
        return embeddings[layer]
    raise InputError(f"layer is {layer!r}; expected 'all', 'top', 'average', 'mix' or an int in [0, {n_layers})")


def pool_tokens(vectors, pooling):
    """Mean or max over the token axis (the one before last) of (..., n_tokens, D) -> (..., D); zeros for
    a sentence without tokens."""
    if pooling not in POOLINGS:
        raise InputError(f"pooling is {pooling!r}; expected one of {POOLINGS} (--pool)")
    vectors = np.asarray(vectors)
    if vectors.shape[-2] == 0:
        return np.zeros(vectors.shape[:-2] + vectors.shape[-1:], np.float32)
    pooled = vectors.mean(axis=-2) if pooling == "mean" else vectors.max(axis=-2)
    return pooled.astype(np.float32)


def sentence_vectors(embeddings, layer="average", pooling="mean", mix_weights=None, gamma=1.0):
    """float32 (n_sentences, 2P): one vector per sentence.

    Args:
        embeddings: a list of float32 (n_layers + 1, n_tokens, 2P), one per sentence.
        layer, mix_weights, gamma: which token vectors (see ``select_layers``; not "all").
        pooling: ``"mean"`` or ``"max"`` over the sentence's tokens (a sentence without
            tokens gets zeros).
    """
    if layer == "all":
        raise InputError("sentence_vectors needs one layer: 'top', 'average', 'mix' or an int, not 'all'")
    return np.stack([pool_tokens(select_layers(sentence, layer, mix_weights, gamma), pooling)
                     for sentence in embeddings])
