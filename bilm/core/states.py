"""Where each sentence's LSTM states start: the state policies, decided once.

The original's LSTMs are stateful: a batch of b sentences starts from rows [:b] of
per-model state variables and writes its final states back there, so a sentence's
vectors depend slightly on what ran before it. ``bilm`` offers that and two
deterministic policies:

- ``"stateful"`` (``Stateful``): the original, exactly; the default of the graph API
  (``BidirectionalLanguageModel``), because existing code and the reference outputs
  depend on it.
- ``"zero"`` (``Zero``): every sentence starts from zeros.
- ``"warm"`` (``Warm``): every sentence starts from the states reached after reading a
  fixed warm-up text (``models/warmup.txt``), computed in the graph when its variables
  are initialised. The default of every embedding job (``ElmoEmbedder``, the dumps,
  ``bilm embed``, export): deterministic (a sentence's vectors are the same alone, in
  any batch, at any position), and as close to the original's output as the original
  is to itself when its input order changes (README, "state modes").

Each policy answers what the code would otherwise branch on: the initial states of a
batch, what happens to its final states, the largest batch it takes, whether a job
may sort sentences by length, and whether a resumed job must restore states.
"""
from pathlib import Path

import numpy as np
import tensorflow.compat.v1 as tf

from . import network
from ..errors import InputError, flag

STATE_MODES = ("stateful", "zero", "warm")
GRAPH_API_DEFAULT = "stateful"
JOB_DEFAULT = "warm"
WARMUP_TEXT = Path(__file__).resolve().parents[1] / "models" / "warmup.txt"


def check_state_mode(state_mode, allowed=STATE_MODES):
    if state_mode not in allowed:
        raise InputError(f"{flag('state_mode', '--state-mode')} is {state_mode!r}; expected one of {', '.join(allowed)}")
    return state_mode


class Stateful:
    """The original's statefulness: states in non-trainable variables (rows, size).

    A batch of b rows starts from rows [:b] and writes its final states back to rows
    [:b]; rows b: are untouched. Used by the inference graph and (rows = batch size)
    by training.

    Args:
        options: ``ModelOptions``.
        rows: rows allocated (the largest batch).
        collections: graph collections of the variables (default: global variables).
    """

    name = "stateful"
    deterministic = False  # a sentence's vectors depend on what ran before it
    carries_states = True  # a resumed job must restore them

    def __init__(self, options, rows, collections=None):
        self.max_batch_size = rows
        self.variables = [
            [tuple(tf.Variable(tf.zeros([rows, size]), trainable=False, collections=collections, name=name)
                   for name, size in zip(("lstm_c", "lstm_h"), options.state_sizes))
             for _ in range(options.n_layers)]
            for _ in range(2)
        ]

    def initial(self, direction, batch_size):
        """Per layer (c (b, D), h (b, P)) from rows [:batch_size]."""
        return [tuple(v[:batch_size] for v in layer) for layer in self.variables[direction]]

    def store(self, direction, final_states, batch_size):
        """Ops writing per-layer final states into rows [:batch_size]."""
        return [var[:batch_size].assign(value)
                for layer, final in zip(self.variables[direction], final_states)
                for var, value in zip(layer, final)]

    def reset(self):
        """An op setting every row of every state to zero."""
        return tf.group(*[v.assign(tf.zeros_like(v)) for d in self.variables for layer in d for v in layer])

    def flat_variables(self):
        return [v for d in self.variables for layer in d for v in layer]


class SentenceStarts(Stateful):
    """``Stateful`` rows (the evaluation's training graph) in which a row whose input starts a sentence starts from
    fixed states instead of what the row carried, so that a sentence's scores do not depend on what came
    before it in its row.

    ``starts[direction]``: bool placeholder (rows, 1), True where the row's first position starts a sentence
    (default False: carried, as ``Stateful``); ``start_values[direction][layer] = (c (1, D), h (1, P))``
    variables (zeros until ``keep_row_0_as_start`` copies a row's states into them, e.g. after a warm-up text).
    """

    name = "sentence starts"

    def __init__(self, options, rows, collections=None):
        super().__init__(options, rows, collections)
        self.start_values = [
            [tuple(tf.Variable(tf.zeros([1, size]), trainable=False, collections=collections, name=name)
                   for name, size in zip(("start_c", "start_h"), options.state_sizes))
             for _ in range(options.n_layers)]
            for _ in range(2)
        ]
        self.starts = [tf.placeholder_with_default(tf.zeros([rows, 1], tf.bool), [rows, 1], name=f"sentence_start_{d}")
                       for d in range(2)]

    def initial(self, direction, batch_size):
        start = self.starts[direction][:batch_size]  # (b, 1)
        return [tuple(tf.where_v2(start, fixed, carried) for carried, fixed in zip(layer, start_layer))
                for layer, start_layer in zip(super().initial(direction, batch_size), self.start_values[direction])]

    def keep_row_0_as_start(self):
        """An op copying row 0 of every carried state into the start states."""
        return tf.group(*[fixed.assign(carried[:1])
                          for d in range(2) for layer, start_layer in zip(self.variables[d], self.start_values[d])
                          for carried, fixed in zip(layer, start_layer)])


