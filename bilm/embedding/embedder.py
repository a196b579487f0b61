"""biLM layers for tokenized sentences as NumPy arrays: ``ElmoEmbedder``.

Sentences are read a window at a time, sorted by length inside the window (unless
the state policy carries states from sentence to sentence) and run in batches, so
little padding is computed; results come back in input order.
"""
import itertools

import tensorflow.compat.v1 as tf

from ..core import sessions, states
from ..core.batching import Batcher, window_batches
from ..errors import InputError
from ..core.inference import BidirectionalLanguageModel
from ..core.options import ModelOptions
from ..core.precision import session_precision

WINDOW = 4096  # sentences sorted by length together


class ElmoEmbedder:
    """biLM layers for tokenized sentences, as NumPy arrays, in input order.

    Args:
        options_file, weight_file: the model (``options_file`` may be a ``ModelOptions``).
        vocab_file: optional vocabulary whose tokens' character ids are cached.
        state_mode: ``"warm"`` (default), ``"zero"`` or ``"stateful"`` (``bilm.core.states``).
            ``"stateful"`` runs one sentence at a time in input order with states
            carried, exactly as the original's ``dump_bilm_embeddings``.
        batch_size: sentences per batch (deterministic modes).
        window: sentences read ahead and sorted by length before batching.
        precision: ``"float32"`` (exact, default; TF32 off while it runs), ``"tf32"``,
            ``"bfloat16"``, ``"float16"`` (``bilm.core.precision``).
        session_config: a ``tf.ConfigProto`` (default: ``bilm.core.sessions.config(branches=2)``); where
            the model packs its LSTM matrices (bfloat16 on a CPU, ``bilm.core.network.packs``) the
            session runs it without Grappler's graph rewrites.

    ``embed_sentences(sentences)`` returns, per sentence, float32
    (n_layers + 1, n_tokens, 2P); ``iter_embeddings(sentences)`` streams
    ``(index, array)`` pairs in input order.
    """

    def __init__(self, options_file, weight_file, vocab_file=None, state_mode=states.JOB_DEFAULT, batch_size=64,
                 window=WINDOW, precision="float32", session_config=None):
        options = ModelOptions.of(options_file)
        options.require_char_input("ElmoEmbedder")
        states.check_state_mode(state_mode)
        if batch_size < 1 or window < 1:
            raise InputError(f"batch_size ({batch_size}) and window ({window}) must be at least 1")
        self.state_mode = state_mode
        self.precision = precision
        self.batch_size = batch_size if state_mode != "stateful" else 1
        self.window = window
        self._batcher = Batcher(vocab_file, options.max_characters)
        self._graph = tf.Graph()
        with self._graph.as_default(), sessions.signals_held():  # Ctrl-C and SIGTERM: once it is built
            self._ids = tf.placeholder(tf.int32, (None, None, options.max_characters), name="char_ids")
            model = BidirectionalLanguageModel(options, weight_file, max_batch_size=self.batch_size,
                                               state_mode=state_mode, precision=precision)
            self._lm_embeddings = model(self._ids)["lm_embeddings"]
            self._carried = []
            if state_mode == "stateful":
                self._carried = [v for direction in model.state_variables(self._ids) for layer in direction
                                 for v in layer]
                self._carried_values = [tf.placeholder(v.dtype.base_dtype, v.shape) for v in self._carried]
                self._restore_states = tf.group(*[v.assign(value) for v, value in
                                                  zip(self._carried, self._carried_values)])
            config = session_config or sessions.config(branches=2)  # the two directions
            if model.packs_lstm_weights:  # Grappler's passes change no bit of that graph and cost more than they save
                config = sessions.without_graph_rewrites(config)
            self._session = tf.Session(config=config)
            self._run(tf.global_variables_initializer())

    def _run(self, fetches, feed_dict=None):
        with session_precision(self.precision):
            return sessions.run(self._session, fetches, feed_dict)

    def close(self):
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def batches(self, window):
        """[(indices, sentences)]: the batches of a window of ``(index, tokens)``, in the order computed.

        Sorted by length unless states are carried; the same window always gives the
        same batches, hence the same numbers.
        """
        return window_batches(window, self.batch_size, by_length=self.state_mode != "stateful")

    def char_ids(self, sentences):
        """The batch's character ids (what ``embed_ids`` takes): int32 (B, T + 2, C)."""
        return self._batcher.batch_sentences(sentences)

    def embed_ids(self, ids, sentences):
        """float32 (n_layers + 1, n_tokens, 2P) for each sentence of a batch, from its ``char_ids``."""
        lm_embeddings = self._run(self._lm_embeddings, {self._ids: ids})
        return [lm_embeddings[row, :, :len(sentence)] for row, sentence in enumerate(sentences)]

    def embed_batch(self, sentences):
        """float32 (n_layers + 1, n_tokens, 2P) for each sentence of one batch."""
        return self.embed_ids(self.char_ids(sentences), sentences)

    def embed_window(self, window):
        """Stream ``(index, array)`` for a list of ``(index, tokens)``, in the order computed."""
        for indices, batch in self.batches(window):
            yield from zip(indices, self.embed_batch(batch))

    def iter_embeddings(self, sentences):
        """Stream ``(index, float32 (n_layers + 1, n_tokens, 2P))`` in input order.

        ``sentences`` is an iterable of token lists, or of ``(index, tokens)`` pairs.
        One window of outputs is held in memory to restore the input order.
        """
        numbered = (item if isinstance(item, tuple) else (i, item) for i, item in enumerate(sentences))
        while True:
            window = list(itertools.islice(numbered, self.window))
            if not window:
                return
            done = dict(self.embed_window(window))
            for index, _ in window:
                yield index, done.pop(index)

    def get_states(self):
        """The carried LSTM states (stateful mode) as a {name: array} dict (empty otherwise)."""
        values = self._run(self._carried)
        return {f"state_{k}": value for k, value in enumerate(values)}

    def set_states(self, saved):
        """Restore states saved by ``get_states``."""
        if self._carried:
            self._run(self._restore_states,
                              {value: saved[f"state_{k}"] for k, value in enumerate(self._carried_values)})

    def embed_sentences(self, sentences):
        """List of float32 (n_layers + 1, n_tokens, 2P), one per sentence, in input order."""
        return [array for _, array in self.iter_embeddings(sentences)]

    def embed_sentence(self, sentence):
        """float32 (n_layers + 1, n_tokens, 2P) for one tokenized sentence."""
        return self.embed_sentences([sentence])[0]
