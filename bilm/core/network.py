"""The biLM network, defined once: char CNN, highway, projection, LSTM, stacked LSTMs.

The layers are functions of their inputs and of a ``params`` mapping
``{parameter name: variable or tensor}`` (names from ``bilm.core.layout``), so the same
math serves the inference graph, the training graph and the Keras layer.
``create_variables`` makes that mapping in a graph with ``tf.get_variable`` under the
caller's variable scope (custom getters apply: the inference graph's reads the
pretrained values from the weight file).

Shapes: B batch, T positions, C ``max_characters_per_token``, E char embedding dim,
F total CNN filters, P ``projection_dim``, D ``lstm.dim``.
"""
import functools
import json
import weakref

import tensorflow.compat.v1 as tf

from . import layout, sessions

DTYPE = tf.float32
LSTM_FORGET_BIAS = 1.0
STEPS_PER_BLOCK = 8


class Packed:
    """A weight matrix whose values do not change while its graph runs (a pretrained model's), marked
    for ``_product`` to have it packed once (``packs``)."""

    def __init__(self, weight):
        self.weight = weight


_PACKING_PRODUCT = "_MklNativeFusedMatMul"  # TensorFlow's oneDNN product with a bias, on the CPU


@functools.lru_cache(maxsize=None)
def packs(dtype):
    """Whether this process packs the products of ``Packed`` weights of ``dtype``.

    TensorFlow's oneDNN CPU products rearrange their right operand into the blocked layout
    of the CPU's instructions at every call, unless the product is told its weight is a
    constant: then it does so once, at its first run, and keeps the packed copy. For the
    LSTM steps of inference, whose small products each read a whole recurrent matrix, that
    makes a bfloat16 step's products 1.3x (64 rows) to 3x (4 rows) faster
    (``benchmarks/lstm_step_products.py``), and the dump gives the same bits
    (``benchmarks/vs_original.py``). True for bfloat16 where oneDNN is on (TensorFlow's
    default on x86 Linux; ``TF_ENABLE_ONEDNN_OPTS=0`` turns it off), has that product for
    the type, and no GPU is visible (the product has CPU kernels only). False for float32,
    whose packed products are other bits than the straightforward ones (float32 is exact),
    and for float16 (not measured).
    """
    from tensorflow.python.util import _pywrap_util_port

    if dtype != tf.bfloat16 or not _pywrap_util_port.IsMklEnabled() or tf.config.list_physical_devices("GPU"):
        return False
    return bool(_packing_kernel_label(dtype))


@functools.lru_cache(maxsize=None)
def _packing_kernel_label(dtype):
    """The label of ``_PACKING_PRODUCT``'s CPU kernel for ``dtype``, or None where it has none."""
    from tensorflow.python.framework import kernels

    for kernel in kernels.get_registered_kernels_for_op(_PACKING_PRODUCT).kernel:
        types = [t for c in kernel.constraint if c.name == "T" for t in c.allowed_values.list.type]
        if kernel.device_type == "CPU" and dtype.as_datatype_enum in types:
            return kernel.label
    return None


def _packed_product(x, weight):
    """x (N, in) @ weight (in, out), both of the weight's type, by ``_PACKING_PRODUCT`` told that the
    weight is constant (``is_filter_const``): packed at its first run, then reused (``packs``).
    The bias it requires is zero, which leaves the product as it is."""
    from tensorflow.core.framework import attr_value_pb2

    def attr(**value):
        return attr_value_pb2.AttrValue(**value)

    dtype = weight.dtype.base_dtype
    zero_bias = tf.zeros([int(weight.shape[1])], dtype)
    op = tf.get_default_graph().create_op(
        _PACKING_PRODUCT, [x, tf.convert_to_tensor(weight), zero_bias], [dtype], name="packed_product",
        attrs={"T": attr(type=dtype.as_datatype_enum), "num_args": attr(i=1),
               "fused_ops": attr(list=attr_value_pb2.AttrValue.ListValue(s=[b"BiasAdd"])),
               "is_filter_const": attr(b=True), "_kernel": attr(s=_packing_kernel_label(dtype).encode())})
    return op.outputs[0]


