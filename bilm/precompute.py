"""Precompute biLM outputs: a Python API for vectors, and HDF5 dumps of vocabularies and datasets.

Sentences run in batches of similar length (sorted within a window of the input, so
little padding is computed) and are returned or written in input order. Only a
window of the input is in memory at a time.
"""
import itertools
import json
import logging
import os

import h5py
import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

from . import options as opts
from .batching import Batcher
from .errors import InputError
from .model import STATE_MODES, BidirectionalLanguageModel
from .outputs import PartsJob, atomic_output
from .pooling import select_layers
from .vocabulary import UnicodeCharsVocabulary, read_text_lines
from .weights import open_hdf5

logger = logging.getLogger(__name__)

TOKEN_CHUNK = 512
TOKEN_PART = 16384  # tokens per part file of dump_token_embeddings
SENTENCE_PART = 4096  # sentences per part file of dump_bilm_embeddings (also its sort-by-length window)
DEFAULT_STATE_MODE = "warm"
LAYER_CHOICES = ("all", "top", "average", "mix")
SENTENCE_TO_INDEX = "sentence_to_index"


def session_config():
    """Soft placement; TensorFlow's default thread pools (one intra-op thread per core)."""
    return tf.ConfigProto(allow_soft_placement=True)


class ElmoEmbedder:
    """biLM layers for tokenized sentences, as NumPy arrays, in input order.

    Args:
        options_file, weight_file: the model.
        vocab_file: optional vocabulary whose tokens' character ids are cached.
        state_mode: ``"warm"`` (default), ``"zero"`` or ``"stateful"``; see
            ``BidirectionalLanguageModel``. ``"stateful"`` runs one sentence at a time
            in input order with states carried, exactly as the original's
            ``dump_bilm_embeddings``.
        batch_size: sentences per batch (deterministic modes).
        window: sentences read ahead and sorted by length before batching.

    ``embed_sentences(sentences)`` returns, per sentence, float32
    (n_layers + 1, n_tokens, 2P); ``iter_embeddings(sentences)`` streams
    ``(index, array)`` pairs in input order.
    """

    def __init__(self, options_file, weight_file, vocab_file=None, state_mode=DEFAULT_STATE_MODE, batch_size=64,
                 window=SENTENCE_PART):
        options = opts.check_options(opts.load_options(options_file), options_file)
        if not opts.uses_char_cnn(options):
            raise InputError(f"{options_file}: ElmoEmbedder needs a character model (key 'char_cnn')")
        if batch_size < 1 or window < 1:
            raise InputError(f"batch_size ({batch_size}) and window ({window}) must be at least 1")
        max_chars = options["char_cnn"]["max_characters_per_token"]
        self.state_mode = state_mode
        self.batch_size = 1 if state_mode == "stateful" else batch_size
        self.window = window
        self._batcher = Batcher(vocab_file, max_chars)
        self._graph = tf.Graph()
        with self._graph.as_default():
            self._ids = tf.placeholder(tf.int32, (None, None, max_chars), name="char_ids")
            model = BidirectionalLanguageModel(options_file, weight_file, max_batch_size=self.batch_size,
                                               state_mode=state_mode)
            self._lm_embeddings = model(self._ids)["lm_embeddings"]
            self._state_variables, self._state_values = [], []
            if state_mode == "stateful":
                self._state_variables = [v for direction in model.state_variables(self._ids)
                                         for layer in direction for v in layer]
                self._state_values = [tf.placeholder(v.dtype.base_dtype, v.shape) for v in self._state_variables]
                self._restore_states = tf.group(*[v.assign(value) for v, value in
                                                  zip(self._state_variables, self._state_values)])
            self._session = tf.Session(config=session_config())
            self._session.run(tf.global_variables_initializer())

    def close(self):
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _batches(self, window):
        """(indices, sentences) batches of one window: sorted by length unless stateful."""
        order = list(range(len(window)))
        if self.state_mode != "stateful":
            order.sort(key=lambda i: len(window[i][1]))
        for start in range(0, len(order), self.batch_size):
            chosen = order[start:start + self.batch_size]
            yield [window[i][0] for i in chosen], [window[i][1] for i in chosen]

    def embed_window(self, window):
        """Stream ``(index, array)`` for a list of ``(index, tokens)``, in the order computed.

        Arrays are float32 (n_layers + 1, n_tokens, 2P). The window is one sort-by-length
        unit: the same window always gives the same batches, hence the same numbers.
        """
        for indices, batch in self._batches(window):
            lm_embeddings = self._session.run(self._lm_embeddings, {self._ids: self._batcher.batch_sentences(batch)})
            for row, (index, sentence) in enumerate(zip(indices, batch)):
                yield index, lm_embeddings[row, :, : len(sentence)]

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
        """The carried LSTM states (stateful mode) as a {name: array} dict."""
        values = self._session.run(self._state_variables)
        return {f"state_{k}": value for k, value in enumerate(values)}

    def set_states(self, states):
        """Restore states saved by ``get_states``."""
        self._session.run(self._restore_states,
                          {value: states[f"state_{k}"] for k, value in enumerate(self._state_values)})

    def embed_sentences(self, sentences):
        """List of float32 (n_layers + 1, n_tokens, 2P), one per sentence, in input order."""
        return [array for _, array in self.iter_embeddings(sentences)]

    def embed_sentence(self, sentence):
        """float32 (n_layers + 1, n_tokens, 2P) for one tokenized sentence."""
        return self.embed_sentences([sentence])[0]


