"""Inference with a pretrained biLM: ``BidirectionalLanguageModel``.

Calling the model on an ids placeholder builds the graph (char CNN or token lookup,
then the forward and backward LSTM stacks, ``bilm.core.network``) and returns the layer
outputs. The weights are non-trainable variables read from the files when their
initializers run.
"""
import types

import tensorflow.compat.v1 as tf

from . import layout, network, states, warm_cache, weights
from .batching import Batcher
from ..errors import InputError
from .options import ModelOptions
from .precision import check_precision, compute_dtype

SCOPE = layout.INFERENCE_SCOPE
CNN_CHUNK = 256  # distinct tokens per char-CNN step: bounds the memory of the convolutions
PACK_LSTM_WEIGHTS = True  # pack the LSTMs' matrices once where that is faster (``bilm.core.network.packs``)


def require_graph_mode(what):
    """Raise a one-line error when TensorFlow executes eagerly (TF2's default outside a graph)."""
    if tf.executing_eagerly():
        raise InputError(
            f"{what} builds a TensorFlow 1.x-style graph, but TensorFlow is executing eagerly (TF2's default): "
            f"call it inside `with tf.Graph().as_default():` (tf = tensorflow.compat.v1), or use the Keras layer "
            f"bilm.keras.ELMo in eager TF2 code")


def _file_initializer(path, name, pad_row, after=None):
    """An initializer that reads dataset ``name`` of ``path`` when it runs (cast to the variable's type).

    The values are read by the initializer op (not stored in the graph), so a large
    model's weights are held once, in its variables. ``after``: an op to run first
    (loading one weight at a time keeps the peak memory at the weights plus one).
    """

    def initializer(shape, dtype=tf.float32, partition_info=None):
        with tf.control_dependencies([after] if after is not None else []):
            value = tf.numpy_function(lambda: weights.read_dataset(path, name, pad_row), [], tf.float32,
                                      name="read_hdf5")
        value.set_shape(shape)
        # The reshape gives Grappler the shape: it fuses the same products as on a variable, for the same bits.
        return tf.cast(tf.reshape(value, shape), dtype)

    return initializer