def _product(x, weight):
    """x (..., in) x weight (in, out), in the weight's type (float32, or a reduced one for mixed
    precision: ``bilm.core.precision``); the result is float32. x is (N, in) for a ``Packed`` weight."""
    if isinstance(weight, Packed):
        return tf.cast(_packed_product(tf.cast(x, weight.weight.dtype), weight.weight), DTYPE)
    if weight.dtype.base_dtype == DTYPE:
        return tf.matmul(x, weight)
    return tf.cast(tf.matmul(tf.cast(x, weight.dtype), weight), DTYPE)


def initializer(param):
    """The TensorFlow initializer of a ``layout.Parameter`` (training's initial values)."""
    kind, *args = param.init
    if kind == "uniform":
        return tf.random_uniform_initializer(*args)
    if kind == "normal":
        return tf.random_normal_initializer(0.0, args[0])
    if kind == "glorot":
        return tf.glorot_uniform_initializer()
    if kind == "constant":
        return tf.constant_initializer(args[0])
    return tf.zeros_initializer()


def create_variables(parameters, **kwargs):
    """{name: variable} for ``parameters`` (a dict of ``layout.Parameter``), with ``tf.get_variable``."""
    return {name: tf.get_variable(name, param.shape, DTYPE, initializer(param), **kwargs)
            for name, param in parameters.items()}