def _file_fingerprint(path):
    """What identifies an input file for resuming: absolute path, size, modification time."""
    if path is None or not os.path.exists(path):  # a missing file gets its own error later
        return None
    status = os.stat(path)
    return [os.path.abspath(path), status.st_size, status.st_mtime_ns]


def dump_token_embeddings(vocab_file, options_file, weight_file, outfile, overwrite=False, resume=False,
                          part_size=TOKEN_PART):
    """Write the context-independent token vectors of every vocabulary token.

    Output: HDF5 dataset ``embedding`` float32 (n_vocab, P), row i for line i of the
    vocabulary (``<S>``/``</S>`` get the sentence begin/end vectors). It is the
    ``embedding_weight_file`` of a token-input ``BidirectionalLanguageModel``.
    Tokens are run through the character CNN in chunks of ``TOKEN_CHUNK``.

    Args:
        overwrite: replace an existing ``outfile`` (once the new one is complete).
        resume: finish the job a killed run left in ``outfile + ".parts"``.
        part_size: tokens per part file (the unit of resuming).
    """
    options = opts.check_options(opts.load_options(options_file), options_file)
    if not opts.uses_char_cnn(options):
        raise InputError(f"{options_file}: dump_token_embeddings needs a character model (key 'char_cnn')")
    max_chars = options["char_cnn"]["max_characters_per_token"]
    vocab = UnicodeCharsVocabulary(vocab_file, max_chars)
    settings = {"vocab_file": _file_fingerprint(vocab_file), "options_file": _file_fingerprint(options_file),
                "weight_file": _file_fingerprint(weight_file), "part_size": part_size}
    job = PartsJob(outfile, settings, overwrite=overwrite, resume=resume)
    if job.complete:
        return
    char_ids = vocab.word_char_ids + 1  # (n_vocab, C), shifted as the Batcher does

    with tf.Graph().as_default():
        ids_placeholder = tf.placeholder(tf.int32, shape=(None, None, max_chars))
        model = BidirectionalLanguageModel(options_file, weight_file, state_mode="zero")
        embedding_op = model(ids_placeholder)["token_embeddings"]  # (n, 1, P); no LSTM runs
        cnn_variables = [v for v in tf.global_variables() if "/RNN_" not in v.name]
        with tf.Session(config=session_config()) as sess:
            sess.run(tf.variables_initializer(cnn_variables))  # the LSTM weights are never read
            starts = range(0, vocab.size, part_size)
            for k, part_start in enumerate(tqdm(starts, desc="token embeddings", unit="part", disable=None)):
                if job.is_done(k):
                    continue
                part = char_ids[part_start:part_start + part_size]
                embeddings = [sess.run(embedding_op, {ids_placeholder: part[start:start + TOKEN_CHUNK, None, :]})[:, 0]
                              for start in range(0, len(part), TOKEN_CHUNK)]
                job.write_part(k, {"embedding": np.concatenate(embeddings)})
    job.finish(concatenate="embedding")
    logger.info("wrote %d token embeddings to %s", vocab.size, outfile)


