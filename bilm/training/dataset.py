"""Training data for the biLM: sharded text files -> windows of token (and character) ids.

A corpus is a set of shard files matched by a glob pattern; each shard holds one
whitespace-tokenized sentence per line, UTF-8. Empty and whitespace-only lines are
skipped (they hold no sentence).

Batches are packed as in the original bilm-tf: each of the ``batch_size`` rows of a
batch is a stream of sentences, each encoded as ``<S> w_1 ... w_n </S>``, laid end to
end. A window of ``num_steps`` positions takes the next tokens of its row's stream as
inputs and the token after each as its target. A sentence's last token is only ever a
target, so consecutive windows of a row overlap by one token (the last target of a
window is the first input of the next, unless it ended a sentence), and a sentence
that does not fit a window carries over to the same row of the next batch. For
example, with ``num_steps=3`` and sentences ``[<S> a b c </S>]``, ``[<S> d e </S>]``
on one row::

    window 1: inputs  <S> a b     targets  a b c
    window 2: inputs  c   <S> d   targets  </S> d e
    window 3: inputs  e   ...     targets  </S> ...

Only one shard is read at a time, and character ids are computed for one sentence at
a time, when it is packed.
"""
import glob
import logging
import os
import random

import numpy as np

from ..errors import InputError, VocabularyError
from ..core.text import read_text_lines
from ..core.vocabulary import (BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, UnicodeCharsVocabulary, Vocabulary, count_tokens,
                         frequency_order_warning)

logger = logging.getLogger(__name__)


def _read_sentences(path):
    """Yield the non-blank lines of shard ``path`` as str, reading it line by line."""
    for _, line in read_text_lines(path, "training file"):
        if line and not line.isspace():
            yield line


def _has_sentence(path):
    lines = _read_sentences(path)
    try:
        return next(lines, None) is not None
    finally:
        lines.close()


def _pack_batches(sentences, batch_size, num_steps, max_word_length, pad=False):
    """Pack ``(token_ids, char_ids or None)`` sentences into batches (see the module doc).

    When ``sentences`` is exhausted: without ``pad``, stop without yielding the incomplete
    batch (the original's behaviour: the tokens still in the other rows are never
    targets); with ``pad``, the rows that run out are filled with id 0 until every row is
    used up, so every token is a target exactly once, and the batches add (bool,
    (batch_size, num_steps)) ``next_token_mask``, True where the target is a real token,
    and ``sentence_start``, True where a sentence's first input is.
    """
    streams = [None] * batch_size  # per row: what is left of its current sentence
    finished = [False] * batch_size  # per row (pad): no sentence left for it
    while True:
        token_ids = np.zeros((batch_size, num_steps), np.int32)
        next_token_id = np.zeros((batch_size, num_steps), np.int32)
        mask = np.zeros((batch_size, num_steps), bool)
        starts = np.zeros((batch_size, num_steps), bool)
        if max_word_length is None:
            chars = None
        else:
            chars = np.zeros((batch_size, num_steps, max_word_length), np.int32)
        for row in range(batch_size):
            pos = 0
            while pos < num_steps and not finished[row]:
                if streams[row] is None or len(streams[row][0]) <= 1:
                    streams[row] = next(sentences, None)
                    if streams[row] is None:
                        if not pad:
                            return
                        finished[row] = True
                        break
                    starts[row, pos] = True
                ids, char_ids = streams[row]
                n = min(len(ids) - 1, num_steps - pos)
                token_ids[row, pos : pos + n] = ids[:n]
                next_token_id[row, pos : pos + n] = ids[1 : n + 1]
                mask[row, pos : pos + n] = True
                if chars is not None:
                    chars[row, pos : pos + n] = char_ids[:n]
                streams[row] = (ids[n:], None if char_ids is None else char_ids[n:])
                pos += n
        batch = {"token_ids": token_ids, "tokens_characters": chars, "next_token_id": next_token_id}
        if pad:
            if not mask.any():
                return
            batch.update(next_token_mask=mask, sentence_start=starts)
        yield batch


