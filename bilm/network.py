"""The biLM network, defined once for both the inference and the training graph.

Every function creates its variables with ``tf.get_variable`` under the caller's
variable scope, named as the weight file's datasets (``char_embed``, ``CNN/W_cnn_0``,
``RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0``, ...). The initializers given here are the
original's training initializers; the inference graph replaces them with the
pretrained values through a custom getter.

Shapes: B batch, T positions, C ``max_characters_per_token``, E char embedding dim,
F total CNN filters, P ``projection_dim``, D ``lstm.dim``.
"""
import numpy as np
import tensorflow.compat.v1 as tf

from . import options as opts

DTYPE = tf.float32
LSTM_FORGET_BIAS = 1.0
STEPS_PER_BLOCK = 8


def char_cnn_embedding(char_ids, options, unique_chunk=None):
    """Character ids -> context-independent token vectors.

    Args:
        char_ids: int32 (B, T, C), values in [0, ``n_characters``).
        options: model options (``char_cnn`` and ``lstm.projection_dim`` are read).
        unique_chunk: None computes every position. A number computes each distinct
            token of the batch once (padding included, once), in equal chunks of at most
            ``unique_chunk`` tokens, which bounds the memory of the convolutions (inference only: the
            chunk loop is not meant for back-propagation).
    Returns:
        float32 (B, T, P).
    """
    cnn = options["char_cnn"]
    max_chars = cnn["max_characters_per_token"]
    embed_tokens = _char_cnn_layers(options)
    flat_ids = tf.reshape(char_ids, [-1, max_chars])  # (N, C)
    if unique_chunk is None:
        flat = embed_tokens(flat_ids)
    else:
        # A token's ids as a string key (ids < 262 are valid code points): exact de-duplication.
        keys = tf.strings.unicode_encode(flat_ids, "UTF-8")
        unique_keys, index = tf.unique(keys)  # index: (N,) into the U distinct tokens
        n_unique = tf.size(unique_keys)
        first = tf.math.unsorted_segment_min(tf.range(tf.shape(flat_ids)[0]), index, n_unique)
        unique_ids = tf.gather(flat_ids, first)  # (U, C)
        # Equal chunks of at most unique_chunk tokens: fewer than n_chunks padding rows.
        n_chunks = (n_unique + unique_chunk - 1) // unique_chunk
        chunk = (n_unique + n_chunks - 1) // n_chunks
        padded = tf.pad(unique_ids, [[0, n_chunks * chunk - n_unique], [0, 0]])
        chunks = tf.reshape(padded, [n_chunks, chunk, max_chars])
        vectors = tf.map_fn(embed_tokens, chunks, fn_output_signature=DTYPE, parallel_iterations=1)
        flat = tf.gather(tf.reshape(vectors, [-1, opts.projection_dim(options)]), index)  # (N, P)
    shape = tf.concat([tf.shape(char_ids)[:2], [opts.projection_dim(options)]], axis=0)
    return tf.reshape(flat, shape)