class Zero:
    """Every sentence starts from zero states; final states are dropped; no batch limit."""

    name = "zero"
    deterministic = True
    carries_states = False
    max_batch_size = None
    variables = None

    def __init__(self, options):
        self._sizes = options.state_sizes
        self._n_layers = options.n_layers

    def _start(self, direction, layer):
        return [tf.zeros([1, size]) for size in self._sizes]

    def initial(self, direction, batch_size):
        return [tuple(tf.tile(v, tf.stack([batch_size, 1])) for v in self._start(direction, layer))
                for layer in range(self._n_layers)]

    def store(self, direction, final_states, batch_size):
        return []

    def flat_variables(self):
        return []


class Given(Zero):
    """Every sentence starts from the given states: ``values[direction][layer] = (c (1, D), h (1, P))``."""

    name = "given"

    def __init__(self, options, values):
        super().__init__(options)
        self.variables = values

    def _start(self, direction, layer):
        return self.variables[direction][layer]

    def flat_variables(self):
        return [v for d in self.variables for layer in d for v in layer]


def warm_up(options, params, embed, warmup_ids):
    """The states after running the warm-up sentences one after the other from zero states (as the
    original's stateful mode would, one sentence per batch): ``[direction][layer] = (c (1, D), h (1, P))``.

    Args:
        params: the network's parameters (values) by name.
        embed: a function (ids (1, N[, C]), params) -> token vectors (1, N, P).
        warmup_ids: the warm-up sentences' ids, each (n + 2[, C]) with begin/end, as the
            model's batcher gives them (shifted by one).
    """
    ids = np.concatenate([np.asarray(sentence) for sentence in warmup_ids])
    forward = np.arange(len(ids))
    ends = np.cumsum([len(sentence) for sentence in warmup_ids])
    backward = np.concatenate([forward[end - len(s):end][::-1] for s, end in zip(warmup_ids, ends)])
    embedding = embed(tf.constant(ids[None], tf.int32), params)  # (1, N, P)
    sizes = options.state_sizes
    finals_by_direction = []
    for direction, order in enumerate((forward, backward)):
        inputs = tf.gather(embedding, order, axis=1)
        zeros = [tuple(tf.zeros([1, size]) for size in sizes) for _ in range(options.n_layers)]
        _, finals = network.lstm_stack(inputs, zeros, options, params, direction,
                                       lengths=tf.constant([len(ids)]))  # a loop, not unrolled
        finals_by_direction.append(finals)
    return finals_by_direction


class Warm(Given):
    """Every sentence starts from the states after the warm-up text (see the module doc).

    The states are non-trainable variables ``warm_c``/``warm_h`` (1, size) per direction
    and layer, whose initial value is ``warm_up`` run after the weights are initialised
    (``after``: their initializers), or the values kept by ``cache`` (a
    ``bilm.core.warm_cache.WarmCache``, or None) when it has them, in which case no warm-up
    is built. ``weights``: a function building the warm-up's float32 ``params`` (values, not
    variables: a variable's initial value may read others only through ReadVariableOp);
    other args as ``warm_up``.
    """

    name = "warm"

    def __init__(self, options, weights, embed, warmup_ids, after=(), cache=None):
        with tf.name_scope("warm_states"):
            finals = cache.load(options.state_sizes, options.n_layers) if cache is not None else None
            if finals is None:
                with tf.control_dependencies(list(after)):
                    finals = warm_up(options, weights(), embed, warmup_ids)
                    if cache is not None:
                        finals = cache.stored(finals)
            variables = [[tuple(tf.Variable(lambda value=value: value, trainable=False, name=name)
                                for name, value in zip(("warm_c", "warm_h"), final)) for final in direction]
                         for direction in finals]
        super().__init__(options, variables)


def warmup_sentences(text_file=WARMUP_TEXT):
    """The warm-up text: a list of tokenized sentences."""
    lines = Path(text_file).read_text(encoding="utf-8").splitlines()
    return [line.split() for line in lines if line.split()]
