"""Vocabularies: token <-> id, and token -> character ids.

A vocabulary file has one token per line; token ids are line numbers, except that a
line ``!!!MAXTERMID`` is skipped. ``<S>``, ``</S>`` and ``<UNK>`` are the sentence
begin, sentence end and unknown tokens (training needs all three).
"""
import logging
from collections import Counter

import numpy as np

from ..errors import VocabularyError
from .files import atomic_output
from .text import read_text_lines

BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<S>", "</S>", "<UNK>"
_SKIPPED_LINE = "!!!MAXTERMID"
logger = logging.getLogger(__name__)

# Character ids (before the +1 shift the batchers apply): bytes are 0..255.
BOS_CHAR, EOS_CHAR, BOW_CHAR, EOW_CHAR, PAD_CHAR = 256, 257, 258, 259, 260


def read_vocabulary_file(filename):
    """Return the list of tokens of a vocabulary file (``!!!MAXTERMID`` skipped)."""
    tokens = [line.strip() for _, line in read_text_lines(filename, "vocabulary file", VocabularyError)]
    tokens = [token for token in tokens if token != _SKIPPED_LINE]
    if not tokens:
        raise VocabularyError(f"{filename}: vocabulary file is empty; expected one token per line")
    return tokens


def boundary_char_ids(mark, max_word_length):
    """int32 (max_word_length,) of a sentence boundary: ``[bow, mark, eow, pad...]``; mark BOS_CHAR or EOS_CHAR."""
    code = np.full(max_word_length, PAD_CHAR, dtype=np.int32)
    code[:3] = (BOW_CHAR, mark, EOW_CHAR)
    return code


def token_char_ids(token, max_word_length):
    """int32 (max_word_length,): ``[bow, UTF-8 bytes (cut to max_word_length - 2), eow, pad...]``."""
    code = np.full(max_word_length, PAD_CHAR, dtype=np.int32)
    encoded = token.encode("utf-8", "ignore")[: max_word_length - 2]
    code[0] = BOW_CHAR
    code[1 : len(encoded) + 1] = np.frombuffer(encoded, dtype=np.uint8)
    code[len(encoded) + 1] = EOW_CHAR
    return code


class Vocabulary:
    """A token vocabulary read from a file.

    Args:
        filename: vocabulary file, one token per line.
        validate_file: if True, require ``<S>``, ``</S>`` and ``<UNK>``.
    """

    def __init__(self, filename, validate_file=False):
        self._filename = filename
        self._id_to_word = read_vocabulary_file(filename)
        self._word_to_id = {}
        for idx, word in enumerate(self._id_to_word):
            # The first occurrence wins, so ids stay line numbers.
            first = self._word_to_id.setdefault(word, idx)
            if first != idx:
                message = (f"{filename}: token {word!r} is on lines {first + 1} and {idx + 1} (counting "
                           f"without !!!MAXTERMID); expected each token once")
                if validate_file:  # training: the softmax would have two rows for one token
                    raise VocabularyError(message)
                logger.warning("%s; using the first", message)
        self._bos = self._word_to_id.get(BOS_TOKEN, -1)
        self._eos = self._word_to_id.get(EOS_TOKEN, -1)
        self._unk = self._word_to_id.get(UNK_TOKEN, -1)
        if validate_file:
            missing = [t for t, i in ((BOS_TOKEN, self._bos), (EOS_TOKEN, self._eos), (UNK_TOKEN, self._unk)) if i < 0]
            if missing:
                raise VocabularyError(
                    f"{filename}: missing special token(s) {', '.join(missing)}; "
                    f"a training vocabulary needs <S>, </S> and <UNK> (case sensitive), one per line"
                )

    @property
    def filename(self):
        return self._filename

    @property
    def bos(self):
        return self._bos

    @property
    def eos(self):
        return self._eos

    @property
    def unk(self):
        return self._unk

    @property
    def size(self):
        return len(self._id_to_word)

    def word_to_id(self, word):
        """Id of ``word``; the ``<UNK>`` id (-1 without one) when not in the vocabulary."""
        return self._word_to_id.get(word, self.unk)

    def id_to_word(self, cur_id):
        return self._id_to_word[cur_id]

    def decode(self, cur_ids):
        """Ids -> a space-separated string."""
        return " ".join(self.id_to_word(cur_id) for cur_id in cur_ids)

    def encode(self, sentence, reverse=False, split=True):
        """A sentence -> int32 ids (n_tokens + 2,) with ``<S>`` first and ``</S>`` last.

        ``sentence`` is a string split on whitespace (``split=True``) or a list of
        tokens. With ``reverse``, the tokens are reversed and ``</S>`` comes first.
        """
        words = sentence.split() if split else sentence
        word_ids = [self.word_to_id(word) for word in words]
        if reverse:
            return np.array([self.eos] + word_ids + [self.bos], dtype=np.int32)
        return np.array([self.bos] + word_ids + [self.eos], dtype=np.int32)