def read_sentences(dataset_file, shard=(0, 1), encoding_errors="strict", empty_lines="error"):
    """Yield ``(line index, tokens)`` of the lines of ``dataset_file`` in shard (k, n): index % n == k.

    Args:
        encoding_errors: ``"strict"`` (a line that is not UTF-8 is an error naming
            it) or ``"replace"`` (bad bytes become U+FFFD).
        empty_lines: ``"error"`` (an empty or whitespace-only line is an error naming
            it) or ``"keep"`` (it is a sentence of no tokens, as in the original).
    """
    if encoding_errors not in ("strict", "replace"):
        raise InputError(f"encoding_errors is {encoding_errors!r}; expected 'strict' or 'replace'")
    if empty_lines not in ("error", "keep"):
        raise InputError(f"empty_lines is {empty_lines!r}; expected 'error' or 'keep'")
    k, n = shard
    hint = "; fix the file or pass encoding_errors='replace' (--encoding-errors replace)"
    for line_number, line in read_text_lines(dataset_file, "input file", InputError, encoding_errors, hint):
        tokens = line.split()
        if not tokens and empty_lines == "error":
            raise InputError(
                f"{dataset_file}, line {line_number}: empty line; expected a whitespace-tokenized sentence "
                f"(pass empty_lines='keep' (--empty-lines keep) to write an empty dataset for it)"
            )
        if (line_number - 1) % n == k:
            yield line_number - 1, tokens