def char_cnn_embedding(char_ids, options, params, distinct=False, chunk=None):
    """Character ids -> context-independent token vectors.

    Args:
        char_ids: int32 (B, T, C), values in [0, ``n_characters``).
        options: ``ModelOptions`` of a character model.
        params: the char CNN parameters by name.
        distinct: compute each distinct token of the batch once (padding included, once)
            and gather the vectors back: the same values, less work where tokens repeat.
        chunk: with ``distinct``, run the distinct tokens in equal chunks of at most this
            many, which bounds the memory of the convolutions (inference only: the
            chunk loop is not meant for back-propagation).
    Returns:
        float32 (B, T, P).
    """
    max_chars, proj_dim = options.max_characters, options.projection_dim
    flat_ids = tf.reshape(char_ids, [-1, max_chars])  # (N, C)
    if not distinct:
        flat = _embed_tokens(flat_ids, options, params)
    else:
        # A token's ids as a string key (ids < 262 are valid code points): exact de-duplication.
        keys = tf.strings.unicode_encode(flat_ids, "UTF-8")
        unique_keys, index = tf.unique(keys)  # index: (N,) into the U distinct tokens
        n_unique = tf.size(unique_keys)
        first = tf.math.unsorted_segment_min(tf.range(tf.shape(flat_ids)[0]), index, n_unique)
        unique_ids = tf.gather(flat_ids, first)  # (U, C)
        if chunk is None:
            vectors = _embed_tokens(unique_ids, options, params)  # (U, P)
        else:  # equal chunks of at most `chunk` tokens: fewer than n_chunks padding rows
            n_chunks = tf.maximum((n_unique + chunk - 1) // chunk, 1)  # an empty batch: one chunk of one
            size = tf.maximum((n_unique + n_chunks - 1) // n_chunks, 1)  # padding row, gathered by none
            padded = tf.pad(unique_ids, [[0, n_chunks * size - n_unique], [0, 0]])
            chunks = tf.reshape(padded, [n_chunks, size, max_chars])
            embed = tf.autograph.experimental.do_not_convert(lambda ids: _embed_tokens(ids, options, params))
            vectors = tf.map_fn(embed, chunks, fn_output_signature=DTYPE, parallel_iterations=1)  # (autograph
            # would only rewrite plain Python code, and took a third of a second doing so)
            vectors = tf.reshape(vectors, [-1, proj_dim])
        flat = tf.gather(vectors, index)  # (N, P)
    shape = tf.concat([tf.shape(char_ids)[:2], [proj_dim]], axis=0)
    return tf.reshape(flat, shape)


def _embed_tokens(ids, options, params):
    """Char ids (N, C) -> (N, P): embedding, convolutions + max-pooling, highways, projection."""
    activation = tf.nn.relu if options.activation == "relu" else tf.nn.tanh
    x = tf.expand_dims(tf.nn.embedding_lookup(params["char_embed"], ids), 0)  # (1, N, C, E)
    pooled = []
    for i, (width, _) in enumerate(options.filters):
        conv = tf.nn.conv2d(x, params[f"CNN/W_cnn_{i}"], strides=[1, 1, 1, 1], padding="VALID")  # (1, N, C', n)
        # Max over positions; max(conv + b) == max(conv) + b exactly: the bias is added after pooling.
        pooled_conv = tf.nn.max_pool2d(conv, [1, 1, options.max_characters - width + 1, 1], 1, "VALID")
        pooled_conv = tf.cast(tf.squeeze(pooled_conv, [0, 2]), DTYPE)  # (N, n); float32 from here on
        pooled.append(activation(pooled_conv + params[f"CNN/b_cnn_{i}"]))
    flat = tf.concat(pooled, axis=1)  # (N, F)
    for k in range(options.n_highway):
        p = {name: params[f"CNN_high_{k}/{name}"] for name in ("W_carry", "b_carry", "W_transform", "b_transform")}
        gate = tf.nn.sigmoid(_product(flat, p["W_carry"]) + p["b_carry"])
        flat = gate * tf.nn.relu(_product(flat, p["W_transform"]) + p["b_transform"]) + (1.0 - gate) * flat
    if "CNN_proj/W_proj" in params:
        flat = _product(flat, params["CNN_proj/W_proj"]) + params["CNN_proj/b_proj"]  # (N, P)
    return flat


def token_embedding(token_ids, params):
    """Token ids (B, T) -> (B, T, P) from the ``embedding`` parameter (V, P)."""
    return tf.cast(tf.nn.embedding_lookup(params[layout.TOKEN_EMBEDDING_NAME], token_ids), DTYPE)


def _clip(x, bound):
    """x clipped to +-bound in one operation (``tf.clip_by_value`` makes two)."""
    return tf.raw_ops.ClipByValue(t=x, clip_value_min=tf.constant(-bound, x.dtype),
                                  clip_value_max=tf.constant(bound, x.dtype))


def _cell(gates, c_prev, options):
    """The cell's update from its gate pre-activations (B, 4D) split as i, j, f, o: TensorFlow LSTMCell
    conventions (forget bias 1.0), the cell clipped to +-cell_clip.

    Returns the new cell, the output before its projection ``o * tanh(c)`` (B, D), and what the
    hand-written backward pass of a training window needs: the gates' activations and the unclipped cell."""
    i, j, f, o = tf.split(gates, 4, axis=-1)
    si, tj, sf, so = tf.sigmoid(i), tf.tanh(j), tf.sigmoid(f + LSTM_FORGET_BIAS), tf.sigmoid(o)
    c_unclipped = sf * c_prev + si * tj
    c = c_unclipped
    if options.cell_clip is not None:
        c = _clip(c, options.cell_clip)
    tanh_c = tf.tanh(c)
    output = so * tanh_c
    return c, output, (si, tj, sf, so, c_unclipped, tanh_c)


def _project(output, projection, options):
    """The projected, clipped output (B, P) and the product before its clip; the output itself without
    a projection."""
    if projection is None:
        return output, output
    h_unclipped = _product(output, projection)
    h = h_unclipped
    if options.proj_clip is not None:
        h = _clip(h, options.proj_clip)
    return h, h_unclipped


def lstm_cell(input_gates, state, options, kernel_h, projection=None):
    """One step of the LSTM cell: TensorFlow LSTMCell conventions.

    Args:
        input_gates: (B, 4D), the input part ``x W_x + B`` of the gates.
        state: (c (B, D), h (B, P)).
        kernel_h: (P, 4D), the recurrent part of ``W_0``; projection: (D, P) or None.
    Returns:
        the new (c, h) and the output before its projection ``o * tanh(c)`` (B, D). Gates
        are split as i, j, f, o with forget bias 1.0; the cell is clipped to
        +-cell_clip, the output projected (when P < D) and clipped to +-proj_clip.
    """
    c_prev, h_prev = state
    c, output, _ = _cell(input_gates + _product(h_prev, kernel_h), c_prev, options)
    h, _ = _project(output, projection, options)
    return (c, h), output


def lstm_layer(inputs, initial_state, options, kernel, bias, projection=None, lengths=None):
    """One LSTM layer (``lstm_cell``) run over time.

    With a static number of steps and no ``lengths`` (training windows), the steps are
    unrolled in the graph and the input part of every gate, ``x W_x + B``, is one
    matrix product for the whole window. Otherwise a ``while_loop`` runs the steps,
    computing the input part one block of ``STEPS_PER_BLOCK`` steps at a time (bounding
    its memory) and stopping after the longest sequence; that loop is one graph function
    that every layer of the graph calls (``_looped_function``; with packed weights, each
    layer and direction calls a copy of its own).

    Args:
        inputs: float32 (B, T, P).
        initial_state: (c (B, D), h (B, P)).
        options: ``ModelOptions``.
        kernel: (P + P, 4D) (``W_0``); bias: (4D,) (``B``); projection: (D, P) (``W_P_0``) or None. The
            kernel and projection may be ``Packed`` (``packed_lstm_weights``), with ``lengths``.
        lengths: int32 (B,) real steps per row, or None when every step is real.
    Returns:
        outputs float32 (B, T, P), zero past each row's length, and the final state
        (c, h) of each row after its last real step.
    """
    packed = None
    if isinstance(kernel, Packed):  # (then so is the projection)
        kernel, projection = kernel.weight, None if projection is None else projection.weight
        packed = (kernel.name, None if projection is None else projection.name)
    in_dim = int(inputs.shape[-1])
    kernel_x, kernel_h = tf.split(kernel, [in_dim, int(kernel.shape[0]) - in_dim], axis=0)  # (cheaper gradient)
    n_static = tf.compat.dimension_value(inputs.shape[1])
    if lengths is None and n_static is not None:
        return _unrolled_lstm(inputs, initial_state, options, kernel_x, kernel_h, bias, projection, n_static)
    if lengths is None:
        lengths = tf.fill([tf.shape(inputs)[0]], tf.shape(inputs)[1])
    weights = [kernel_x, kernel_h, bias] + ([] if projection is None else [projection])
    outputs, c, h = _looped_function(options, inputs, weights, packed)(inputs, initial_state[0], initial_state[1],
                                                                      lengths, *weights)
    c.set_shape(initial_state[0].shape)
    h.set_shape(initial_state[1].shape)
    return tf.ensure_shape(outputs, inputs.shape[:2].concatenate([options.state_sizes[1]])), (c, h)


_LOOPED = weakref.WeakKeyDictionary()  # graph -> {signature: the looped LSTM's graph function}


def _looped_function(options, inputs, weights, packed=None):
    """``_looped_lstm`` as one graph function per graph, options and types, taking the weights as arguments.

    A model's layers, both directions and its warm-up call the same function, so its while loop is
    built once instead of once per layer and direction (the full-size model's inference graph: 557
    operations instead of 997; ``ElmoEmbedder``'s set-up 1.68 s instead of 2.04, median of 5
    alternating runs). ``packed``: the names of a layer's ``Packed`` kernel and projection; every call
    with those weights (a model called on several placeholders) shares a copy of the function of
    their own (``_function_copy``), whose products keep one packed copy of them. Returns a function:
    (inputs, c0, h0, lengths, kernel_x, kernel_h, bias[, projection]) -> (outputs, c, h).
    """
    in_dim = int(inputs.shape[-1])
    key = (json.dumps(options.to_dict(), sort_keys=True), in_dim, tuple(w.dtype.base_dtype.name for w in weights),
           packed is not None)
    functions = _LOOPED.setdefault(tf.get_default_graph(), {})
    if key not in functions:
        dim, out_dim = options.state_sizes
        signature = [tf.TensorSpec([None, None, in_dim], DTYPE), tf.TensorSpec([None, dim], DTYPE),
                     tf.TensorSpec([None, out_dim], DTYPE), tf.TensorSpec([None], tf.int32)]
        signature += [tf.TensorSpec(w.shape, w.dtype.base_dtype) for w in weights]

        def looped(inputs, c0, h0, lengths, kernel_x, kernel_h, bias, projection=None):
            if packed is not None:
                kernel_x, kernel_h = Packed(kernel_x), Packed(kernel_h)
                projection = None if projection is None else Packed(projection)
            outputs, (c, h) = _looped_lstm(inputs, (c0, h0), options, kernel_x, kernel_h, bias, projection, lengths)
            return outputs, c, h

        functions[key] = tf.function(looped, input_signature=signature, autograph=False).get_concrete_function()
    if packed is None:
        return functions[key]
    own_key = key + packed
    if own_key not in functions:
        functions[own_key] = _function_copy(functions[key], f"_copy{len(functions)}")
    return functions[own_key]


def _function_copy(concrete, suffix):
    """A copy of a traced function without captured inputs, and of every function it calls, added to the
    default graph under their names + ``suffix``: its calls share no operation, hence no kernel (and
    no packed matrix), with the original's or another copy's, whether or not TensorFlow inlines them.
    Copying takes milliseconds where tracing the LSTM loop again took about 0.1 s. The copy runs
    without Grappler's rewrites, as the sessions of packing models do (``bilm.embedding.embedder``): the
    same bits, and 0.1 s less at the first run of the full-size model. Returns a function of the
    original's arguments giving the list of its outputs."""
    from tensorflow.core.framework import function_pb2, graph_pb2

    assert not concrete.captured_inputs, "a function copy takes no captured inputs"
    definitions = [concrete.function_def, *concrete.graph.as_graph_def().library.function]
    names = {definition.signature.name for definition in definitions}
    library = function_pb2.FunctionDefLibrary()
    for definition in definitions:
        copy = library.function.add()
        copy.CopyFrom(definition)
        copy.signature.name += suffix
        for node in copy.node_def:  # (While's body and cond, If's branches, nested calls)
            for value in node.attr.values():
                for called in [value.func, *value.list.func]:
                    if called.name in names:
                        called.name += suffix
    tf.import_graph_def(graph_pb2.GraphDef(library=library), name="")
    call = tf.raw_ops.StatefulPartitionedCall if concrete.function_def.signature.is_stateful \
        else tf.raw_ops.PartitionedCall
    name = concrete.function_def.signature.name + suffix
    without_rewrites = sessions.without_graph_rewrites(tf.ConfigProto()).SerializeToString()
    return lambda *args: call(args=list(args), Tout=[t.dtype for t in concrete.outputs], f=name,
                              config_proto=without_rewrites)


def _unrolled_lstm(inputs, state, options, kernel_x, kernel_h, bias, projection, n_steps):
    """Every step real, a static number of them (training windows): the input part of the gates in one
    product, the steps unrolled, and their back-propagation written out (``_window``)."""
    dim = options.state_sizes[0]
    in_dim = int(inputs.shape[-1])
    if n_steps == 0:
        return tf.zeros(tf.concat([tf.shape(inputs)[:2], [options.state_sizes[1]]], 0)), state
    # Time-major inside the window: a step's slice of a (T, B, n) tensor is contiguous, so splitting
    # the window into steps and stacking them back are plain copies (or none), not strided gathers.
    time_major = tf.transpose(inputs, [1, 0, 2])  # (T, B, P)
    input_gates = _product(tf.reshape(time_major, [-1, in_dim]), kernel_x) + bias
    input_gates = tf.reshape(input_gates, [n_steps, -1, 4 * dim])  # (T, B, 4D)
    weights = [kernel_h] if projection is None else [kernel_h, projection]
    outputs, c, h = _window(options, n_steps)(input_gates, state[0], state[1], *weights)
    return tf.transpose(outputs, [1, 0, 2]), (c, h)


def _window(options, n_steps):
    """The recurrence over a training window of ``n_steps`` steps, as one function with its gradient.

    Forward: ``lstm_cell``'s math, unrolled. Backward: back-propagation through time written
    out. What does not depend on the gradient flowing back (the activations' derivatives, the
    clips' masks) is computed for the whole window at once, which leaves about ten operations
    per step (automatic differentiation of the unrolled steps makes several times more), and
    each weight's gradient is one product over the window (``h_prev^T d_gates``,
    ``output^T d_h``) instead of one per step. Its gradients equal automatic
    differentiation's (tests/test_model.py).

    Takes time-major input gates (T, B, 4D), c0 (B, D), h0 (B, P), kernel_h (P, 4D)[, projection
    (D, P)]; returns time-major outputs (T, B, P), the final c and h.
    """
    @tf.custom_gradient
    def window(input_gates, c0, h0, kernel_h, *projection):
        projection = projection[0] if projection else None
        c, h, saved, outputs = c0, h0, [], []
        for step_gates in tf.unstack(input_gates, num=n_steps):
            c_prev, h_prev = c, h
            c, output, activations = _cell(step_gates + _product(h_prev, kernel_h), c_prev, options)
            h, h_unclipped = _project(output, projection, options)
            saved.append((c_prev, h_prev, output, h_unclipped) + activations)
            outputs.append(h)

        def gradient(d_outputs, d_c, d_h):
            c_prev, h_prev, output, h_unclipped, si, tj, sf, so, c_unclipped, tanh_c = (
                tf.stack(values) for values in zip(*saved))  # (T, B, n) each

            def per_step(values):
                return tf.unstack(values, num=n_steps)

            # d_c += d_output * d_c_d_output; d_gates = [d_c, d_c, d_c, d_output] * d_gates_d
            d_c_d_output = per_step(so * (1.0 - tanh_c * tanh_c))
            d_gates_d = per_step(tf.concat([tj * si * (1.0 - si), si * (1.0 - tj * tj), c_prev * sf * (1.0 - sf),
                                            tanh_c * so * (1.0 - so)], axis=-1))
            keep_c = keep_h = [None] * n_steps
            if options.cell_clip is not None:
                keep_c = per_step(tf.cast(tf.abs(c_unclipped) <= options.cell_clip, DTYPE))
            if projection is not None and options.proj_clip is not None:
                keep_h = per_step(tf.cast(tf.abs(h_unclipped) <= options.proj_clip, DTYPE))
            forget, d_steps = per_step(sf), per_step(d_outputs)
            kernel_h_t = tf.transpose(kernel_h)
            projection_t = None if projection is None else tf.transpose(projection)
            d_gates, d_projected = [None] * n_steps, [None] * n_steps
            for t in reversed(range(n_steps)):
                d_h = d_h + d_steps[t]
                d_output = d_h
                if projection is not None:
                    if keep_h[t] is not None:
                        d_h = d_h * keep_h[t]
                    d_projected[t] = d_h
                    d_output = _product(d_h, projection_t)
                d_c = d_c + d_output * d_c_d_output[t]
                if keep_c[t] is not None:
                    d_c = d_c * keep_c[t]
                d_gates[t] = tf.concat([d_c, d_c, d_c, d_output], axis=1) * d_gates_d[t]
                d_c = d_c * forget[t]
                d_h = _product(d_gates[t], kernel_h_t)

            d_input_gates = tf.stack(d_gates)  # (T, B, 4D)
            grads = [d_input_gates, d_c, d_h, _weight_gradient(h_prev, d_input_gates, kernel_h)]
            if projection is not None:
                grads.append(_weight_gradient(output, tf.stack(d_projected), projection))
            return grads

        return (tf.stack(outputs), c, h), gradient

    return window


def _weight_gradient(inputs, d_results, weight):
    """The gradient (in, out) of a weight multiplied at every step: ``inputs^T d_results`` over all
    steps at once, in the weight's type. inputs (T, B, in), d_results (T, B, out)."""
    def rows(values):
        return tf.cast(tf.reshape(values, [-1, int(values.shape[-1])]), weight.dtype)

    return tf.matmul(rows(inputs), rows(d_results), transpose_a=True)


def _looped_lstm(inputs, initial_state, options, kernel_x, kernel_h, bias, projection, lengths):
    """A while loop over the steps, stopping after the longest row; input gates per block of steps.

    Each step computes only the rows still running (``lengths``, int32 (B,)): the rows are taken
    longest first, so those are the first ``n(t) = #{lengths > t}``, and the others keep their
    final state (their outputs are zeros). Batches of sentences sorted by length
    still hold about a third of padding (the dump's batches of 64 on ``benchmarks/vs_original.py``'s
    corpus: 12,104 positions for 8,932 real ones); none of it is computed.
    """
    dim, out_dim = options.state_sizes
    in_dim = int(inputs.shape[-1])
    batch_size = tf.shape(inputs)[0]
    max_time = tf.shape(inputs)[1]
    order = tf.argsort(lengths, direction="DESCENDING", stable=True)
    inputs, lengths = tf.gather(inputs, order), tf.gather(lengths, order)
    initial_state = tuple(tf.gather(state, order) for state in initial_state)
    # (an empty batch has no longest row: every step is run, over no row)
    n_steps = tf.where_v2(tf.size(lengths) > 0, tf.minimum(tf.reduce_max(lengths), max_time), max_time)
    n_blocks = (n_steps + STEPS_PER_BLOCK - 1) // STEPS_PER_BLOCK
    time_major = tf.transpose(inputs, [1, 0, 2])[:n_steps]  # (steps, B, P)
    time_major = tf.pad(time_major, [[0, n_blocks * STEPS_PER_BLOCK - n_steps], [0, 0], [0, 0]])
    outputs = tf.TensorArray(DTYPE, size=n_steps, element_shape=tf.TensorShape([None, out_dim]))

    def running(t):
        return tf.reduce_sum(tf.cast(lengths > t, tf.int32))

    def input_gates(t):
        """x W_x + B for steps [t, t + STEPS_PER_BLOCK) of the rows running at t: (STEPS_PER_BLOCK, n(t), 4D)."""
        x = tf.reshape(time_major[t:t + STEPS_PER_BLOCK, :running(t)], [-1, in_dim])
        return tf.reshape(_product(x, kernel_x) + bias, [STEPS_PER_BLOCK, -1, 4 * dim])

    def step(t, c_prev, h_prev, outputs, block, done_c, done_h):
        """Step t of the n(t - 1) rows left (c_prev, h_prev), the n(t) still running at t: the others have
        their final states, kept in ``done_c``/``done_h`` (at index steps - 1 - t, the rows in order)."""
        offset = t % STEPS_PER_BLOCK
        block = tf.cond(tf.equal(offset, 0), lambda: input_gates(t), lambda: block)
        n = running(t)
        done_c, done_h = done_c.write(n_steps - 1 - t, c_prev[n:]), done_h.write(n_steps - 1 - t, h_prev[n:])
        (c, h), _ = lstm_cell(block[offset, :n], (c_prev[:n], h_prev[:n]), options, kernel_h, projection)
        return t + 1, c, h, outputs.write(t, tf.pad(h, [[0, batch_size - n], [0, 0]])), block, done_c, done_h

    def rows_done(size):
        return tf.TensorArray(DTYPE, size=n_steps, infer_shape=False, element_shape=tf.TensorShape([None, size]))

    no_block = tf.zeros([STEPS_PER_BLOCK, 0, 4 * dim])  # replaced at the first step
    _, c, h, outputs, _, done_c, done_h = tf.while_loop(
        lambda t, *_: t < n_steps, step,
        (tf.constant(0), initial_state[0], initial_state[1], outputs, no_block, rows_done(dim), rows_done(out_dim)),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, dim]), tf.TensorShape([None, out_dim]), None,
                          tf.TensorShape([STEPS_PER_BLOCK, None, 4 * dim]), None, None),
    )
    outputs = tf.transpose(outputs.stack(), [1, 0, 2])  # (B, steps, P)
    outputs = tf.pad(outputs, [[0, 0], [0, max_time - n_steps], [0, 0]])
    # every row's final state, and the rows back in their order
    c, h = tf.concat([c, done_c.concat()], 0), tf.concat([h, done_h.concat()], 0)
    back = tf.math.invert_permutation(order)
    return tf.gather(outputs, back), (tf.gather(c, back), tf.gather(h, back))