class UnicodeCharsVocabulary(Vocabulary):
    """A vocabulary that also maps tokens to character ids.

    A token is its UTF-8 bytes cut to ``max_word_length - 2``, wrapped in begin-of-word
    (258) and end-of-word (259) ids and right-padded with 260. Sentence begin and end
    are ``[258, 256, 259, 260, ...]`` and ``[258, 257, 259, 260, ...]``. Tokens not in
    the vocabulary are converted when they are met.
    """

    def __init__(self, filename, max_word_length, **kwargs):
        super().__init__(filename, **kwargs)
        if max_word_length < 3:
            raise VocabularyError(
                f"max_characters_per_token is {max_word_length}; expected at least 3 "
                f"(begin-of-word, one byte, end-of-word)"
            )
        self._max_word_length = max_word_length
        self.bos_char, self.eos_char = BOS_CHAR, EOS_CHAR
        self.bow_char, self.eow_char, self.pad_char = BOW_CHAR, EOW_CHAR, PAD_CHAR
        self.bos_chars = boundary_char_ids(BOS_CHAR, max_word_length)
        self.eos_chars = boundary_char_ids(EOS_CHAR, max_word_length)
        self._word_char_ids = np.stack([self._convert_word_to_char_ids(w) for w in self._id_to_word])
        if self.bos >= 0:
            self._word_char_ids[self.bos] = self.bos_chars
        if self.eos >= 0:
            self._word_char_ids[self.eos] = self.eos_chars

    @property
    def word_char_ids(self):
        """int32 (size, max_word_length): the character ids of every vocabulary token."""
        return self._word_char_ids

    @property
    def max_word_length(self):
        return self._max_word_length

    def _convert_word_to_char_ids(self, word):
        return token_char_ids(word, self._max_word_length)

    def word_to_char_ids(self, word):
        """int32 (max_word_length,) character ids of one token."""
        idx = self._word_to_id.get(word)
        if idx is not None:
            return self._word_char_ids[idx]
        return self._convert_word_to_char_ids(word)

    def encode_chars(self, sentence, reverse=False, split=True):
        """A sentence -> int32 (n_tokens + 2, max_word_length) with begin/end tokens.

        ``reverse`` swaps the begin and end tokens of an already reversed sentence.
        """
        words = sentence.split() if split else sentence
        chars_ids = [self.word_to_char_ids(word) for word in words]
        if reverse:
            return np.vstack([self.eos_chars] + chars_ids + [self.bos_chars])
        return np.vstack([self.bos_chars] + chars_ids + [self.eos_chars])


def count_tokens(filenames):
    """Token counts (collections.Counter) and number of sentences of whitespace-tokenized text files."""
    counts, n_sentences = Counter(), 0
    for filename in filenames:
        for _, line in read_text_lines(filename):
            tokens = line.split()
            if tokens:
                counts.update(tokens)
                n_sentences += 1
    return counts, n_sentences


def build_vocabulary(counts, min_count=1, max_size=None):
    """``<S>``, ``</S>``, ``<UNK>``, then tokens by descending count (ties alphabetical).

    Args:
        counts: token -> count.
        min_count: drop tokens seen fewer times.
        max_size: keep at most this many tokens in all (special tokens included).
    Returns:
        the list of tokens, ready for ``write_vocabulary``.
    """
    specials = [BOS_TOKEN, EOS_TOKEN, UNK_TOKEN]
    ranked = sorted((t for t, c in counts.items() if c >= min_count and t not in specials),
                    key=lambda t: (-counts[t], t))
    if max_size is not None:
        ranked = ranked[: max(0, max_size - len(specials))]
    return specials + ranked


def frequency_order_warning(vocab, counts):
    """A warning message if ``vocab`` is clearly not sorted by descending count, else None.

    The sampled softmax draws negatives assuming ids sorted by frequency (log-uniform).
    Measured by the rank correlation of token id and count in ``counts`` (from the
    training data) over the non-special tokens: about -1 when sorted, about 0 when not.
    """
    ids = [i for i in range(vocab.size) if i not in (vocab.bos, vocab.eos, vocab.unk)]
    if len(ids) < 10:
        return None
    frequencies = np.array([counts.get(vocab.id_to_word(i), 0) for i in ids], dtype=np.float64)
    if frequencies.std() == 0:
        return None
    count_ranks = frequencies.argsort().argsort().astype(np.float64)
    correlation = np.corrcoef(np.arange(len(ids)), count_ranks)[0, 1]
    if correlation > -0.3:
        return (f"{vocab.filename}: tokens do not look sorted by descending count in the training data "
                f"(rank correlation of id and count {correlation:.2f}, expected near -1); the sampled softmax "
                f"assumes frequency order: build the vocabulary with `bilm vocab`")
    return None


def write_vocabulary(tokens, filename, overwrite=False, inputs=()):
    """One token per line, UTF-8 (``filename`` is replaced only with ``overwrite``; it may not be one of ``inputs``)."""
    named = {f"input {k + 1}": path for k, path in enumerate(inputs)}
    with atomic_output(filename, overwrite, named) as temporary, open(temporary, "w", encoding="utf-8") as fout:
        fout.write("\n".join(tokens) + "\n")