class BidirectionalLanguageModel:
    """A pretrained biLM, to be called on batches of ids.

    Args:
        options_file: the model's options.json (``char_cnn.n_characters`` 262), or a
            loaded ``ModelOptions``.
        weight_file: the model's HDF5 weights.
        use_character_inputs: True to read character ids (``Batcher``); False to read
            token ids (``TokenBatcher``) and look them up in ``embedding_weight_file``.
        embedding_weight_file: the output of ``dump_token_embeddings`` (token input).
        max_batch_size: the largest batch of the ``"stateful"`` mode.
        state_mode: where each batch's LSTM states start (``bilm.core.states``):
            ``"stateful"`` (the original, default): from the states the previous batch
            left in rows [:b] of per-model variables; ``"zero"``: from zeros;
            ``"warm"``: from fixed states reached by running the model over a warm-up
            text (the shipped ``models/warmup.txt``, or ``warmup_ids``), kept on disk after
            the first computation (``bilm.core.warm_cache``). In ``zero`` and
            ``warm`` modes a sentence's vectors do not depend on its neighbours, its
            position or the batch size, and there is no batch size limit.
        warmup_ids: for ``"warm"``: the warm-up sentences as id arrays from the model's
            batcher, one (1, n + 2[, C]) batch per sentence; required for token input.
        precision: ``"float32"`` (exact, default), ``"tf32"``, ``"bfloat16"`` or
            ``"float16"`` (``bilm.core.precision``). The graph's products follow the reduced
            types; TF32 is TensorFlow's process-wide setting (``bilm.core.precision.session_precision``).

    Calling the model on an int32 placeholder of ids, shape (B, T + 2, C) for
    characters or (B, T + 2) for tokens, returns a dict:

    - ``lm_embeddings``: float32 (B, n_layers + 1, T, 2P), begin/end removed; layer 0
      is the token embedding twice, layer l is [forward_l, backward_l];
    - ``lengths``: int32 (B,), tokens per sentence without begin/end;
    - ``mask``: bool (B, T), True at real tokens;
    - ``token_embeddings``: float32 (B, T + 2, P).

    Values past a sentence's length carry no meaning: use ``mask``. In the stateful
    mode each placeholder gets its own states; all share the (non-trainable) weights.
    """

    def __init__(self, options_file, weight_file, use_character_inputs=True, embedding_weight_file=None,
                 max_batch_size=128, state_mode=states.GRAPH_API_DEFAULT, warmup_ids=None, precision="float32"):
        self._options = ModelOptions.of(options_file)
        if use_character_inputs:
            self._options.require_char_input("use_character_inputs=True")
        elif embedding_weight_file is None:
            raise InputError("use_character_inputs=False needs embedding_weight_file (the output of "
                             "dump_token_embeddings)")
        if max_batch_size < 1:
            raise InputError(f"max_batch_size is {max_batch_size}; expected at least 1")
        self._state_mode = states.check_state_mode(state_mode)
        self._precision = check_precision(precision)
        if state_mode == "warm" and warmup_ids is None and not use_character_inputs:
            raise InputError("state_mode='warm' with token input needs warmup_ids (batches from its TokenBatcher)")
        self._use_character_inputs = use_character_inputs
        self._weight_file = weight_file
        self._embedding_weight_file = embedding_weight_file
        self._max_batch_size = max_batch_size
        self._parameters = self._needed_parameters()
        weights.check_weight_file(weight_file, self._options, self._file_parameters())
        if not use_character_inputs:
            n_rows = 1 + weights.check_embedding_file(embedding_weight_file, self._options.projection_dim)
            token = layout.token_embedding_parameter(self._options, n_rows, pad_row=True)
            self._parameters = {token.name: token, **self._parameters}
        if state_mode == "warm":
            if warmup_ids is None:
                batcher = Batcher(None, self._options.max_characters)
                warmup_ids = [batcher.batch_sentences([sentence]) for sentence in states.warmup_sentences()]
            self._warmup_ids = [batch[0] for batch in warmup_ids]
            self._warm_cache = warm_cache.WarmCache.for_files(  # (its key is computed meanwhile)
                [weight_file, embedding_weight_file if not use_character_inputs else None], self._options,
                self._warmup_ids)
        self._ops = {}
        self._graphs = {}  # ids placeholder -> its graph's parts (``lstm_init_states`` as in the original)
        self._built = {}  # tf.Graph -> (params, initializer ops, warm states or None)

    @property
    def options(self):
        """The model's ``ModelOptions``."""
        return self._options

    @property
    def packs_lstm_weights(self):
        """Whether the graph has the LSTMs' matrices packed once for the CPU's instructions
        (``bilm.core.network.packs``: bfloat16 on a CPU with oneDNN; ``PACK_LSTM_WEIGHTS``)."""
        kernel = self._parameters[layout.lstm_names(0, 0)[0]]
        return PACK_LSTM_WEIGHTS and network.packs(compute_dtype(kernel, self._precision))

    def _needed_parameters(self):
        every = layout.model_parameters(self._options)
        if self._use_character_inputs:
            return every
        return {name: p for name, p in every.items() if p.group == layout.LSTM}

    def _file_parameters(self):
        return {name: p for name, p in self._parameters.items() if p.group != layout.TOKEN_EMBEDDING}

    def __call__(self, ids_placeholder):
        require_graph_mode("BidirectionalLanguageModel")
        if ids_placeholder not in self._ops:
            self._check_ids(ids_placeholder)
            with tf.variable_scope(SCOPE):
                self._ops[ids_placeholder] = self._build(ids_placeholder)
        return self._ops[ids_placeholder]

    def _file_of(self, param):
        return self._embedding_weight_file if param.group == layout.TOKEN_EMBEDDING else self._weight_file

    def _variables(self):
        """The weights of the current graph, created (read from the files) on first use, each in the type
        it computes in (``bilm.core.precision.compute_dtype``: a reduced precision keeps its matrices in
        the reduced type, not float32 and a cast at every batch)."""
        graph = tf.get_default_graph()
        if graph not in self._built:
            scope = tf.get_variable_scope().name
            prefix = scope + "/" if scope else ""  # (outside any scope, the names have no prefix)
            initializers = []

            def pretrained(getter, name, *args, **kwargs):
                param = self._parameters[name[len(prefix):]]
                kwargs["trainable"] = False
                kwargs["dtype"] = compute_dtype(param, self._precision)
                kwargs["initializer"] = _file_initializer(self._file_of(param), param.name, param.pad_row,
                                                          after=initializers[-1] if initializers else None)
                variable = getter(name, *args, **kwargs)
                initializers.append(variable.initializer)
                return variable

            with tf.variable_scope(tf.get_variable_scope(), custom_getter=pretrained):
                params = network.create_variables(self._parameters)
            self._built[graph] = (params, initializers, None)
        return self._built[graph]

    def _embed(self, ids, params):
        if self._use_character_inputs:
            return network.char_cnn_embedding(ids, self._options, params, distinct=True, chunk=CNN_CHUNK)
        n_rows = self._parameters[layout.TOKEN_EMBEDDING_NAME].shape[0]
        in_vocabulary = tf.debugging.assert_less(
            ids, n_rows, message=f"token id outside the {n_rows - 1} rows of {self._embedding_weight_file} (+1 "
                                 f"shift): was the TokenBatcher built with the vocabulary this file was dumped for?")
        with tf.control_dependencies([in_vocabulary, tf.debugging.assert_non_negative(ids)]):
            return network.token_embedding(ids, params)

    def _float32_weights(self, params):
        """{name: float32 tensor}: the weights exactly (the warm-up computes in float32), from the
        variables, or from the files for those kept in a reduced type."""
        def exact(name, param):
            if params[name].dtype.base_dtype == tf.float32:
                return params[name].read_value()
            return _file_initializer(self._file_of(param), name, param.pad_row)(param.shape)

        return {name: exact(name, param) for name, param in self._parameters.items()}

    def _state_policy(self, params, initializers):
        if self._state_mode == "stateful":
            return states.Stateful(self._options, self._max_batch_size)
        if self._state_mode == "zero":
            return states.Zero(self._options)
        graph = tf.get_default_graph()
        warm = self._built[graph][2]
        if warm is None:
            warm = states.Warm(self._options, lambda: self._float32_weights(params), self._embed, self._warmup_ids,
                               after=initializers, cache=self._warm_cache)
            self._built[graph] = (params, initializers, warm)
        return warm

    def _check_ids(self, ids):
        rank = 3 if self._use_character_inputs else 2
        if ids.shape.rank is not None and ids.shape.rank != rank:
            what = "(batch, n_tokens + 2, max_characters_per_token) character ids" if rank == 3 \
                else "(batch, n_tokens + 2) token ids"
            raise InputError(f"ids placeholder has shape {ids.shape}; expected {what}")
        if self._state_mode == "stateful" and ids.shape.rank and (ids.shape[0] or 0) > self._max_batch_size:
            raise InputError(f"ids placeholder has batch size {ids.shape[0]}; this model's max_batch_size is "
                             f"{self._max_batch_size} (pass a larger max_batch_size, or state_mode='warm'/'zero')")
        if rank == 3:
            max_chars = self._options.max_characters
            if ids.shape[2] is not None and ids.shape[2] != max_chars:
                raise InputError(f"ids placeholder has {ids.shape[2]} characters per token; "
                                 f"the options' max_characters_per_token is {max_chars}")

    def _build(self, ids):
        params, initializers, _ = self._variables()
        embedding = self._embed(ids, params)  # (B, T + 2, P)
        policy = self._state_policy(params, initializers)
        checks = []
        if policy.max_batch_size is not None:
            checks.append(tf.debugging.assert_less_equal(
                tf.shape(ids)[0], policy.max_batch_size,
                message=f"batch larger than max_batch_size={policy.max_batch_size} of BidirectionalLanguageModel"))
        if self.packs_lstm_weights:  # (the weights keep the files' values while the graph runs)
            params = network.packed_lstm_weights(params, self._options)
        ops = network.language_model(embedding, network.sentence_lengths(ids), policy, self._options, params, checks)
        ops["token_embeddings"] = embedding
        carried = policy.variables if isinstance(policy, states.Stateful) else [[], []]
        self._graphs[ids] = types.SimpleNamespace(
            policy=policy, ops=ops,
            lstm_init_states={"forward": [list(layer) for layer in carried[0]],
                              "backward": [list(layer) for layer in carried[1]]})
        return ops

    def weight_variables(self, groups=None):
        """The weight variables of the current graph (of the ``bilm.core.layout`` groups given, or all)."""
        params = self._variables()[0]
        return [params[name] for name, p in self._parameters.items() if groups is None or p.group in groups]

    def state_variables(self, ids_placeholder):
        """The LSTM state variables of the graph built for ``ids_placeholder``.

        ``[direction][layer] = (c, h)``: in the stateful mode the carried states
        (max_batch_size, D) and (max_batch_size, P); in the warm mode the warm-up
        states (1, D) and (1, P). The zero mode has none.
        """
        policy = self._graphs[ids_placeholder].policy
        if isinstance(policy, states.Stateful):
            return policy.variables
        if policy.variables is not None:
            return policy.variables
        raise InputError(f"state_mode={self._state_mode!r} keeps no state variables ('stateful' and 'warm' do)")

    def reset_states(self, ids_placeholder):
        """An op that zeroes the carried LSTM states of ``ids_placeholder``'s graph (stateful mode)."""
        policy = self._graphs[ids_placeholder].policy
        if not isinstance(policy, states.Stateful):
            raise InputError(f"state_mode={self._state_mode!r} carries no states to reset (only 'stateful' does)")
        return policy.reset()
