"""Training data: LMDataset / BidirectionalLMDataset read shards and pack LM windows.

Every corpus and vocabulary here is written to ``tmp_path`` by the test itself; the
original's small training files in ``../shared/reference/bilm-tf/train`` are used
when present.
"""
import itertools
import logging
import random
import re
from pathlib import Path

import numpy as np
import pytest

import bilm.core.text as text_module
from bilm.errors import BilmError, InputError, VocabularyError
from bilm.training.dataset import BidirectionalLMDataset, LMDataset
from bilm.core.vocabulary import UnicodeCharsVocabulary, Vocabulary
from conftest import TINY_CORPUS
from conftest import write_vocab as write_corpus_vocab
from numpy_bilm import char_ids_for_sentences


# Token ids are line numbers of the vocabulary file.
SMALL_VOCAB = ["<S>", "</S>", "<UNK>", "the", "cat", "sat", "a", "dog", "ran", "fast"]
BOS, EOS, UNK = 0, 1, 2


def write_vocab(tmp_path, tokens=SMALL_VOCAB):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return str(path)


def write_shards(tmp_path, shards, name="shard"):
    """Write each list of lines to its own shard file; returns the glob pattern."""
    directory = tmp_path / "corpus"
    directory.mkdir(exist_ok=True)
    for k, lines in enumerate(shards):
        (directory / f"{name}{k:02d}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(directory / f"{name}*.txt")


def tagged_corpus(tmp_path, n_sentences, n_shards=1, seed=0, max_words=8):
    """Random sentences ``s{k} w.. w.. e{k}``: the tags identify a sentence from either end.

    Returns (pattern, vocabulary file, list of the sentences as token lists).
    """
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(12)]
    sentences = [[f"s{k}"] + list(rng.choice(words, size=rng.integers(0, max_words + 1))) + [f"e{k}"]
                 for k in range(n_sentences)]
    vocab = ["<S>", "</S>", "<UNK>"] + words + [f"s{k}" for k in range(n_sentences)] + [f"e{k}" for k in range(n_sentences)]
    per_shard = -(-n_sentences // n_shards)
    shards = [[" ".join(s) for s in sentences[i : i + per_shard]] for i in range(0, n_sentences, per_shard)]
    return write_shards(tmp_path, shards), write_vocab(tmp_path, vocab), sentences


def sentence_chars(tokens, max_chars, reverse=False):
    """Character ids (no +1 shift) of ``<S> tokens </S>``, or of ``</S> reversed tokens <S>``,
    from the NumPy oracle's independent encoder."""
    ordered = list(tokens[::-1] if reverse else tokens)
    rows = char_ids_for_sentences([ordered], max_chars)[0, : len(ordered) + 2] - 1
    if reverse:
        rows[[0, -1]] = rows[[-1, 0]]
    return rows


def token_chars(word, max_chars):
    """Character ids (no shift) of one vocabulary word; ``<S>``/``</S>`` are the sentence boundaries."""
    boundaries = sentence_chars([], max_chars)
    return {"<S>": boundaries[0], "</S>": boundaries[1]}.get(word, sentence_chars([word], max_chars)[1])


def finite(iterator, limit=5000):
    """All items of an iterator that must end (fails instead of hanging if it does not)."""
    items = list(itertools.islice(iterator, limit + 1))
    assert len(items) <= limit, "the generator did not stop"
    return items


def row_streams(batches, inputs_key, targets_key):
    """Per row: the concatenation over batches of its inputs and of its targets."""
    inputs = np.concatenate([b[inputs_key] for b in batches], axis=1)
    targets = np.concatenate([b[targets_key] for b in batches], axis=1)
    return inputs, targets


def split_pieces(inputs, targets, start_token):
    """Cut one row's stream where a sentence starts (its first input is ``start_token``)."""
    starts = list(np.flatnonzero(inputs == start_token)) + [len(inputs)]
    assert starts[0] == 0, "a row must begin with the start of a sentence"
    return [(inputs[a:b], targets[a:b]) for a, b in zip(starts[:-1], starts[1:])]


# --- exact packing, computed by hand -------------------------------------------------

def test_exact_packing_by_hand_with_carry_over_across_batches(tmp_path):
    # "the cat sat" = [<S> the cat sat </S>] = [0 3 4 5 1]
    # "a dog ran fast" = [<S> a dog ran fast </S>] = [0 6 7 8 9 1]
    # Train mode with one shard: the generator repeats sentence 1, 2, 1, 2, ...
    pattern = write_shards(tmp_path, [["the cat sat", "a dog ran fast"]])
    data = LMDataset(pattern, Vocabulary(write_vocab(tmp_path)))
    batches = list(itertools.islice(data.iter_batches(batch_size=2, num_steps=3), 3))
    expected_inputs = [
        [[0, 3, 4], [0, 6, 7]],  # row 0 takes sentence 1, row 1 sentence 2
        [[5, 0, 3], [8, 9, 0]],  # "sat" carried over, then sentence 1 again / "ran fast" carried, sentence 2
        [[4, 5, 0], [6, 7, 8]],
    ]
    expected_targets = [
        [[3, 4, 5], [6, 7, 8]],
        [[1, 3, 4], [9, 1, 6]],
        [[5, 1, 3], [7, 8, 9]],
    ]
    for batch, inputs, targets in zip(batches, expected_inputs, expected_targets):
        assert batch["token_ids"].dtype == np.int32 and batch["next_token_id"].dtype == np.int32
        np.testing.assert_array_equal(batch["token_ids"], inputs)
        np.testing.assert_array_equal(batch["next_token_id"], targets)
        assert batch["tokens_characters"] is None
    assert set(batches[0]) == {"token_ids", "tokens_characters", "next_token_id"}


def test_test_mode_drops_the_final_incomplete_batch(tmp_path):
    pattern = write_shards(tmp_path, [["the cat sat", "a dog ran fast"]])
    data = LMDataset(pattern, Vocabulary(write_vocab(tmp_path)), test=True)
    batches = finite(data.iter_batches(batch_size=2, num_steps=3))
    # The second batch would need a third sentence for row 0: it is not yielded.
    assert len(batches) == 1
    np.testing.assert_array_equal(batches[0]["token_ids"], [[0, 3, 4], [0, 6, 7]])
    np.testing.assert_array_equal(batches[0]["next_token_id"], [[3, 4, 5], [6, 7, 8]])


def test_padded_test_mode_makes_every_token_a_target_once(tmp_path):
    pattern = write_shards(tmp_path, [["the cat sat", "a dog ran fast"]])
    batches = finite(LMDataset(pattern, Vocabulary(write_vocab(tmp_path)), test=True).iter_batches(2, 3, pad=True))
    # Row 0 runs out after "sat" (its target </S>), row 1 after "fast": the rest is padding, masked out.
    assert len(batches) == 2
    expected = {
        "token_ids": [[[0, 3, 4], [0, 6, 7]], [[5, 0, 0], [8, 9, 0]]],
        "next_token_id": [[[3, 4, 5], [6, 7, 8]], [[1, 0, 0], [9, 1, 0]]],
        "next_token_mask": [[[1, 1, 1], [1, 1, 1]], [[1, 0, 0], [1, 1, 0]]],
        "sentence_start": [[[1, 0, 0], [1, 0, 0]], [[0, 0, 0], [0, 0, 0]]],
    }
    for key, values in expected.items():
        for batch, value in zip(batches, values):
            np.testing.assert_array_equal(batch[key], value, err_msg=key)
    # More rows than sentences: the rows without one are padding from the start.
    batches = finite(LMDataset(pattern, Vocabulary(write_vocab(tmp_path)), test=True).iter_batches(3, 4, pad=True))
    assert len(batches) == 2 and not batches[0]["next_token_mask"][2].any()
    assert sum(int(b["next_token_mask"].sum()) for b in batches) == 4 + 5  # every target of both sentences, once


def test_bidirectional_exact_packing_by_hand(tmp_path):
    # Reversed: "the cat sat" = [</S> sat cat the <S>] = [1 5 4 3 0],
    #           "a dog ran fast" = [</S> fast ran dog a <S>] = [1 9 8 7 6 0].
    pattern = write_shards(tmp_path, [["the cat sat", "a dog ran fast"]])
    data = BidirectionalLMDataset(pattern, Vocabulary(write_vocab(tmp_path)), test=True)
    batches = finite(data.iter_batches(batch_size=1, num_steps=3))
    assert len(batches) == 3  # 4 + 5 inputs per direction = 3 full windows, nothing dropped
    assert set(batches[0]) == {
        "token_ids", "tokens_characters", "next_token_id",
        "token_ids_reverse", "tokens_characters_reverse", "next_token_id_reverse",
    }
    got = {key: np.concatenate([b[key] for b in batches], axis=1).tolist()
           for key in ("token_ids", "next_token_id", "token_ids_reverse", "next_token_id_reverse")}
    assert got == {
        "token_ids": [[0, 3, 4, 5, 0, 6, 7, 8, 9]],
        "next_token_id": [[3, 4, 5, 1, 6, 7, 8, 9, 1]],
        "token_ids_reverse": [[1, 5, 4, 3, 1, 9, 8, 7, 6]],
        "next_token_id_reverse": [[5, 4, 3, 0, 9, 8, 7, 6, 0]],
    }


# --- packing properties on random corpora --------------------------------------------

@pytest.mark.parametrize("batch_size,num_steps", [(1, 1), (3, 4), (4, 7), (2, 20)])
def test_targets_are_next_inputs_and_windows_carry_over(tmp_path, batch_size, num_steps):
    pattern, vocab_file, sentences = tagged_corpus(tmp_path, 40, n_shards=2)
    vocab = Vocabulary(vocab_file)
    batches = finite(LMDataset(pattern, vocab, test=True).iter_batches(batch_size, num_steps))
    assert len(batches) >= 3
    for batch in batches:
        inputs, targets = batch["token_ids"], batch["next_token_id"]
        assert inputs.shape == targets.shape == (batch_size, num_steps)
        assert not (inputs == EOS).any() and not (targets == BOS).any()
        # Within a window the target is the next input, except at a sentence end.
        same = targets[:, :-1] == inputs[:, 1:]
        boundary = (targets[:, :-1] == EOS) & (inputs[:, 1:] == BOS)
        assert (same | boundary).all()
    for before, after in zip(batches[:-1], batches[1:]):
        last_target, first_input = before["next_token_id"][:, -1], after["token_ids"][:, 0]
        ended = last_target == EOS
        np.testing.assert_array_equal(first_input[~ended], last_target[~ended])
        assert (first_input[ended] == BOS).all()

    # Each row is whole sentences end to end, and together the rows use the first m
    # sentences of the corpus exactly once (the last piece of a row may be partial).
    used = []
    inputs, targets = row_streams(batches, "token_ids", "next_token_id")
    for row in range(batch_size):
        pieces = split_pieces(inputs[row], targets[row], BOS)
        for j, (piece_inputs, piece_targets) in enumerate(pieces):
            k = int(vocab.id_to_word(int(piece_targets[0]))[1:])  # the s{k} tag
            ids = vocab.encode(sentences[k], split=False)
            n = len(piece_inputs)
            if j < len(pieces) - 1:
                assert n == len(ids) - 1
            np.testing.assert_array_equal(piece_inputs, ids[:n])
            np.testing.assert_array_equal(piece_targets, ids[1 : n + 1])
            used.append(k)
    assert sorted(used) == list(range(len(used)))


def test_reverse_streams_read_each_sentence_backwards(tmp_path):
    pattern, vocab_file, sentences = tagged_corpus(tmp_path, 30, n_shards=3, seed=1)
    vocab = Vocabulary(vocab_file)
    batches = finite(BidirectionalLMDataset(pattern, vocab, test=True).iter_batches(3, 5))
    inputs, targets = row_streams(batches, "token_ids_reverse", "next_token_id_reverse")
    used = []
    for row in range(3):
        pieces = split_pieces(inputs[row], targets[row], EOS)  # reversed sentences start with </S>
        for piece_inputs, piece_targets in pieces:
            k = int(vocab.id_to_word(int(piece_targets[0]))[1:])  # the e{k} tag, the last word
            backwards = [EOS] + [vocab.word_to_id(w) for w in reversed(sentences[k])] + [BOS]
            n = len(piece_inputs)
            assert piece_inputs.tolist() == backwards[:n]
            assert piece_targets.tolist() == backwards[1 : n + 1]
            used.append(k)
    assert sorted(used) == list(range(len(used))) and len(used) > 10
    assert not (inputs == BOS).any()


def test_test_mode_reads_three_shards_once_in_sorted_order(tmp_path):
    # Every sentence has 4 words = 6 ids = 5 windows positions: with num_steps=5 each
    # row takes exactly one sentence per batch, so the expected batches are exact.
    words = ["the", "cat", "sat", "a", "dog", "ran", "fast"]
    rng = random.Random(3)
    sentences = [[rng.choice(words) for _ in range(4)] for _ in range(12)]
    pattern = write_shards(tmp_path, [[" ".join(s) for s in sentences[i : i + 4]] for i in (8, 0, 4)], name="part")
    # part00 holds sentences 8-11, part01 0-3, part02 4-7: sorted shard order is 8..11, 0..3, 4..7.
    order = list(range(8, 12)) + list(range(0, 8))
    vocab = Vocabulary(write_vocab(tmp_path))
    batches = finite(LMDataset(pattern, vocab, test=True).iter_batches(batch_size=3, num_steps=5))
    assert len(batches) == 4
    for b, batch in enumerate(batches):
        for row in range(3):
            ids = vocab.encode(sentences[order[3 * b + row]], split=False)
            np.testing.assert_array_equal(batch["token_ids"][row], ids[:-1])
            np.testing.assert_array_equal(batch["next_token_id"][row], ids[1:])


@pytest.mark.parametrize("num_steps", [1, 3, 7, None])
def test_test_mode_yields_every_token_once_as_a_target_then_stops(tmp_path, num_steps):
    pattern, vocab_file, sentences = tagged_corpus(tmp_path, 25, n_shards=3, seed=2)
    vocab = Vocabulary(vocab_file)
    # Reference for one row, computed independently of the packing loop.
    expected_targets = np.concatenate([vocab.encode(s, split=False)[1:] for s in sentences])
    total = len(expected_targets)
    assert total == sum(len(s) + 1 for s in sentences)
    num_steps = num_steps or total
    data = LMDataset(pattern, vocab, test=True)
    batches = finite(data.iter_batches(batch_size=1, num_steps=num_steps))  # a RuntimeError would fail here
    n_kept = (total // num_steps) * num_steps  # only full windows are yielded
    got = np.concatenate([b["next_token_id"][0] for b in batches]) if batches else np.zeros(0, np.int32)
    np.testing.assert_array_equal(got, expected_targets[:n_kept])
    # A second pass reads the corpus again, from the start.
    again = finite(data.iter_batches(batch_size=1, num_steps=num_steps))
    got_again = np.concatenate([b["next_token_id"][0] for b in again]) if again else np.zeros(0, np.int32)
    np.testing.assert_array_equal(got_again, expected_targets[:n_kept])


def test_train_mode_cycles_through_shards_forever(tmp_path, caplog):
    pattern = write_shards(tmp_path, [["the cat"], ["a dog", "sat"], ["ran fast"]])
    vocab = Vocabulary(write_vocab(tmp_path))
    random.seed(5)
    caplog.set_level(logging.DEBUG, logger="bilm.training.dataset")
    data = LMDataset(pattern, vocab)
    # The corpus has 4 sentences = 13 targets; take 20 times as many.
    batches = list(itertools.islice(data.iter_batches(batch_size=2, num_steps=13), 10))
    assert len(batches) == 10
    targets = np.concatenate([b["next_token_id"].ravel() for b in batches])
    for word in ("cat", "dog", "sat", "fast"):
        assert (targets == vocab.word_to_id(word)).sum() >= 15
    loads = [r.getMessage().split()[-1] for r in caplog.records if r.getMessage().startswith("Loading shard")]
    shards = sorted(str(p) for p in Path(pattern).parent.glob("shard*.txt"))
    assert len(loads) >= 3 * 15
    passes = [tuple(loads[i : i + 3]) for i in range(0, len(loads) - 2, 3)]
    assert all(sorted(p) == shards for p in passes)  # each pass reads every shard once
    assert len(set(passes)) > 1  # in a new random order


# --- characters and unknown words ----------------------------------------------------

def test_char_inputs_are_the_vocabulary_char_ids_without_shift(tmp_path):
    pattern, vocab_file, _ = tagged_corpus(tmp_path, 20, seed=4)
    vocab = UnicodeCharsVocabulary(vocab_file, max_word_length=6)
    data = BidirectionalLMDataset(pattern, vocab, test=True)
    batches = finite(data.iter_batches(batch_size=2, num_steps=4))
    assert batches
    for batch in batches:
        for suffix in ("", "_reverse"):
            chars, ids = batch["tokens_characters" + suffix], batch["token_ids" + suffix]
            assert chars.dtype == np.int32 and chars.shape == (2, 4, 6)
            expected = np.array([[token_chars(vocab.id_to_word(int(i)), 6) for i in row] for row in ids])
            np.testing.assert_array_equal(chars, expected)
            assert chars.min() >= 0 and chars.max() <= 260
            assert (chars[:, :, 0] == 258).all()  # begin-of-word, not 259
    # Sentence boundaries: <S> chars forward, </S> chars first in reverse.
    np.testing.assert_array_equal(batches[0]["tokens_characters"][0, 0], [258, 256, 259, 260, 260, 260])
    np.testing.assert_array_equal(batches[0]["tokens_characters_reverse"][0, 0], [258, 257, 259, 260, 260, 260])


def test_unknown_words_are_unk_ids_but_keep_their_characters(tmp_path):
    pattern = write_shards(tmp_path, [["the zebra sat"]])
    vocab = UnicodeCharsVocabulary(write_vocab(tmp_path), max_word_length=8)
    data = LMDataset(pattern, vocab)
    assert data.max_word_length == 8 and data.vocab is vocab
    batch = next(data.iter_batches(batch_size=1, num_steps=4))
    np.testing.assert_array_equal(batch["token_ids"], [[BOS, 3, UNK, 5]])
    np.testing.assert_array_equal(batch["next_token_id"], [[3, UNK, 5, EOS]])
    zebra = [258] + list(b"zebra") + [259, 260]
    np.testing.assert_array_equal(batch["tokens_characters"][0, 2], zebra)
    assert not np.array_equal(batch["tokens_characters"][0, 2], vocab.word_to_char_ids("<UNK>"))


def test_get_sentence_yields_ids_and_char_ids(tmp_path):
    pattern = write_shards(tmp_path, [["the cat", "", "   ", "a dog"]])
    vocab = UnicodeCharsVocabulary(write_vocab(tmp_path), max_word_length=5)
    forward = finite(LMDataset(pattern, vocab, test=True).get_sentence())
    reverse = finite(LMDataset(pattern, vocab, reverse=True, test=True).get_sentence())
    assert [ids.tolist() for ids, _ in forward] == [[0, 3, 4, 1], [0, 6, 7, 1]]  # blank lines skipped
    assert [ids.tolist() for ids, _ in reverse] == [[1, 4, 3, 0], [1, 7, 6, 0]]
    np.testing.assert_array_equal(forward[0][1], sentence_chars(["the", "cat"], 5))
    np.testing.assert_array_equal(reverse[0][1], sentence_chars(["the", "cat"], 5, reverse=True))
    token_only = finite(LMDataset(pattern, Vocabulary(write_vocab(tmp_path)), test=True).get_sentence())
    assert all(chars is None for _, chars in token_only)
    assert LMDataset(pattern, Vocabulary(write_vocab(tmp_path))).max_word_length is None


# --- errors ---------------------------------------------------------------------------

def test_error_when_the_glob_matches_no_file(tmp_path):
    pattern = str(tmp_path / "nothing" / "*.txt")
    with pytest.raises(InputError, match=re.escape(pattern)) as info:
        LMDataset(pattern, Vocabulary(write_vocab(tmp_path)))
    assert "\n" not in str(info.value)
    with pytest.raises(BilmError):
        BidirectionalLMDataset(pattern, Vocabulary(write_vocab(tmp_path)))


def test_error_when_all_shards_are_blank(tmp_path):
    pattern = write_shards(tmp_path, [["", "   ", "\t"], []])
    with pytest.raises(InputError, match="contains no sentences") as info:
        LMDataset(pattern, Vocabulary(write_vocab(tmp_path)))  # at construction, not in the training loop
    assert pattern in str(info.value)
    assert isinstance(info.value, ValueError)


def test_blank_lines_are_skipped_in_packing(tmp_path):
    vocab = Vocabulary(write_vocab(tmp_path))
    clean = write_shards(tmp_path, [["the cat sat", "a dog ran fast"] * 3], name="clean")
    blank = write_shards(tmp_path, [["", "the cat sat", " \t ", "a dog ran fast"] * 3 + [""]], name="blank")
    a = finite(LMDataset(clean, vocab, test=True).iter_batches(2, 3))
    b = finite(LMDataset(blank, vocab, test=True).iter_batches(2, 3))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["token_ids"], y["token_ids"])
        np.testing.assert_array_equal(x["next_token_id"], y["next_token_id"])


def test_error_on_invalid_utf8_names_file_and_line(tmp_path):
    directory = tmp_path / "corpus"
    directory.mkdir()
    (directory / "bad.txt").write_bytes(b"the cat\n\xff\xfe sat\n")
    data = LMDataset(str(directory / "*.txt"), Vocabulary(write_vocab(tmp_path)), test=True)
    with pytest.raises(InputError, match=r"bad\.txt, line 2: not valid UTF-8"):
        finite(data.get_sentence())


def test_error_on_bad_batch_shape_and_vocabulary(tmp_path):
    pattern = write_shards(tmp_path, [["the cat"]])
    data = LMDataset(pattern, Vocabulary(write_vocab(tmp_path)))
    for batch_size, num_steps in [(0, 3), (2, 0), (2, 1.5)]:
        with pytest.raises(InputError):
            next(data.iter_batches(batch_size, num_steps))
    no_unk = write_vocab(tmp_path, ["<S>", "</S>", "the", "cat"])
    with pytest.raises(VocabularyError, match="<UNK>"):
        LMDataset(pattern, Vocabulary(no_unk))


# --- memory: one shard at a time, lazy character ids, streaming --------------------

def test_only_one_shard_is_open_at_a_time(tmp_path, monkeypatch):
    pattern, vocab_file, _ = tagged_corpus(tmp_path, 40, n_shards=4, seed=6)
    vocab = UnicodeCharsVocabulary(vocab_file, max_word_length=6)
    opened = []

    def tracking_open(*args, **kwargs):
        assert all(f.closed for f in opened), "a shard was opened while another was still open"
        f = open(*args, **kwargs)
        opened.append(f)
        return f

    monkeypatch.setattr(text_module, "open", tracking_open, raising=False)  # shards are read there
    for shuffle_on_load in (False, True):
        random.seed(0)
        opened.clear()
        data = LMDataset(pattern, vocab, shuffle_on_load=shuffle_on_load)
        batches = data.iter_batches(batch_size=3, num_steps=10)
        for _ in range(30):  # several passes over the 4 shards
            next(batches)
        assert len(opened) > 8
        batches.close()
        assert all(f.closed for f in opened)


def test_shards_are_streamed_and_char_ids_computed_per_sentence(tmp_path, monkeypatch):
    lines = [f"the cat sat {i % 7} a dog ran fast" for i in range(5000)]
    pattern = write_shards(tmp_path, [lines])
    size = Path(pattern).parent.joinpath("shard00.txt").stat().st_size
    vocab = UnicodeCharsVocabulary(write_vocab(tmp_path), max_word_length=6)
    calls = {"encode_chars": 0}
    encode_chars = vocab.encode_chars

    def counting_encode_chars(*args, **kwargs):
        calls["encode_chars"] += 1
        return encode_chars(*args, **kwargs)

    vocab.encode_chars = counting_encode_chars
    opened = []

    def tracking_open(*args, **kwargs):
        opened.append(open(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(text_module, "open", tracking_open, raising=False)  # shards are read there

    data = LMDataset(pattern, vocab, test=True)
    sentences = data.get_sentence()
    next(sentences)
    shard = opened[-1]
    assert not shard.closed and shard.tell() < size / 2  # streamed, not read whole
    assert calls["encode_chars"] == 1
    sentences.close()
    assert shard.closed

    calls["encode_chars"] = 0
    data = LMDataset(pattern, vocab, test=True, shuffle_on_load=True)
    batches = data.iter_batches(batch_size=2, num_steps=5)
    next(batches)
    assert opened[-1].closed  # read whole to shuffle it
    assert calls["encode_chars"] == 2  # one sentence per row, not the whole shard
    batches.close()


def test_shuffle_on_load_permutes_sentences_within_a_shard(tmp_path):
    pattern, vocab_file, _ = tagged_corpus(tmp_path, 30, seed=7)
    vocab = Vocabulary(vocab_file)

    def order(seed, shuffle_on_load):
        random.seed(seed)
        data = LMDataset(pattern, vocab, test=True, shuffle_on_load=shuffle_on_load)
        return [int(vocab.id_to_word(int(ids[1]))[1:]) for ids, _ in finite(data.get_sentence())]

    assert order(0, False) == list(range(30))
    first = order(0, True)
    assert sorted(first) == list(range(30)) and first != list(range(30))
    assert order(0, True) == first  # seeded through the random module
    assert order(1, True) != first


# --- a whole corpus ---------------------------------------------------------------

def test_corpus_packs_every_token(tmp_path):
    vocab = UnicodeCharsVocabulary(write_corpus_vocab(tmp_path / "vocab.txt", min_count=2), max_word_length=50)
    with open(TINY_CORPUS, encoding="utf-8") as fin:
        sentences = [line.split() for line in fin if line.strip()]
    data = BidirectionalLMDataset(str(TINY_CORPUS), vocab, test=True)
    batches = finite(data.iter_batches(batch_size=1, num_steps=1))
    assert len(batches) == sum(len(s) + 1 for s in sentences)
    for suffix, reverse in (("", False), ("_reverse", True)):
        encoded = [s[::-1] if reverse else s for s in sentences]
        ids = [vocab.encode(s, reverse=reverse, split=False) for s in encoded]
        chars = [sentence_chars(s, 50, reverse=reverse) for s in sentences]
        np.testing.assert_array_equal(
            np.concatenate([b["token_ids" + suffix][0] for b in batches]), np.concatenate([i[:-1] for i in ids]))
        np.testing.assert_array_equal(
            np.concatenate([b["next_token_id" + suffix][0] for b in batches]), np.concatenate([i[1:] for i in ids]))
        np.testing.assert_array_equal(
            np.concatenate([b["tokens_characters" + suffix][0] for b in batches]),
            np.concatenate([c[:-1] for c in chars]))
    # Words missing from the vocabulary are <UNK> targets.
    assert (np.concatenate([b["next_token_id"][0] for b in batches]) == vocab.unk).any()
