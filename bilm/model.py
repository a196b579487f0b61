"""Inference with a pretrained biLM: ``BidirectionalLanguageModel``.

Calling the model on an ids placeholder builds the graph (char CNN or token lookup,
then the forward and backward LSTM stacks) and returns the layer outputs.
"""
from pathlib import Path

import numpy as np
import tensorflow.compat.v1 as tf

from . import network
from . import options as opts
from . import weights
from .errors import InputError, InvalidNumberOfCharacters, OptionsError  # noqa: F401 (re-export)
from .batching import Batcher

SCOPE = "bilm"
STATE_MODES = ("stateful", "zero", "warm")
CNN_CHUNK = 256  # distinct tokens per char-CNN step: bounds the memory of the convolutions
WARMUP_TEXT = Path(__file__).resolve().parent / "models" / "warmup.txt"


def warmup_char_ids(max_chars, text_file=WARMUP_TEXT):
    """The warm-up text as a list of (1, n + 2, max_chars) char-id batches, one per sentence."""
    batcher = Batcher(None, max_chars)
    lines = Path(text_file).read_text(encoding="utf-8").splitlines()
    return [batcher.batch_sentences([line.split()]) for line in lines if line.split()]


def _file_initializer(path, name, pad_row, after=None):
    """An initializer that reads dataset ``name`` of ``path`` when it runs.

    The values are read by the initializer op (not stored in the graph), so a large
    model's weights are held once, in its variables. ``after``: an op to run first
    (loading one weight at a time keeps the peak memory at the weights plus one).
    """

    def initializer(shape, dtype=tf.float32, partition_info=None):
        with tf.control_dependencies([after] if after is not None else []):
            value = tf.numpy_function(lambda: weights.read_dataset(path, name, pad_row), [], tf.float32,
                                      name="read_hdf5")
        value.set_shape(shape)
        return value

    return initializer


