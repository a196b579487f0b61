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


def char_cnn_embedding(char_ids, options):
    """Character ids -> context-independent token vectors.

    Args:
        char_ids: int32 (B, T, C), values in [0, ``n_characters``).
        options: model options (``char_cnn`` and ``lstm.projection_dim`` are read).
    Returns:
        float32 (B, T, P).
    """
    cnn = options["char_cnn"]
    char_dim = cnn["embedding"]["dim"]
    n_filters = opts.n_cnn_filters(options)
    proj_dim = opts.projection_dim(options)
    activation = tf.nn.relu if cnn["activation"] == "relu" else tf.nn.tanh

    char_embed = tf.get_variable(
        "char_embed", [cnn["n_characters"], char_dim], DTYPE, tf.random_uniform_initializer(-1.0, 1.0)
    )
    x = tf.nn.embedding_lookup(char_embed, char_ids)  # (B, T, C, E)

    with tf.variable_scope("CNN"):
        pooled = []
        for i, (width, num) in enumerate(cnn["filters"]):
            if cnn["activation"] == "relu":
                w_init = tf.random_uniform_initializer(-0.05, 0.05)
            else:
                w_init = tf.random_normal_initializer(0.0, np.sqrt(1.0 / (width * char_dim)))
            w = tf.get_variable(f"W_cnn_{i}", [1, width, char_dim, num], DTYPE, w_init)
            b = tf.get_variable(f"b_cnn_{i}", [num], DTYPE, tf.zeros_initializer())
            conv = tf.nn.conv2d(x, w, strides=[1, 1, 1, 1], padding="VALID") + b  # (B, T, C - width + 1, num)
            pooled.append(activation(tf.reduce_max(conv, axis=2)))  # (B, T, num)
    token_vectors = tf.concat(pooled, axis=2)  # (B, T, F)

    batch_and_time = tf.shape(token_vectors)[:2]
    flat = tf.reshape(token_vectors, [-1, n_filters])  # (B * T, F)
    for k in range(cnn.get("n_highway") or 0):
        flat = _highway(flat, n_filters, f"CNN_high_{k}")
    if n_filters != proj_dim:
        with tf.variable_scope("CNN_proj"):
            w = tf.get_variable("W_proj", [n_filters, proj_dim], DTYPE, tf.random_normal_initializer(0.0, np.sqrt(1.0 / n_filters)))
            b = tf.get_variable("b_proj", [proj_dim], DTYPE, tf.zeros_initializer())
        flat = tf.matmul(flat, w) + b  # (B * T, P)
    return tf.reshape(flat, tf.concat([batch_and_time, [proj_dim]], axis=0))


def _highway(x, size, scope):
    """g * relu(x Wt + bt) + (1 - g) * x with g = sigmoid(x Wc + bc); x: (N, F)."""
    init = tf.random_normal_initializer(0.0, np.sqrt(1.0 / size))
    with tf.variable_scope(scope):
        w_carry = tf.get_variable("W_carry", [size, size], DTYPE, init)
        b_carry = tf.get_variable("b_carry", [size], DTYPE, tf.constant_initializer(-2.0))
        w_transform = tf.get_variable("W_transform", [size, size], DTYPE, init)
        b_transform = tf.get_variable("b_transform", [size], DTYPE, tf.zeros_initializer())
    gate = tf.nn.sigmoid(tf.matmul(x, w_carry) + b_carry)
    transformed = tf.nn.relu(tf.matmul(x, w_transform) + b_transform)
    return gate * transformed + (1.0 - gate) * x


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

    The input part of every gate, ``x W_x + B``, is one matrix product for all steps
    outside the recurrence; the loop only adds ``h W_h`` and stops after the longest
    sequence. Gates are split as i, j, f, o with forget bias 1.0; the cell is clipped
    to +-cell_clip, the output ``o * tanh(c)`` projected by ``W_P_0`` (when P < D) and
    clipped to +-proj_clip.

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

    batch_size, max_time = tf.shape(inputs)[0], tf.shape(inputs)[1]
    n_steps = max_time if lengths is None else tf.minimum(tf.reduce_max(lengths), max_time)
    time_major = tf.transpose(inputs, [1, 0, 2])[:n_steps]  # (steps, B, P)
    gates_x = tf.matmul(tf.reshape(time_major, [-1, in_dim]), kernel_x) + bias
    gates_x = tf.reshape(gates_x, [n_steps, batch_size, 4 * dim])
    gates_x = tf.TensorArray(DTYPE, size=n_steps, infer_shape=True).unstack(gates_x)
    outputs = tf.TensorArray(DTYPE, size=n_steps, element_shape=tf.TensorShape([None, out_dim]))

    def step(t, c_prev, h_prev, outputs):
        gates = gates_x.read(t) + tf.matmul(h_prev, kernel_h)  # (B, 4D)
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
        return t + 1, c, h, outputs.write(t, out)

    _, c, h, outputs = tf.while_loop(
        lambda t, *_: t < n_steps, step, (tf.constant(0), initial_state[0], initial_state[1], outputs),
    )
    outputs = tf.transpose(outputs.stack(), [1, 0, 2])  # (B, steps, P)
    outputs = tf.pad(outputs, [[0, 0], [0, max_time - n_steps], [0, 0]])
    return tf.ensure_shape(outputs, inputs.shape[:2].concatenate([out_dim])), (c, h)


def lstm_stack(inputs, initial_states, options, direction, lengths=None, keep_prob=None):
    """The stacked LSTM of one direction: ``RNN_{direction}/RNN/MultiRNNCell/Cell{l}``.

    Layer l > 0 adds its input to its output when ``lstm.use_skip_connections`` (the
    recurrent state is not changed). With ``keep_prob`` (training), each layer's input
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
        if keep_prob is not None:
            layer_input = tf.nn.dropout(layer_input, rate=1.0 - keep_prob)
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