def _check_batch_shape(batch_size, num_steps):
    for name, value in (("batch_size", batch_size), ("num_steps", num_steps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} is {value!r}; expected a positive integer")


class LMDataset:
    """Sentences of a sharded corpus, packed into language-model training windows.

    Args:
        filepattern: glob pattern of the shard files (one tokenized sentence per line).
        vocab: a ``Vocabulary`` (token input) or ``UnicodeCharsVocabulary`` (character
            input as well); it must contain ``<S>``, ``</S>`` and ``<UNK>``.
        reverse: read every sentence backwards (for the backward LM): the ids are then
            ``</S> w_n ... w_1 <S>``.
        test: read every shard once, in sorted order, then stop. Otherwise shards are
            read in a random order (``random.shuffle``), reshuffled after each pass,
            forever.
        shuffle_on_load: shuffle the sentences of a shard (``random.shuffle``) when it
            is read; this holds the shard's lines in memory, otherwise the shard is
            streamed line by line.
        worker: ``(k, n)``: read only the shards k, k + n, ... of the sorted list (worker
            k of a cluster of n): no sentence is seen twice per epoch across workers.
    """

    def __init__(self, filepattern, vocab, reverse=False, test=False, shuffle_on_load=False, worker=(0, 1)):
        missing = [token for token, idx in ((BOS_TOKEN, vocab.bos), (EOS_TOKEN, vocab.eos), (UNK_TOKEN, vocab.unk))
                   if idx < 0]
        if missing:
            raise VocabularyError(
                f"the vocabulary has no {', '.join(missing)}; training needs <S>, </S> and <UNK>, one per line"
            )
        self._filepattern = filepattern
        self._shards = shard_files(filepattern, worker)
        if not any(_has_sentence(path) for path in self._shards):
            raise InputError(
                f"{filepattern!r} ({len(self._shards)} file(s)) contains no sentences; "
                f"expected one whitespace-tokenized sentence per line"
            )
        self._vocab = vocab
        self._reverse = reverse
        self._test = test
        self._shuffle_on_load = shuffle_on_load
        self._use_char_inputs = hasattr(vocab, "encode_chars")

    @property
    def vocab(self):
        return self._vocab

    @property
    def max_word_length(self):
        """Characters per token of a character vocabulary; None for token input."""
        return self._vocab.max_word_length if self._use_char_inputs else None

    def _shard_order(self):
        """Shard paths: each once in sorted order (test), or shuffled passes forever."""
        if self._test:
            yield from self._shards
            return
        while True:
            remaining = list(self._shards)
            random.shuffle(remaining)
            while remaining:
                yield remaining.pop()

    def _shard_lines(self, path):
        """The non-blank lines of one shard, shuffled if ``shuffle_on_load``."""
        logger.debug("Loading shard %s", path)
        count = 0
        if self._shuffle_on_load:
            lines = list(_read_sentences(path))
            random.shuffle(lines)
            logger.debug("Loaded %d sentences from %s", len(lines), path)
        else:
            lines = _read_sentences(path)
        for count, line in enumerate(lines, start=1):
            yield line
        if not self._shuffle_on_load:
            logger.debug("Read %d sentences from %s", count, path)

    def _encode(self, line):
        """One line -> (token ids (n + 2,), char ids (n + 2, max_word_length) or None)."""
        tokens = line.split()
        if self._reverse:
            tokens.reverse()
        ids = self._vocab.encode(tokens, reverse=self._reverse, split=False)
        if not self._use_char_inputs:
            return ids, None
        return ids, self._vocab.encode_chars(tokens, reverse=self._reverse, split=False)

    def get_sentence(self):
        """Generator of ``(token_ids, char_ids)``, one per sentence of the corpus.

        ``token_ids`` is int32 (n_tokens + 2,) with ``<S>`` first and ``</S>`` last
        (the other way round, tokens reversed, for ``reverse``); ``char_ids`` is int32
        (n_tokens + 2, max_word_length), or None for a token vocabulary. Each call
        starts a new pass over the corpus.
        """
        sentences_in_pass, shards_in_pass = 0, 0
        for path in self._shard_order():
            for line in self._shard_lines(path):
                sentences_in_pass += 1
                yield self._encode(line)
            shards_in_pass += 1
            if shards_in_pass == len(self._shards):
                if sentences_in_pass == 0:  # only when shards were emptied after __init__
                    raise InputError(f"{self._filepattern!r} contains no sentences")
                sentences_in_pass, shards_in_pass = 0, 0

    def iter_batches(self, batch_size, num_steps, pad=False):
        """Generator of training batches, each a dict of:

        - ``token_ids``: int32 (batch_size, num_steps), the inputs;
        - ``tokens_characters``: int32 (batch_size, num_steps, max_word_length), the
          inputs' character ids (no +1 shift), or None for a token vocabulary;
        - ``next_token_id``: int32 (batch_size, num_steps), the targets;
        - with ``pad``: ``next_token_mask``, bool (batch_size, num_steps), True where
          the target is a real token (False in the padding of rows that ran out), and
          ``sentence_start``, bool (batch_size, num_steps), True where a sentence's
          first input (``<S>``, or ``</S>`` reversed) is.

        Endless in training mode. In test mode it ends when the corpus is used up: the
        last, incomplete batch is dropped (the original's behaviour), or with ``pad``
        the rows that run out are padded until every token has been a target once.
        """
        _check_batch_shape(batch_size, num_steps)
        sentences = self.get_sentence()
        try:
            yield from _pack_batches(sentences, batch_size, num_steps, self.max_word_length, pad)
        finally:
            sentences.close()


class BidirectionalLMDataset:
    """Batches for a bidirectional LM: a forward and a reversed ``LMDataset``.

    Args: as ``LMDataset``. The two directions read the shards independently (each
    its own random shard order).
    """

    def __init__(self, filepattern, vocab, test=False, shuffle_on_load=False, worker=(0, 1)):
        self._data_forward = LMDataset(filepattern, vocab, reverse=False, test=test, shuffle_on_load=shuffle_on_load,
                                       worker=worker)
        self._data_reverse = LMDataset(filepattern, vocab, reverse=True, test=test, shuffle_on_load=shuffle_on_load,
                                       worker=worker)

    @property
    def vocab(self):
        return self._data_forward.vocab

    def iter_batches(self, batch_size, num_steps, pad=False):
        """Generator of the forward batches of ``LMDataset.iter_batches`` plus the
        backward ones under ``token_ids_reverse``, ``tokens_characters_reverse`` and
        ``next_token_id_reverse`` (same shapes; ``next_token_mask_reverse`` and
        ``sentence_start_reverse`` with ``pad``).
        Stops when either direction stops (a sentence has as many tokens both ways, so
        the two are packed alike and stop together).
        """
        forward = self._data_forward.iter_batches(batch_size, num_steps, pad)
        backward = self._data_reverse.iter_batches(batch_size, num_steps, pad)
        try:
            for batch, batch_reverse in zip(forward, backward):
                for key, value in batch_reverse.items():
                    batch[key + "_reverse"] = value
                yield batch
        finally:
            forward.close()
            backward.close()


def load_vocab(vocab_file, max_word_length=None):
    """The training vocabulary: characters too when ``max_word_length`` is given."""
    if max_word_length:
        return UnicodeCharsVocabulary(vocab_file, max_word_length, validate_file=True)
    return Vocabulary(vocab_file, validate_file=True)


def training_data(options, vocab, filepattern, test=False, worker=(0, 1)):
    """The dataset of ``filepattern`` for a model (``ModelOptions``).

    ``vocab`` is a loaded vocabulary or a vocabulary file (loaded with the model's
    characters). Training shuffles each shard's sentences; test mode reads them in order.
    ``worker``: ``(k, n)``, worker k of a cluster of n reads its share of the shards.
    """
    if isinstance(vocab, (str, os.PathLike)):
        vocab = load_vocab(vocab, options.max_characters if options.char_input else None)
    dataset = BidirectionalLMDataset if options.bidirectional else LMDataset
    return dataset(filepattern, vocab, test=test, shuffle_on_load=not test, worker=worker)


def shard_files(filepattern, worker=(0, 1), what="training file"):
    """The training files a glob pattern matches, sorted (worker k of n: files k, k + n, ...); an error if none."""
    files = sorted(path for path in glob.glob(filepattern) if os.path.isfile(path))
    if not files:
        if os.path.isdir(filepattern):
            raise InputError(f"no {what} matches {filepattern!r}; it is a directory: expected a glob of its files, "
                             f"such as {os.path.join(filepattern, '*')!r}")
        raise InputError(f"no {what} matches {filepattern!r}; expected a glob of text files")
    k, n = worker
    if len(files) < n:
        raise InputError(f"{filepattern!r} matches {len(files)} file(s), fewer than the {n} workers of the cluster: "
                         f"each worker reads its own shards, so split the corpus into at least {n} files")
    return files[k::n]


def count_train_tokens(filepattern, vocab=None):
    """Tokens per epoch of the training files (each sentence's ``</S>`` target included).

    With ``vocab``, warns when it does not look sorted by descending count in this data
    (the sampled softmax assumes that order).
    """
    files = shard_files(filepattern)
    counts, n_sentences = count_tokens(files)
    logger.info("counted %d tokens in %d sentences of %s", sum(counts.values()), n_sentences, filepattern)
    if vocab is not None:
        warning = frequency_order_warning(vocab, counts)
        if warning:
            logger.warning(warning)
    return sum(counts.values()) + n_sentences