class BidirectionalLanguageModel:
    """A pretrained biLM, to be called on batches of ids.

    Args:
        options_file: the model's options.json (``char_cnn.n_characters`` 262).
        weight_file: the model's HDF5 weights.
        use_character_inputs: True to read character ids (``Batcher``); False to read
            token ids (``TokenBatcher``) and look them up in ``embedding_weight_file``.
        embedding_weight_file: the output of ``dump_token_embeddings`` (token input).
        max_batch_size: the largest batch the stateful LSTMs take.
        state_mode: where each batch's LSTM states start:
            ``"stateful"`` (the original): from the states the previous batch left in
            rows [:b] of per-model variables; ``"zero"``: from zeros; ``"warm"``: from
            fixed states reached by running the model over a warm-up text (the
            shipped ``models/warmup.txt``, or ``warmup_ids``). In ``zero`` and ``warm``
            modes a sentence's vectors do not depend on its neighbours, its position
            or the batch size, and there is no batch size limit.
        warmup_ids: for ``"warm"``: a list of id batches (from the model's batcher) to
            run, in order, before taking the states; required for token input.

    Calling the model on an int32 placeholder of ids, shape (B, T + 2, C) for
    characters or (B, T + 2) for tokens, returns a dict:

    - ``lm_embeddings``: float32 (B, n_layers + 1, T, 2P), begin/end removed; layer 0
      is the token embedding twice, layer l is [forward_l, backward_l];
    - ``lengths``: int32 (B,), tokens per sentence without begin/end;
    - ``mask``: bool (B, T), True at real tokens;
    - ``token_embeddings``: float32 (B, T + 2, P).

    Values past a sentence's length carry no meaning: use ``mask``. The LSTM states
    are carried from call to call as in the original (see ``CarriedStates``); each
    placeholder gets its own states, all share the (non-trainable) weights.
    """

    def __init__(self, options_file, weight_file, use_character_inputs=True, embedding_weight_file=None,
                 max_batch_size=128, state_mode="stateful", warmup_ids=None):
        self._options = opts.check_options(opts.load_options(options_file), options_file)
        if use_character_inputs and not opts.uses_char_cnn(self._options):
            raise OptionsError(f"{options_file}: missing key 'char_cnn'; a token-input model needs "
                               f"use_character_inputs=False and an embedding_weight_file")
        if not use_character_inputs and embedding_weight_file is None:
            raise ValueError("embedding_weight_file is required input with not use_character_inputs")
        if max_batch_size < 1:
            raise InputError(f"max_batch_size is {max_batch_size}; expected at least 1")
        if state_mode not in STATE_MODES:
            raise InputError(f"state_mode is {state_mode!r}; expected one of {STATE_MODES}")
        if state_mode == "warm" and warmup_ids is None and not use_character_inputs:
            raise InputError("state_mode='warm' with token input needs warmup_ids (batches from its TokenBatcher)")
        self._options_file = options_file
        self._state_mode = state_mode
        self._warmup_ids = warmup_ids
        self._warm_states = None
        weights.check_weight_file(weight_file, self._options, lstm_only=not use_character_inputs)
        self._n_tokens_vocab = None
        if not use_character_inputs:
            self._n_tokens_vocab = 1 + weights.check_embedding_file(
                embedding_weight_file, opts.projection_dim(self._options))
        self._weight_file = weight_file
        self._embedding_weight_file = embedding_weight_file
        self._use_character_inputs = use_character_inputs
        self._max_batch_size = max_batch_size
        self._ops = {}
        self._states = {}
        self._last_initializer = None

    @property
    def options(self):
        return self._options

    def _pretrained_getter(self, getter, name, *args, **kwargs):
        """Make every weight non-trainable and initialized from the files."""
        dataset = name.split("/", 1)[1]
        if dataset == weights.TOKEN_EMBEDDING:
            path, pad_row = self._embedding_weight_file, True
        else:
            path, pad_row = self._weight_file, dataset == "char_embed"
        kwargs["trainable"] = False
        kwargs["initializer"] = _file_initializer(path, dataset, pad_row, after=self._last_initializer)
        variable = getter(name, *args, **kwargs)
        self._last_initializer = variable.initializer
        return variable

    def __call__(self, ids_placeholder):
        if ids_placeholder not in self._ops:
            self._check_ids(ids_placeholder)
            reuse = True if self._ops else None
            with tf.variable_scope(SCOPE, custom_getter=self._pretrained_getter, reuse=reuse):
                self._ops[ids_placeholder] = self._build(ids_placeholder)
        return self._ops[ids_placeholder]

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
            max_chars = self._options["char_cnn"]["max_characters_per_token"]
            if ids.shape[2] is not None and ids.shape[2] != max_chars:
                raise InputError(f"ids placeholder has {ids.shape[2]} characters per token; "
                                 f"the options' max_characters_per_token is {max_chars}")

    def _build(self, ids):
        options = self._options
        if self._use_character_inputs:
            real = tf.reduce_any(ids > 0, axis=2)  # (B, T + 2)
            embedding = network.char_cnn_embedding(ids, options, unique_chunk=CNN_CHUNK)
        else:
            real = ids > 0
            in_vocabulary = tf.debugging.assert_less(
                ids, self._n_tokens_vocab, message=f"token id outside the {self._n_tokens_vocab - 1} rows of "
                                                   f"{self._embedding_weight_file} (+1 shift): was the TokenBatcher "
                                                   f"built with the vocabulary this file was dumped for?")
            with tf.control_dependencies([in_vocabulary, tf.debugging.assert_non_negative(ids)]):
                embedding = network.token_embedding(ids, self._n_tokens_vocab, opts.projection_dim(options))
        lengths = tf.reduce_sum(tf.cast(real, tf.int32), axis=1)  # (B,) with begin/end
        batch_size = tf.shape(ids)[0]
        if self._state_mode == "stateful":
            check = tf.debugging.assert_less_equal(
                batch_size, self._max_batch_size,
                message=f"batch larger than max_batch_size={self._max_batch_size} of BidirectionalLanguageModel")
            states = network.CarriedStates(options, self._max_batch_size)
        else:
            check = tf.no_op()
            states = network.FixedStates(options, self.warm_states() if self._state_mode == "warm" else None)
        self._states[ids] = states
        layers = [tf.concat([embedding, embedding], axis=2)]
        updates = []
        per_direction = []
        with tf.control_dependencies([check]):
            for direction in (0, 1):
                inputs = embedding if direction == 0 else tf.reverse_sequence(embedding, lengths, 1, 0)
                outputs, finals = network.lstm_stack(inputs, states.read(direction, batch_size), options,
                                                     direction, lengths)
                if direction == 1:
                    outputs = [tf.reverse_sequence(out, lengths, 1, 0) for out in outputs]
                per_direction.append(outputs)
                updates += states.write(direction, finals, batch_size)
        layers += [tf.concat(pair, axis=2) for pair in zip(*per_direction)]

        with tf.control_dependencies(updates):
            stacked = tf.stack(layers, axis=1)  # (B, n_layers + 1, T + 2, 2P)
            n_tokens = lengths - 2
            max_tokens = tf.shape(ids)[1] - 2
            # Drop begin/end: token t is position t + 1; past the length, position t + 2
            # (the values the original's reverse_sequence trick leaves there).
            positions = tf.range(max_tokens)[None, :]
            index = positions + 1 + tf.cast(positions >= n_tokens[:, None], tf.int32)  # (B, T)
            lm_embeddings = tf.gather(stacked, index, axis=2, batch_dims=1)
            mask = tf.sequence_mask(n_tokens, max_tokens)
            n_tokens = tf.identity(n_tokens)
        return {
            "lm_embeddings": lm_embeddings,
            "lengths": n_tokens,
            "mask": mask,
            "token_embeddings": embedding,
        }

    def warm_states(self):
        """``[direction][layer] = (c (D,), h (P,))``: the states after the warm-up text.

        Computed once (in a separate graph, sentence by sentence from zero states, as
        the original's stateful mode would) and then kept as constants.
        """
        if self._warm_states is None:
            batches = self._warmup_ids
            if batches is None:
                batches = warmup_char_ids(self._options["char_cnn"]["max_characters_per_token"])
            with tf.Graph().as_default():
                ids = tf.placeholder(tf.int32, (None,) * np.ndim(batches[0]))
                stateful = BidirectionalLanguageModel(
                    self._options_file, self._weight_file, self._use_character_inputs, self._embedding_weight_file,
                    max_batch_size=max(len(b) for b in batches))
                ops = stateful(ids)
                with tf.Session() as sess:
                    sess.run(tf.global_variables_initializer())
                    for batch in batches:
                        sess.run(ops["lengths"], {ids: batch})
                    values = sess.run(stateful.state_variables(ids))
            self._warm_states = [[(c[0], h[0]) for c, h in direction] for direction in values]
        return self._warm_states

    def state_variables(self, ids_placeholder):
        """The carried LSTM states of the graph built for ``ids_placeholder``.

        ``[direction][layer] = (c (max_batch_size, D), h (max_batch_size, P))``.
        """
        if self._state_mode != "stateful":
            raise InputError(f"state_mode={self._state_mode!r} keeps no state variables (only 'stateful' does)")
        return self._states[ids_placeholder].variables

    def reset_states(self, ids_placeholder):
        """An op that zeroes the carried LSTM states of ``ids_placeholder``'s graph."""
        return self._states[ids_placeholder].reset()


from .precompute import dump_bilm_embeddings, dump_token_embeddings  # noqa: E402,F401 (original import path)