def packed_lstm_weights(params, options):
    """``params`` with the LSTMs' kernels and projections ``Packed``: for a model whose weights keep their
    values while its graph runs, in a type this process packs (``packs``)."""
    names = set()
    for direction in (0, 1):
        for layer in range(options.n_layers):
            kernel, _, projection = layout.lstm_names(direction, layer)  # (the bias is added in float32)
            names.update((kernel, projection))
    return {name: Packed(value) if name in names else value for name, value in params.items()}


def lstm_stack(inputs, initial_states, options, params, direction, lengths=None, dropout=None, seed=None):
    """The stacked LSTM of one direction (``RNN_{direction}/.../Cell{l}`` parameters).

    Layer l > 0 adds its input to its output when the options use skip connections
    (the recurrent state is not changed). With a ``dropout`` rate (training), each
    layer's input is dropped out first (layer l's operation seed ``seed + l`` when given).

    Args:
        inputs: float32 (B, T, P), already reversed for the backward LM.
        initial_states: per layer, (c (B, D), h (B, P)).
        params: the LSTM parameters by name.
        direction: 0 forward, 1 backward.
        lengths: int32 (B,) or None (all steps real).
    Returns:
        per-layer outputs [(B, T, P)] and per-layer final states [(c, h)].
    """
    outputs, finals = [], []
    layer_input = inputs
    for layer, state in enumerate(initial_states):
        if dropout:
            layer_input = tf.nn.dropout(layer_input, rate=dropout, seed=None if seed is None else seed + layer)
        kernel, bias, projection = layout.lstm_names(direction, layer)
        output, final = lstm_layer(layer_input, state, options, params[kernel], params[bias],
                                   params.get(projection), lengths)
        if options.skip_connections and layer > 0:
            real = 1.0 if lengths is None else tf.sequence_mask(lengths, tf.shape(inputs)[1], DTYPE)[:, :, None]
            output = output + layer_input * real
        outputs.append(output)
        finals.append(final)
        layer_input = output
    return outputs, finals