def _char_cnn_layers(options):
    """Create the char-CNN variables; return the function char ids (N, C) -> vectors (N, P)."""
    cnn = options["char_cnn"]
    char_dim = cnn["embedding"]["dim"]
    n_filters = opts.n_cnn_filters(options)
    proj_dim = opts.projection_dim(options)
    activation = tf.nn.relu if cnn["activation"] == "relu" else tf.nn.tanh

    char_embed = tf.get_variable(
        "char_embed", [cnn["n_characters"], char_dim], DTYPE, tf.random_uniform_initializer(-1.0, 1.0)
    )
    filters = []
    with tf.variable_scope("CNN"):
        for i, (width, num) in enumerate(cnn["filters"]):
            if cnn["activation"] == "relu":
                w_init = tf.random_uniform_initializer(-0.05, 0.05)
            else:
                w_init = tf.random_normal_initializer(0.0, np.sqrt(1.0 / (width * char_dim)))
            filters.append((tf.get_variable(f"W_cnn_{i}", [1, width, char_dim, num], DTYPE, w_init),
                            tf.get_variable(f"b_cnn_{i}", [num], DTYPE, tf.zeros_initializer())))
    highways = [_highway_variables(n_filters, f"CNN_high_{k}") for k in range(cnn.get("n_highway") or 0)]
    projection = None
    if n_filters != proj_dim:
        with tf.variable_scope("CNN_proj"):
            projection = (
                tf.get_variable("W_proj", [n_filters, proj_dim], DTYPE,
                                tf.random_normal_initializer(0.0, np.sqrt(1.0 / n_filters))),
                tf.get_variable("b_proj", [proj_dim], DTYPE, tf.zeros_initializer()),
            )

    def embed_tokens(ids):
        x = tf.nn.embedding_lookup(char_embed, ids)[None]  # (1, N, C, E)
        pooled = []
        for w, b in filters:
            conv = tf.nn.conv2d(x, w, strides=[1, 1, 1, 1], padding="VALID")  # (1, N, C - width + 1, num)
            # max(conv + b) == max(conv) + b exactly: the bias is added after pooling.
            pooled.append(activation(tf.reduce_max(conv, axis=2)[0] + b))  # (N, num)
        flat = tf.concat(pooled, axis=1)  # (N, F)
        for w_carry, b_carry, w_transform, b_transform in highways:
            gate = tf.nn.sigmoid(tf.matmul(flat, w_carry) + b_carry)
            flat = gate * tf.nn.relu(tf.matmul(flat, w_transform) + b_transform) + (1.0 - gate) * flat
        if projection is not None:
            flat = tf.matmul(flat, projection[0]) + projection[1]  # (N, P)
        return flat

    return embed_tokens


def _highway_variables(size, scope):
    """(W_carry, b_carry, W_transform, b_transform) of one highway layer: g * relu(x Wt + bt) + (1 - g) * x,
    g = sigmoid(x Wc + bc)."""
    init = tf.random_normal_initializer(0.0, np.sqrt(1.0 / size))
    with tf.variable_scope(scope):
        return (tf.get_variable("W_carry", [size, size], DTYPE, init),
                tf.get_variable("b_carry", [size], DTYPE, tf.constant_initializer(-2.0)),
                tf.get_variable("W_transform", [size, size], DTYPE, init),
                tf.get_variable("b_transform", [size], DTYPE, tf.zeros_initializer()))


def token_embedding(token_ids, n_tokens, dim):
    """Token ids (B, T) -> (B, T, dim) from the variable ``embedding`` (n_tokens, dim)."""
    table = tf.get_variable("embedding", [n_tokens, dim], DTYPE, tf.random_uniform_initializer(-1.0, 1.0))
    return tf.nn.embedding_lookup(table, token_ids)


def lstm_state_sizes(options):
    """(D, P'): sizes of the cell state c and of the output/hidden state h."""
    dim = options["lstm"]["dim"]
    return dim, min(opts.projection_dim(options), dim)


