"""Deterministic state modes (zero, warm), batched dumps, sharding: checked against the NumPy oracle."""
import h5py
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm import BidirectionalLanguageModel
from bilm.errors import InputError
from bilm.core.states import WARMUP_TEXT
from bilm.precompute import ElmoEmbedder, dump_bilm_embeddings, merge_shards
from conftest import make_options, random_sentences, write_model
from numpy_bilm import NumpyBiLM, char_ids_for_sentences, load_weight_file


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    options = make_options(skip=True)
    options_file, weight_file = write_model(tmp_path_factory.mktemp("model"), options, seed=3)
    return options, options_file, weight_file


def oracle_from(options, weight_file, states=None):
    """NumPy model whose every row starts from ``states`` ([direction][layer] (c, h)) or zeros."""
    oracle = NumpyBiLM(options, load_weight_file(weight_file), max_batch_size=1)
    if states is not None:
        for d, direction in enumerate(("forward", "backward")):
            for layer, (c, h) in enumerate(states[d]):
                oracle.states[direction][layer] = [c[None].copy(), h[None].copy()]
    return oracle


def warm_states_by_oracle(options, weight_file):
    oracle = oracle_from(options, weight_file)
    for line in WARMUP_TEXT.read_text(encoding="utf-8").splitlines():
        oracle(char_ids_for_sentences([line.split()]))
    return [[(c[0], h[0]) for c, h in (oracle.states[d][layer] for layer in range(2))]
            for d in ("forward", "backward")]


@pytest.mark.parametrize("mode", ["zero", "warm"])
def test_each_sentence_equals_oracle_from_the_fixed_state(model, mode):
    options, options_file, weight_file = model
    states = warm_states_by_oracle(options, weight_file) if mode == "warm" else None
    sentences = random_sentences(np.random.default_rng(1), 9)
    with ElmoEmbedder(options_file, weight_file, state_mode=mode, batch_size=4) as embedder:
        got = embedder.embed_sentences(sentences)
    for sentence, array in zip(sentences, got):
        expected = oracle_from(options, weight_file, states)(char_ids_for_sentences([sentence]))["lm_embeddings"][0]
        assert array.shape == (3, len(sentence), 16)
        np.testing.assert_allclose(array, expected, atol=2e-5)


def test_warm_states_are_those_after_the_warmup_text(model):
    options, options_file, weight_file = model
    expected = warm_states_by_oracle(options, weight_file)
    with tf.Graph().as_default():
        ids = tf.placeholder(tf.int32, (None, None, 50))
        model = BidirectionalLanguageModel(options_file, weight_file, state_mode="warm")
        model(ids)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())  # computes the warm states, once the weights are read
            got = sess.run(model.state_variables(ids))
    for d in range(2):
        for layer in range(2):
            for g, e in zip(got[d][layer], expected[d][layer]):
                np.testing.assert_allclose(g[0], e, atol=2e-5)
                assert np.abs(e).max() > 0.01  # not zeros


@pytest.mark.parametrize("mode", ["zero", "warm"])
def test_vectors_do_not_depend_on_batch_position_or_size(model, mode):
    options, options_file, weight_file = model
    rng = np.random.default_rng(5)
    target = ["the", "naïve", "cat", "sat", "."]
    with tf.Graph().as_default():
        ids = tf.placeholder(tf.int32, (None, None, 50))
        ops = BidirectionalLanguageModel(options_file, weight_file, max_batch_size=2, state_mode=mode)(ids)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            alone = sess.run(ops["lm_embeddings"], {ids: char_ids_for_sentences([target])})[0]
            for batch_size in (2, 5, 9):  # larger than max_batch_size: no limit without carried states
                for position in (0, batch_size - 1):
                    batch = random_sentences(rng, batch_size, max_len=12)
                    batch[position] = target
                    out = sess.run(ops["lm_embeddings"], {ids: char_ids_for_sentences(batch)})
                    np.testing.assert_allclose(out[position, :, :5], alone, atol=1e-6)
            again = sess.run(ops["lm_embeddings"], {ids: char_ids_for_sentences([target])})[0]
    np.testing.assert_allclose(again, alone, atol=1e-6)


def test_unknown_state_mode_and_state_variables_without_states(model):
    _, options_file, weight_file = model
    with pytest.raises(InputError, match="state_mode"):
        BidirectionalLanguageModel(options_file, weight_file, state_mode="hot")
    with tf.Graph().as_default():
        m = BidirectionalLanguageModel(options_file, weight_file, state_mode="zero")
        ids = tf.placeholder(tf.int32, (None, None, 50))
        m(ids)
        with pytest.raises(InputError, match="keeps no state variables"):
            m.state_variables(ids)


def _write_dataset(path, sentences):
    path.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")


def test_batched_dump_shards_and_merge(model, tmp_path):
    options, options_file, weight_file = model
    sentences = random_sentences(np.random.default_rng(2), 23)
    sentences[4] = []  # an empty line: a dataset with no tokens
    dataset = tmp_path / "data.txt"
    _write_dataset(dataset, sentences)
    with ElmoEmbedder(options_file, weight_file, state_mode="zero", batch_size=1) as embedder:
        one_by_one = embedder.embed_sentences(sentences)
    whole = tmp_path / "whole.hdf5"
    dump_bilm_embeddings(None, str(dataset), options_file, weight_file, str(whole), state_mode="zero", batch_size=5,
                         empty_lines="keep")
    shards = [tmp_path / f"shard{k}.hdf5" for k in range(3)]
    for k, shard in enumerate(shards):
        dump_bilm_embeddings(None, str(dataset), options_file, weight_file, str(shard), state_mode="zero",
                             batch_size=4, shard=(k, 3), empty_lines="keep")
    merged = tmp_path / "merged.hdf5"
    merge_shards([str(s) for s in shards], str(merged))
    with h5py.File(whole, "r") as w, h5py.File(merged, "r") as m, h5py.File(shards[1], "r") as s1:
        assert sorted(w, key=int) == sorted(m, key=int) == [str(i) for i in range(23)]
        assert sorted(s1, key=int) == [str(i) for i in range(1, 23, 3)]
        for i, expected in enumerate(one_by_one):
            assert w[str(i)].shape == (3, len(sentences[i]), 16)
            np.testing.assert_allclose(w[str(i)][...], expected, atol=1e-6)
            np.testing.assert_allclose(m[str(i)][...], expected, atol=1e-6)  # each shard's lines, through links
    assert merged.stat().st_size < 100_000  # links, not a copy


def test_an_empty_input_or_shard_gives_an_empty_file(model, tmp_path):
    _, options_file, weight_file = model
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "two.txt").write_text("one line\nanother line\n")
    dump_bilm_embeddings(None, str(tmp_path / "empty.txt"), options_file, weight_file, str(tmp_path / "a.hdf5"))
    dump_bilm_embeddings(None, str(tmp_path / "two.txt"), options_file, weight_file, str(tmp_path / "b.hdf5"),
                         shard=(2, 3))
    for name in ("a.hdf5", "b.hdf5"):
        with h5py.File(tmp_path / name, "r") as fin:
            assert list(fin) == []
        assert not (tmp_path / (name + ".parts")).exists()