def bidirectional_lstm(embedding, lengths, states, options, params):
    """Both LSTM stacks over a batch of sentences; the backward one reads each sentence reversed.

    Args:
        embedding: float32 (B, T, P) token vectors, begin/end markers included.
        lengths: int32 (B,) real positions per row.
        states: a state policy (``bilm.core.states``): where each row's states start and
            what is done with the final ones.
    Returns:
        per-layer outputs [(B, T, 2P)] (forward and backward, in reading order) and the
        ops that store the final states (none unless the policy carries them).
    """
    batch_size = tf.shape(embedding)[0]
    per_direction, updates = [], []
    for direction in (0, 1):
        inputs = embedding if direction == 0 else tf.reverse_sequence(embedding, lengths, 1, 0)
        outputs, finals = lstm_stack(inputs, states.initial(direction, batch_size), options, params, direction,
                                     lengths)
        if direction == 1:
            outputs = [tf.reverse_sequence(out, lengths, 1, 0) for out in outputs]
        per_direction.append(outputs)
        updates += states.store(direction, finals, batch_size)
    return [tf.concat(pair, axis=2) for pair in zip(*per_direction)], updates


def sentence_lengths(ids):
    """int32 (B,): the real positions (begin/end included) of char ids (B, T + 2, C) or token ids (B, T + 2)."""
    real = tf.reduce_any(ids > 0, axis=2) if ids.shape.rank == 3 else ids > 0
    return tf.reduce_sum(tf.cast(real, tf.int32), axis=1)


