"""ELMo: a task-specific weighted sum of the biLM layers."""
import tensorflow.compat.v1 as tf


def weight_layers(name, bilm_ops, l2_coef=None, use_top_only=False, do_layer_norm=False):
    """Mix the biLM layers into one ELMo vector per token.

    ``ELMo = gamma * sum_l softmax(W + 1/L)_l * h_l`` with trainable ``{name}_ELMo_W``
    (L,) initialised to zeros and ``{name}_ELMo_gamma`` (1,) initialised to one.

    Args:
        name: prefix of the variable names; reuse a name (under a reusing variable
            scope) to share the weights between inputs.
        bilm_ops: the dict returned by calling a ``BidirectionalLanguageModel``.
        l2_coef: coefficient of the L2 regulariser ``l2_coef * sum(W ** 2)`` added to
            ``tf.GraphKeys.REGULARIZATION_LOSSES`` (0 when None).
        use_top_only: return the top layer (times gamma) instead of the mix.
        do_layer_norm: normalise each layer over its real (masked) positions first.
    Returns:
        dict with ``weighted_op`` float32 (B, T, 2P) and ``regularization_op``: a
        one-element list with the regulariser tensor (0.0 with ``use_top_only``).
    """
    lm_embeddings = bilm_ops["lm_embeddings"]  # (B, L, T, 2P)
    n_lm_layers = int(lm_embeddings.shape[1])
    with tf.control_dependencies([lm_embeddings, bilm_ops["mask"]]):
        if use_top_only:
            w, reg = None, 0.0
        else:
            w = tf.get_variable(f"{name}_ELMo_W", shape=(n_lm_layers,), initializer=tf.zeros_initializer(),
                                trainable=True)
            reg = _regularizer(w, l2_coef)
        gamma = tf.get_variable(f"{name}_ELMo_gamma", shape=(1,), initializer=tf.ones_initializer(), trainable=True)
        weighted_lm_layers = mix_layers(lm_embeddings, bilm_ops["mask"], w, gamma, do_layer_norm)
    return {"weighted_op": weighted_lm_layers, "regularization_op": reg}


def mix_layers(lm_embeddings, mask, w, gamma, do_layer_norm=False):
    """``gamma * sum_l softmax(w + 1/L)_l * layer_l`` (the top layer times gamma when ``w`` is None).

    Args:
        lm_embeddings: float32 (B, L, T, 2P); mask: bool (B, T).
        w: (L,) mix weights or None; gamma: (1,).
        do_layer_norm: normalise each layer by the mean and variance of its real positions first.
    Returns:
        float32 (B, T, 2P).
    """
    n_lm_layers, lm_dim = int(lm_embeddings.shape[1]), int(lm_embeddings.shape[3])
    mask_float = tf.cast(mask, tf.float32)
    broadcast_mask = tf.expand_dims(mask_float, axis=-1)  # (B, T, 1)

    def layer_norm(x):
        """Normalise x (B, T, 2P) by the mean and variance of its real positions."""
        x_masked = x * broadcast_mask
        n = tf.reduce_sum(mask_float) * lm_dim
        mean = tf.reduce_sum(x_masked) / n
        variance = tf.reduce_sum(((x_masked - mean) * broadcast_mask) ** 2) / n
        return tf.nn.batch_normalization(x, mean, variance, None, None, 1e-12)

    layers = tf.unstack(lm_embeddings, axis=1)  # L x (B, T, 2P)
    if w is None:
        return layers[-1] * gamma
    normed_weights = tf.unstack(tf.nn.softmax(w + 1.0 / n_lm_layers))
    return tf.add_n([weight * (layer_norm(layer) if do_layer_norm else layer)
                     for weight, layer in zip(normed_weights, layers)]) * gamma


def _regularizer(w, l2_coef):
    """[the L2 regulariser of ``w``], created and collected once per variable."""
    scope = w.op.name + "/Regularizer/"
    existing = [r for r in tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES) if r.name.startswith(scope)]
    if existing:  # the variable is reused: its regulariser is already collected
        return existing[:1]
    with tf.name_scope(scope):
        reg = l2_coef * tf.reduce_sum(tf.square(w)) if l2_coef is not None else tf.constant(0.0)
    tf.add_to_collection(tf.GraphKeys.REGULARIZATION_LOSSES, reg)
    return [reg]
