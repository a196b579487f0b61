"""Precompute biLM outputs: a Python API for vectors, and HDF5 dumps of vocabularies and datasets.

Sentences run in batches of similar length (sorted within a window of the input, so
little padding is computed) and are returned or written in input order. Only a
window of the input is in memory at a time.
"""
import itertools
import logging
import os

import h5py
import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

from . import options as opts
from .batching import Batcher
from .errors import InputError
from .model import BidirectionalLanguageModel
from .vocabulary import UnicodeCharsVocabulary

logger = logging.getLogger(__name__)

TOKEN_CHUNK = 512
DEFAULT_STATE_MODE = "warm"


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
                 window=4096):
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

    def iter_embeddings(self, sentences):
        """Stream ``(index, float32 (n_layers + 1, n_tokens, 2P))`` in input order.

        ``sentences`` is an iterable of token lists, or of ``(index, tokens)`` pairs.
        """
        numbered = (item if isinstance(item, tuple) else (i, item) for i, item in enumerate(sentences))
        while True:
            window = list(itertools.islice(numbered, self.window))
            if not window:
                return
            done = {}
            for indices, batch in self._batches(window):
                lm_embeddings = self._session.run(self._lm_embeddings,
                                                  {self._ids: self._batcher.batch_sentences(batch)})
                for row, (index, sentence) in enumerate(zip(indices, batch)):
                    done[index] = lm_embeddings[row, :, : len(sentence)]
            for index, _ in window:
                yield index, done.pop(index)

    def embed_sentences(self, sentences):
        """List of float32 (n_layers + 1, n_tokens, 2P), one per sentence, in input order."""
        return [array for _, array in self.iter_embeddings(sentences)]

    def embed_sentence(self, sentence):
        """float32 (n_layers + 1, n_tokens, 2P) for one tokenized sentence."""
        return self.embed_sentences([sentence])[0]


def dump_token_embeddings(vocab_file, options_file, weight_file, outfile):
    """Write the context-independent token vectors of every vocabulary token.

    Output: HDF5 dataset ``embedding`` float32 (n_vocab, P), row i for line i of the
    vocabulary (``<S>``/``</S>`` get the sentence begin/end vectors). It is the
    ``embedding_weight_file`` of a token-input ``BidirectionalLanguageModel``.
    Tokens are run through the character CNN in chunks of ``TOKEN_CHUNK``.
    """
    options = opts.check_options(opts.load_options(options_file), options_file)
    max_chars = options["char_cnn"]["max_characters_per_token"]
    vocab = UnicodeCharsVocabulary(vocab_file, max_chars)
    char_ids = vocab.word_char_ids + 1  # (n_vocab, C), shifted as the Batcher does

    with tf.Graph().as_default():
        ids_placeholder = tf.placeholder(tf.int32, shape=(None, None, max_chars))
        model = BidirectionalLanguageModel(options_file, weight_file)
        embedding_op = model(ids_placeholder)["token_embeddings"]  # (n, 1, P); no LSTM runs
        embeddings = np.zeros((vocab.size, opts.projection_dim(options)), dtype=np.float32)
        with tf.Session(config=session_config()) as sess:
            sess.run(tf.global_variables_initializer())
            for start in tqdm(range(0, vocab.size, TOKEN_CHUNK), desc="token embeddings", unit="chunk",
                              disable=None):
                chunk = char_ids[start:start + TOKEN_CHUNK, None, :]
                embeddings[start:start + len(chunk)] = sess.run(embedding_op, {ids_placeholder: chunk})[:, 0]
    with h5py.File(outfile, "w") as fout:
        fout.create_dataset("embedding", data=embeddings, dtype="float32")
    logger.info("wrote %d token embeddings to %s", vocab.size, outfile)


def _numbered_sentences(dataset_file, shard):
    """(line index, tokens) of the lines of ``dataset_file`` in shard (k, n): index % n == k."""
    k, n = shard
    with open(dataset_file, encoding="utf-8") as fin:
        for index, line in enumerate(fin):
            if index % n == k:
                yield index, line.split()


def dump_bilm_embeddings(vocab_file, dataset_file, options_file, weight_file, outfile,
                         state_mode=DEFAULT_STATE_MODE, batch_size=64, shard=(0, 1)):
    """Write every biLM layer of every sentence of a dataset.

    ``dataset_file`` has one whitespace-tokenized sentence per line. Output: one HDF5
    dataset per line, keyed ``str(line_index)``, float32 (n_layers + 1, n_tokens, 2P).

    Args:
        state_mode: ``"warm"`` (default: deterministic, batched by length),
            ``"zero"``, or ``"stateful"``: one sentence at a time with states carried
            from line to line, exactly the original's output.
        batch_size: sentences per batch in the deterministic modes.
        shard: ``(k, n)``: only lines whose index % n == k (for n machines or
            processes); ``merge_shards`` presents the n outputs as one file.
    """
    k, n = shard
    if not 0 <= k < n:
        raise InputError(f"shard is {k} of {n}; expected 0 <= k < n")
    with ElmoEmbedder(options_file, weight_file, vocab_file, state_mode, batch_size) as embedder, \
            h5py.File(outfile, "w") as fout:
        progress = tqdm(desc="sentences", unit="sent", disable=None)
        for index, embeddings in embedder.iter_embeddings(_numbered_sentences(dataset_file, shard)):
            fout.create_dataset(str(index), data=embeddings, dtype="float32")
            progress.update()
        progress.close()
    logger.info("wrote %d sentences to %s", progress.n, outfile)


def merge_shards(shard_files, outfile):
    """One HDF5 file presenting the datasets of several shard outputs (external links, no copy).

    Shards are linked by path relative to ``outfile``'s directory, so keep them together.
    """
    base = os.path.dirname(os.path.abspath(outfile))
    with h5py.File(outfile, "w") as fout:
        for shard_file in shard_files:
            relative = os.path.relpath(os.path.abspath(shard_file), base)
            with h5py.File(shard_file, "r") as fin:
                for key in fin:
                    if key in fout:
                        raise InputError(f"{shard_file}: dataset '{key}' is also in another shard")
                    fout[key] = h5py.ExternalLink(relative, key)
    logger.info("linked %d shards into %s", len(shard_files), outfile)
