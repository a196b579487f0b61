"""Batchers: lists of tokenized sentences -> padded id arrays for the biLM.

Both batchers add the sentence begin and end tokens and shift every id by +1, so that
0 means "no token here" (the padding of shorter sentences).
"""
import numpy as np

from ..errors import InputError
from .vocabulary import (BOS_CHAR, EOS_CHAR, UnicodeCharsVocabulary, Vocabulary, boundary_char_ids,
                         token_char_ids)


def window_batches(window, batch_size, by_length=True):
    """[(indices, sentences)]: the batches of a window of ``(index, tokens)``, in the order computed.

    Sorted by length (stable) unless ``by_length`` is False, then cut every
    ``batch_size`` sentences: the same window always gives the same batches. A job's
    batches are its units of work (``bilm.core.files.PartsJob``), on one machine or many.
    """
    order = list(range(len(window)))
    if by_length:
        order.sort(key=lambda i: len(window[i][1]))
    chosen = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    return [([window[i][0] for i in rows], [window[i][1] for i in rows]) for rows in chosen]


def _check_sentences(sentences):
    if isinstance(sentences, str):
        raise InputError("batch_sentences expects a list of tokenized sentences (lists of str), got one str")
    if len(sentences) == 0:
        raise InputError("batch_sentences got an empty list of sentences; expected at least one sentence")
    for k, sentence in enumerate(sentences):
        if isinstance(sentence, str):
            raise InputError(
                f"sentence {k} is a str; expected a list of tokens (e.g. sentence.split())"
            )
    return max(len(sentence) for sentence in sentences) + 2


class Batcher:
    """Batch sentences of tokens into character ids.

    Args:
        lm_vocab_file: vocabulary file; its tokens' character ids are precomputed,
            others are converted when met. None: convert every token when met.
        max_token_length: ``char_cnn.max_characters_per_token`` of the model (50).
    """

    def __init__(self, lm_vocab_file, max_token_length):
        self._lm_vocab = UnicodeCharsVocabulary(lm_vocab_file, max_token_length) if lm_vocab_file else None
        self._max_token_length = max_token_length
        self._boundaries = [boundary_char_ids(mark, max_token_length) for mark in (BOS_CHAR, EOS_CHAR)]

    @property
    def vocab(self):
        return self._lm_vocab

    def batch_sentences(self, sentences):
        """List[List[str]] -> int32 (n_sentences, max_len + 2, max_token_length).

        Row k holds ``<S>``, the tokens of sentence k and ``</S>``, then zeros.
        """
        max_length = _check_sentences(sentences)
        char_ids = np.zeros((len(sentences), max_length, self._max_token_length), dtype=np.int32)
        for k, sentence in enumerate(sentences):
            char_ids[k, : len(sentence) + 2] = self._encode(sentence) + 1
        return char_ids

    def _encode(self, sentence):
        if self._lm_vocab is not None:
            return self._lm_vocab.encode_chars(sentence, split=False)
        rows = [token_char_ids(token, self._max_token_length) for token in sentence]
        return np.stack([self._boundaries[0]] + rows + [self._boundaries[1]])


class TokenBatcher:
    """Batch sentences of tokens into token ids of a fixed vocabulary.

    Tokens not in the vocabulary get the ``<UNK>`` id; a vocabulary without ``<UNK>``
    cannot take them (an :class:`~bilm.errors.InputError` names the token).
    """

    def __init__(self, lm_vocab_file):
        self._lm_vocab = Vocabulary(lm_vocab_file)
        missing = [t for t, i in (("<S>", self._lm_vocab.bos), ("</S>", self._lm_vocab.eos)) if i < 0]
        if missing:
            raise InputError(
                f"{lm_vocab_file}: token input needs {' and '.join(missing)} in the vocabulary "
                f"(the sentence begin/end tokens the model reads)"
            )

    @property
    def vocab(self):
        return self._lm_vocab

    def batch_sentences(self, sentences):
        """List[List[str]] -> int32 (n_sentences, max_len + 2) token ids + 1, 0 = padding."""
        max_length = _check_sentences(sentences)
        token_ids = np.zeros((len(sentences), max_length), dtype=np.int32)
        for k, sentence in enumerate(sentences):
            ids = self._lm_vocab.encode(sentence, split=False)
            if self._lm_vocab.unk < 0 and (ids < 0).any():
                unknown = next(w for w in sentence if self._lm_vocab.word_to_id(w) < 0)
                raise InputError(
                    f"sentence {k}: token {unknown!r} is not in the vocabulary, which has no <UNK>; "
                    f"token input covers only the vocabulary it was dumped for (use character input)"
                )
            token_ids[k, : len(sentence) + 2] = ids + 1
        return token_ids