def dump_bilm_embeddings(vocab_file, dataset_file, options_file, weight_file, outfile,
                         state_mode=DEFAULT_STATE_MODE, batch_size=64, shard=(0, 1), overwrite=False, resume=False,
                         encoding_errors="strict", empty_lines="error", part_size=SENTENCE_PART, layers="all",
                         mix_weights=None, sentence_to_index=False):
    """Write every biLM layer of every sentence of a dataset.

    ``dataset_file`` has one whitespace-tokenized sentence per line. Output: one HDF5
    dataset per line, keyed ``str(line_index)``, float32 (n_layers + 1, n_tokens, 2P).
    The whole input is checked (UTF-8, empty lines) before any computing starts.

    Args:
        state_mode: ``"warm"`` (default: deterministic, batched by length),
            ``"zero"``, or ``"stateful"``: one sentence at a time with states carried
            from line to line, exactly the original's output.
        batch_size: sentences per batch in the deterministic modes.
        shard: ``(k, n)``: only lines whose index % n == k (for n machines or
            processes); ``merge_shards`` presents the n outputs as one file.
        overwrite: replace an existing ``outfile`` (once the new one is complete).
        resume: finish the job a killed run left in ``outfile + ".parts"``; the result
            equals that of an uninterrupted run.
        encoding_errors, empty_lines: see ``read_sentences``.
        part_size: sentences per part file: the unit of resuming and of sorting by length.
        layers: ``"all"`` (the original's layout), or ``"top"``, ``"average"``, ``"mix"``
            (with ``mix_weights``, one per layer): one (n_tokens, 2P) array per line
            (see ``bilm.pooling.select_layers``).
        sentence_to_index: also write ``sentence_to_index``, a (1,) string dataset
            holding the JSON {sentence (tokens joined by spaces): line index}, as
            ``allennlp elmo`` does (a repeated sentence maps to its last line).
    """
    options = opts.check_options(opts.load_options(options_file), options_file)
    k, n = shard
    if not 0 <= k < n:
        raise InputError(f"shard is {k} of {n}; expected 0 <= k < n")
    if state_mode not in STATE_MODES:
        raise InputError(f"state_mode is {state_mode!r}; expected one of {STATE_MODES}")
    if part_size < 1:
        raise InputError(f"part_size is {part_size}; expected at least 1")
    if layers not in LAYER_CHOICES:
        raise InputError(f"layers is {layers!r}; expected one of {LAYER_CHOICES}")
    if layers == "mix" and (mix_weights is None or len(mix_weights) != opts.n_lstm_layers(options) + 1):
        raise InputError(f"layers='mix' needs {opts.n_lstm_layers(options) + 1} mix_weights (one per layer), "
                         f"got {mix_weights!r}")
    settings = {"dataset_file": _file_fingerprint(dataset_file), "vocab_file": _file_fingerprint(vocab_file),
                "options_file": _file_fingerprint(options_file), "weight_file": _file_fingerprint(weight_file),
                "state_mode": state_mode, "batch_size": batch_size, "shard": list(shard), "part_size": part_size,
                "encoding_errors": encoding_errors, "empty_lines": empty_lines, "layers": layers,
                "mix_weights": None if mix_weights is None else [float(w) for w in mix_weights]}
    job = PartsJob(outfile, settings, overwrite=overwrite, resume=resume)
    if job.complete:
        return
    n_sentences, index_of = 0, {}
    for index, tokens in read_sentences(dataset_file, shard, encoding_errors, empty_lines):  # checked first
        n_sentences += 1
        if sentence_to_index:
            index_of[" ".join(tokens)] = str(index)
    sentences = read_sentences(dataset_file, shard, encoding_errors, empty_lines)
    with ElmoEmbedder(options_file, weight_file, vocab_file, state_mode, batch_size, window=part_size) as embedder:
        progress = tqdm(total=n_sentences, desc="sentences", unit="sent", disable=None)
        for part in itertools.count():
            window = list(itertools.islice(sentences, part_size))
            if not window:
                break
            if job.is_done(part):
                if state_mode == "stateful" and not job.is_done(part + 1):
                    embedder.set_states(job.read_extra(part))
                progress.update(len(window))
                continue
            with job.writer(part) as fout:
                for index, embeddings in embedder.embed_window(window):
                    fout.create_dataset(str(index), data=select_layers(embeddings, layers, mix_weights))
                    progress.update()
                if state_mode == "stateful":  # the states this part ends with, for resuming after it
                    job.write_extra(part, embedder.get_states())
        progress.close()
    record = {}
    if sentence_to_index:
        record[SENTENCE_TO_INDEX] = np.array([json.dumps(index_of)], dtype=h5py.string_dtype())
    job.finish(add=record)
    logger.info("wrote %d sentences to %s", n_sentences, outfile)


def merge_shards(shard_files, outfile, overwrite=False):
    """One HDF5 file presenting the datasets of several shard outputs (external links, no copy).

    Shards are linked by path relative to ``outfile``'s directory, so keep them together.
    Their ``sentence_to_index`` records, if any, are merged into one (a small copy).
    """
    base = os.path.dirname(os.path.abspath(outfile))
    index_of = None
    with atomic_output(outfile, overwrite) as temporary, h5py.File(temporary, "w") as fout:
        for shard_file in shard_files:
            relative = os.path.relpath(os.path.abspath(shard_file), base)
            with open_hdf5(shard_file, "shard output") as fin:
                for key in fin:
                    if key == SENTENCE_TO_INDEX:  # a repeated sentence keeps its last line
                        index_of = index_of or {}
                        for sentence, index in json.loads(fin[key][0]).items():
                            if int(index) > int(index_of.get(sentence, -1)):
                                index_of[sentence] = index
                        continue
                    if key in fout:
                        raise InputError(f"{shard_file}: dataset '{key}' is also in another shard")
                    fout[key] = h5py.ExternalLink(relative, key)
        if index_of is not None:
            fout.create_dataset(SENTENCE_TO_INDEX, data=np.array([json.dumps(index_of)], dtype=h5py.string_dtype()))
    logger.info("linked %d shards into %s", len(shard_files), outfile)