def lstm_layer(inputs, initial_state, options, lengths=None):
    """One LSTM layer (TensorFlow LSTMCell conventions) run over time.

    The input part of every gate, ``x W_x + B``, is one matrix product per block of
    ``STEPS_PER_BLOCK`` steps (bounding its memory), outside the recurrent product
    ``h W_h``; the loop stops after the longest sequence. Gates are split as i, j, f, o
    with forget bias 1.0; the cell is clipped to +-cell_clip, the output
    ``o * tanh(c)`` projected by ``W_P_0`` (when P < D) and clipped to +-proj_clip.

    Args:
        inputs: float32 (B, T, P).
        initial_state: (c (B, D), h (B, P)).
        options: model options (``lstm`` is read).
        lengths: int32 (B,) real steps per row, or None when every step is real.
    Returns:
        outputs float32 (B, T, P), zero past each row's length, and the final state
        (c, h) of each row after its last real step.
    """
    lstm = options["lstm"]
    dim, out_dim = lstm_state_sizes(options)
    cell_clip, proj_clip = lstm.get("cell_clip"), lstm.get("proj_clip")
    in_dim = int(inputs.shape[-1])
    with tf.variable_scope("LSTMCell"):
        kernel = tf.get_variable("W_0", [in_dim + out_dim, 4 * dim], DTYPE, tf.glorot_uniform_initializer())
        bias = tf.get_variable("B", [4 * dim], DTYPE, tf.zeros_initializer())
        projection = None
        if out_dim < dim:
            projection = tf.get_variable("W_P_0", [dim, out_dim], DTYPE, tf.glorot_uniform_initializer())
    kernel_x, kernel_h = kernel[:in_dim], kernel[in_dim:]

    batch_size = tf.compat.dimension_value(inputs.shape[0])  # static when known (training)
    if batch_size is None:
        batch_size = tf.shape(inputs)[0]
    max_time = tf.shape(inputs)[1]
    n_steps = max_time if lengths is None else tf.minimum(tf.reduce_max(lengths), max_time)
    n_blocks = (n_steps + STEPS_PER_BLOCK - 1) // STEPS_PER_BLOCK
    time_major = tf.transpose(inputs, [1, 0, 2])[:n_steps]  # (steps, B, P)
    time_major = tf.pad(time_major, [[0, n_blocks * STEPS_PER_BLOCK - n_steps], [0, 0], [0, 0]])
    outputs = tf.TensorArray(DTYPE, size=n_steps, element_shape=tf.TensorShape([None, out_dim]))

    def input_gates(t):
        """x W_x + B for steps [t, t + STEPS_PER_BLOCK): (STEPS_PER_BLOCK, B, 4D)."""
        x = tf.reshape(time_major[t:t + STEPS_PER_BLOCK], [-1, in_dim])
        return tf.reshape(tf.matmul(x, kernel_x) + bias, [STEPS_PER_BLOCK, batch_size, 4 * dim])

    def step(t, c_prev, h_prev, outputs, block):
        offset = t % STEPS_PER_BLOCK
        block = tf.cond(tf.equal(offset, 0), lambda: input_gates(t), lambda: block)
        gates = block[offset] + tf.matmul(h_prev, kernel_h)  # (B, 4D)
        i, j, f, o = tf.split(gates, 4, axis=1)
        c = tf.sigmoid(f + LSTM_FORGET_BIAS) * c_prev + tf.sigmoid(i) * tf.tanh(j)
        if cell_clip is not None:
            c = tf.clip_by_value(c, -cell_clip, cell_clip)
        h = tf.sigmoid(o) * tf.tanh(c)
        if projection is not None:
            h = tf.matmul(h, projection)
            if proj_clip is not None:
                h = tf.clip_by_value(h, -proj_clip, proj_clip)
        if lengths is not None:
            live = tf.expand_dims(t < lengths, 1)  # (B, 1)
            c = tf.where_v2(live, c, c_prev)
            out = tf.where_v2(live, h, tf.zeros_like(h))
            h = tf.where_v2(live, h, h_prev)
        else:
            out = h
        return t + 1, c, h, outputs.write(t, out), block

    empty_block = tf.zeros(tf.stack([STEPS_PER_BLOCK, batch_size, 4 * dim]))
    _, c, h, outputs, _ = tf.while_loop(
        lambda t, *_: t < n_steps, step,
        (tf.constant(0), initial_state[0], initial_state[1], outputs, empty_block),
    )
    outputs = tf.transpose(outputs.stack(), [1, 0, 2])  # (B, steps, P)
    outputs = tf.pad(outputs, [[0, 0], [0, max_time - n_steps], [0, 0]])
    return tf.ensure_shape(outputs, inputs.shape[:2].concatenate([out_dim])), (c, h)


