"""Vocabularies and batchers: the original's char-id and token-id semantics."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bilm.data import Batcher, TokenBatcher, UnicodeCharsVocabulary, Vocabulary
from bilm.errors import InputError, VocabularyError
from numpy_bilm import char_ids_for_sentences


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("<S>\n</S>\n<UNK>\n!!!MAXTERMID\nthe\ncafé\n", encoding="utf-8")
    return str(path)


def test_vocabulary_ids_are_lines_without_maxtermid(vocab_file):
    vocab = Vocabulary(vocab_file, validate_file=True)
    assert (vocab.bos, vocab.eos, vocab.unk, vocab.size) == (0, 1, 2, 5)
    assert vocab.word_to_id("café") == 4 and vocab.word_to_id("unseen") == 2
    np.testing.assert_array_equal(vocab.encode("the unseen café"), [0, 3, 2, 4, 1])
    # reverse=True takes an already reversed sentence and swaps begin/end.
    np.testing.assert_array_equal(vocab.encode(["café", "the"], reverse=True, split=False), [1, 4, 3, 0])
    assert vocab.decode([3, 4]) == "the café"


def test_validate_file_requires_special_tokens(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("<S>\n</S>\nthe\n")
    Vocabulary(str(path))  # fine at inference
    with pytest.raises(VocabularyError, match="<UNK>"):
        Vocabulary(str(path), validate_file=True)


def test_char_ids_multibyte_long_and_boundaries(vocab_file):
    vocab = UnicodeCharsVocabulary(vocab_file, 10)
    np.testing.assert_array_equal(vocab.word_to_char_ids("é"), [258, 195, 169, 259] + [260] * 6)
    # 12 bytes are cut to max_word_length - 2 = 8, then begin/end of word.
    np.testing.assert_array_equal(vocab.word_to_char_ids("abcdefghijkl"), [258] + list(b"abcdefgh") + [259])
    np.testing.assert_array_equal(vocab.word_to_char_ids("<S>"), [258, 256, 259] + [260] * 7)
    np.testing.assert_array_equal(vocab.word_to_char_ids("</S>"), [258, 257, 259] + [260] * 7)
    # a multi-byte character cut in the middle keeps its first byte, as the original did
    np.testing.assert_array_equal(vocab.word_to_char_ids("abcdefgé"), [258] + list(b"abcdefg") + [195, 259])


def test_batcher_shapes_shift_and_padding(vocab_file):
    ids = Batcher(vocab_file, 50).batch_sentences([["the", "café"], ["x"], []])
    assert ids.shape == (3, 4, 50) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids[1, 0, :4], [259, 257, 260, 261])  # <S> + 1
    np.testing.assert_array_equal(ids[1, 1, :3], [259, ord("x") + 1, 260])
    np.testing.assert_array_equal(ids[1, 2, :4], [259, 258, 260, 261])  # </S> + 1
    assert (ids[1, 3] == 0).all() and (ids[2, 2:] == 0).all()


def test_single_token_sentence(vocab_file):
    ids = Batcher(vocab_file, 50).batch_sentences([["the"]])
    assert ids.shape == (1, 3, 50) and (ids > 0).any(axis=2).all()


@pytest.mark.parametrize("bad, message", [([], "empty list"), ("the cat", "one str"), ([["ok"], "a b"], "sentence 1")])
def test_bad_batches_have_clear_errors(vocab_file, bad, message):
    for batcher in (Batcher(vocab_file, 50), TokenBatcher(vocab_file)):
        with pytest.raises(InputError, match=message):
            batcher.batch_sentences(bad)


def test_token_batcher(vocab_file):
    ids = TokenBatcher(vocab_file).batch_sentences([["the", "unseen"], ["café"]])
    np.testing.assert_array_equal(ids, [[1, 4, 3, 2], [1, 5, 2, 0]])


def test_token_batcher_without_unk_names_the_token(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("<S>\n</S>\nthe\n")
    with pytest.raises(InputError, match="'cat'"):
        TokenBatcher(str(path)).batch_sentences([["the", "cat"]])


tokens = st.text(st.characters(blacklist_categories=("Cs", "Z", "Cc")), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(tokens, max_size=6), min_size=1, max_size=4), st.integers(5, 50))
def test_batcher_equals_independent_encoder_on_arbitrary_unicode(tmp_path_factory, sentences, max_chars):
    vocab_file = tmp_path_factory.mktemp("v") / "vocab.txt"
    vocab_file.write_text("<S>\n</S>\n<UNK>\nthe\n", encoding="utf-8")
    sentences = [[t for t in s if t not in ("<S>", "</S>")] for s in sentences]
    got = Batcher(str(vocab_file), max_chars).batch_sentences(sentences)
    np.testing.assert_array_equal(got, char_ids_for_sentences(sentences, max_chars))


def test_prefetch_keeps_order_raises_where_the_error_was_and_stays_ended():
    from bilm.core.prefetch import Prefetch

    def items():
        yield from range(5)
        raise ValueError("bad line 6")

    prefetched = Prefetch(items())
    assert [next(prefetched) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="bad line 6"):
        next(prefetched)
    assert next(prefetched, "ended") == "ended"  # not a wait for an item that never comes
    with Prefetch(range(3)) as done:
        assert list(done) == [0, 1, 2] and list(done) == []