def language_model(embedding, lengths, states, options, params, checks=()):
    """The biLM's layers for a batch of sentences, begin/end removed.

    Args:
        embedding: float32 (B, T + 2, P) token vectors (begin/end markers included).
        lengths: int32 (B,) real positions per sentence, begin/end included.
        states: a state policy (``bilm.core.states``).
        checks: ops to run before the LSTMs (e.g. a batch size limit).
    Returns:
        ``lm_embeddings`` (B, n_layers + 1, T, 2P): layer 0 the token embedding twice, layer
        l [forward_l, backward_l]; ``mask`` bool (B, T); ``lengths`` int32 (B,) tokens per
        sentence. They run after the state updates (if the policy carries states).
    """
    with tf.control_dependencies(list(checks)):
        lstm_layers, updates = bidirectional_lstm(embedding, lengths, states, options, params)
    layers = [tf.concat([embedding, embedding], axis=2)] + lstm_layers
    with tf.control_dependencies(updates):
        stacked = tf.stack(layers, axis=1)  # (B, n_layers + 1, T + 2, 2P)
        n_tokens = lengths - 2
        max_tokens = tf.shape(embedding)[1] - 2
        # Drop begin/end: token t is position t + 1; past the length, position t + 2
        # (the values the original's reverse_sequence trick leaves there).
        positions = tf.range(max_tokens)[None, :]
        index = positions + 1 + tf.cast(positions >= n_tokens[:, None], tf.int32)  # (B, T)
        lm_embeddings = tf.gather(stacked, index, axis=2, batch_dims=1)
        mask = tf.sequence_mask(n_tokens, max_tokens)
        n_tokens = tf.identity(n_tokens)
    return {"lm_embeddings": lm_embeddings, "mask": mask, "lengths": n_tokens}