def lstm_stack(inputs, initial_states, options, direction, lengths=None, dropout=None):
    """The stacked LSTM of one direction: ``RNN_{direction}/RNN/MultiRNNCell/Cell{l}``.

    Layer l > 0 adds its input to its output when ``lstm.use_skip_connections`` (the
    recurrent state is not changed). With a ``dropout`` rate (training), each layer's input
    is dropped out first.

    Args:
        inputs: float32 (B, T, P), already reversed for the backward LM.
        initial_states: per layer, (c (B, D), h (B, P)).
        direction: 0 forward, 1 backward (only names the variables).
        lengths: int32 (B,) or None (all steps real).
    Returns:
        per-layer outputs [(B, T, P)] and per-layer final states [(c, h)].
    """
    skip = options["lstm"].get("use_skip_connections", False)
    outputs, finals = [], []
    layer_input = inputs
    for layer, state in enumerate(initial_states):
        if dropout is not None:
            layer_input = tf.nn.dropout(layer_input, rate=dropout)
        with tf.variable_scope(f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}"):
            output, final = lstm_layer(layer_input, state, options, lengths)
        if skip and layer > 0:
            real = 1.0 if lengths is None else tf.sequence_mask(lengths, tf.shape(inputs)[1], DTYPE)[:, :, None]
            output = output + layer_input * real
        outputs.append(output)
        finals.append(final)
        layer_input = output
    return outputs, finals


class CarriedStates:
    """LSTM states kept in non-trainable variables of shape (max_batch_size, size).

    A batch of b rows starts from rows [:b] and writes its final states back to rows
    [:b]; rows b: are untouched. This is the original's statefulness, used by the
    inference graph and (with max_batch_size = batch size) by training.

    Args:
        options: model options.
        max_batch_size: rows allocated.
        collections: graph collections of the variables (default: global variables).
    """

    def __init__(self, options, max_batch_size, collections=None):
        sizes = lstm_state_sizes(options)
        self.max_batch_size = max_batch_size
        self.variables = [
            [
                tuple(
                    tf.Variable(tf.zeros([max_batch_size, size]), trainable=False, collections=collections, name=name)
                    for name, size in zip(("lstm_c", "lstm_h"), sizes)
                )
                for _ in range(opts.n_lstm_layers(options))
            ]
            for _ in range(2)
        ]

    def read(self, direction, batch_size):
        """Per layer (c (b, D), h (b, P)) from rows [:batch_size]."""
        return [tuple(v[:batch_size] for v in layer) for layer in self.variables[direction]]

    def write(self, direction, final_states, batch_size):
        """Ops writing per-layer final states into rows [:batch_size]."""
        return [
            var[:batch_size].assign(value)
            for layer, final in zip(self.variables[direction], final_states)
            for var, value in zip(layer, final)
        ]

    def reset(self):
        """An op setting every row of every state to zero."""
        return tf.group(*[v.assign(tf.zeros_like(v)) for d in self.variables for layer in d for v in layer])


class FixedStates:
    """The same initial LSTM state for every sentence: zeros, or given vectors (warm).

    A sentence's outputs then do not depend on its neighbours, its position in the
    batch or the batch size. Same interface as ``CarriedStates``; ``write`` does nothing.

    Args:
        options: model options.
        values: None for zeros, else ``[direction][layer] = (c (D,), h (P,))`` arrays.
    """

    def __init__(self, options, values=None):
        self.options = options
        self.values = values

    def read(self, direction, batch_size):
        sizes = lstm_state_sizes(self.options)
        states = []
        for layer in range(opts.n_lstm_layers(self.options)):
            if self.values is None:
                states.append(tuple(tf.zeros(tf.stack([batch_size, size])) for size in sizes))
            else:
                states.append(tuple(tf.tile(tf.constant(v[None], DTYPE), tf.stack([batch_size, 1]))
                                    for v in self.values[direction][layer]))
        return states

    def write(self, direction, final_states, batch_size):
        return []
