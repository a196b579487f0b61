"""The NumPy oracle (tests/numpy_bilm.py) reproduces the original bilm-tf outputs.

The reference files come from allenai/bilm-tf's test fixtures and live outside
the repository, in ``../shared/reference/bilm-tf``; every test that needs them
is skipped when they are absent.
"""

import json

import numpy as np
import pytest

import numpy_bilm
from conftest import REFERENCE_MODEL as MODEL
from conftest import needs_reference, reference_sentences
from conftest import reference_top_layer as expected_top_layer
from numpy_bilm import NumpyBiLM, char_ids_for_sentences, load_weight_file, token_ids_for_sentences


@pytest.fixture(scope="module")
def options():
    with open(MODEL / "options.json") as fin:
        return json.load(fin)


@pytest.fixture(scope="module")
def weights():
    return load_weight_file(MODEL / "lm_weights.hdf5")


@pytest.fixture(scope="module")
def batches():
    """The 10 reference batches of 3 tokenised sentences."""
    return reference_sentences()


# --------------------------------------------------------------------------
# Character ids (no reference data needed)
# --------------------------------------------------------------------------

def test_char_ids_multibyte_and_truncation():
    long_token = "é" * 30  # 60 UTF-8 bytes
    ids = char_ids_for_sentences([["é", "ab"], [long_token]], max_chars=50)
    assert ids.dtype == np.int32 and ids.shape == (2, 4, 50)

    def padded(prefix):
        return [x + 1 for x in prefix + [260] * (50 - len(prefix))]

    begin, end = padded([258, 256, 259]), padded([258, 257, 259])
    # Sentence 0: <S> é ab </S>
    assert ids[0, 0].tolist() == begin
    assert ids[0, 1].tolist() == padded([258, 195, 169, 259])
    assert ids[0, 2].tolist() == padded([258, 97, 98, 259])
    assert ids[0, 3].tolist() == end
    # Sentence 1: <S> long </S> <padding>; 60 bytes cut to 48 = 24 x (195, 169).
    assert ids[1, 0].tolist() == begin
    assert ids[1, 1].tolist() == [259] + [196, 170] * 24 + [260]
    assert ids[1, 2].tolist() == end
    assert (ids[1, 3] == 0).all()


def test_token_ids():
    vocab = ["<S>", "</S>", "<UNK>", "the", "cat"]
    ids = token_ids_for_sentences([["the", "cat"], ["dog"]], vocab)
    assert ids.dtype == np.int32
    assert ids.tolist() == [[1, 4, 5, 2], [1, 3, 2, 0]]


# --------------------------------------------------------------------------
# Against the original's outputs
# --------------------------------------------------------------------------

@needs_reference
def test_reference_lm_embeddings(options, weights, batches):
    """10 consecutive batches of 3 on one model, states carried."""
    model = NumpyBiLM(options, weights, max_batch_size=4)
    max_diff = 0.0
    for i, sentences in enumerate(batches):
        out = model(char_ids_for_sentences(sentences))
        n_layers, P = options["lstm"]["n_layers"], options["lstm"]["projection_dim"]
        T = max(len(s) for s in sentences)
        assert out["lm_embeddings"].shape == (3, n_layers + 1, T, 2 * P)
        assert out["token_embeddings"].shape == (3, T + 2, P)
        assert out["mask"].shape == (3, T) and out["mask"].dtype == bool
        for k in range(3):
            expected = expected_top_layer(k, i)
            n = out["lengths"][k]
            assert n == expected.shape[0] == len(sentences[k])
            assert out["mask"][k].tolist() == [t < n for t in range(T)]
            got = out["lm_embeddings"][k, -1, :n, :]
            max_diff = max(max_diff, float(np.abs(got - expected).max()))
            assert np.allclose(got, expected, atol=1e-6), (i, k)
            # LSTM layers are zero past the length; layer 0 is [e, e].
            assert (out["lm_embeddings"][k, 1:, n:] == 0).all()
            e = out["token_embeddings"][k, 1 : n + 1]
            assert np.array_equal(out["lm_embeddings"][k, 0, :n], np.concatenate([e, e], -1))
    print(f"\nmax |numpy - bilm-tf| over 10 batches: {max_diff:.3g}")


@needs_reference
def test_reference_depends_on_carried_state(options, weights, batches):
    """Batch 1 run from zero states does not match: the reference is stateful."""
    fresh = NumpyBiLM(options, weights, max_batch_size=4)
    out = fresh(char_ids_for_sentences(batches[1]))
    n = out["lengths"][0]
    assert not np.allclose(out["lm_embeddings"][0, -1, :n], expected_top_layer(0, 1), atol=1e-6)


@needs_reference
def test_smaller_batch_updates_only_its_rows(options, weights, batches):
    model = NumpyBiLM(options, weights, max_batch_size=4)
    for sentences in batches[:2]:
        model(char_ids_for_sentences(sentences))
    before = {d: [[s.copy() for s in layer] for layer in model.states[d]]
              for d in numpy_bilm.DIRECTIONS}
    model(char_ids_for_sentences(batches[2][:2]))
    for d in numpy_bilm.DIRECTIONS:
        for layer in range(options["lstm"]["n_layers"]):
            for old, new in zip(before[d][layer], model.states[d][layer]):
                assert np.array_equal(new[2:], old[2:])  # rows 2, 3 untouched
                assert not np.allclose(new[0], old[0])
                assert not np.allclose(new[1], old[1])

    model.reset_states()
    assert all((s == 0).all() for d in numpy_bilm.DIRECTIONS
               for layer in model.states[d] for s in layer)


@needs_reference
def test_token_input_matches_char_input(options, weights, batches):
    """A token model whose table is the char-CNN output gives the same layers."""
    char_model = NumpyBiLM(options, weights, max_batch_size=4)
    sentences = batches[0]
    vocab = ["<S>", "</S>", "<UNK>"] + sorted({w for s in sentences for w in s})
    # Char ids of each vocabulary word, boundary tokens for <S> and </S>.
    word_chars = char_ids_for_sentences([[w] for w in vocab[3:]])[:, 1]
    special = char_ids_for_sentences([[]])[0]  # [<S>, </S>]
    unk = char_ids_for_sentences([["<UNK>"]])[0, 1]
    vocab_chars = np.concatenate([special, unk[None], word_chars])[None]
    table = char_model.token_embeddings(vocab_chars)[0]  # (n_vocab, P)

    token_model = NumpyBiLM(options, weights, max_batch_size=4, token_embedding=table)
    got = token_model(token_ids_for_sentences(sentences, vocab))
    want = char_model(char_ids_for_sentences(sentences))
    assert np.array_equal(got["lengths"], want["lengths"])
    assert np.array_equal(got["mask"], want["mask"])
    for k, n in enumerate(want["lengths"]):
        assert np.allclose(got["lm_embeddings"][k, :, :n], want["lm_embeddings"][k, :, :n],
                           atol=1e-6)
