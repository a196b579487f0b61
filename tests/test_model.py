"""The TensorFlow inference graph against the original's outputs and the NumPy oracle."""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm import Batcher, BidirectionalLanguageModel, TokenBatcher, dump_bilm_embeddings, dump_token_embeddings
from bilm.errors import InputError
from bilm.core.weights import expected_weight_shapes
from conftest import (REFERENCE_MODEL, make_options, needs_reference, random_sentences, reference_sentences,
                      reference_top_layer, write_model)
from numpy_bilm import NumpyBiLM, char_ids_for_sentences, load_weight_file

OPTIONS = str(REFERENCE_MODEL / "options.json")
WEIGHTS = str(REFERENCE_MODEL / "lm_weights.hdf5")
VOCAB = str(REFERENCE_MODEL / "vocab_test.txt")


class Graph:
    """A model called on one char-id placeholder, in its own graph and session."""

    def __init__(self, options_file, weight_file, max_batch_size=128, max_chars=50, **kwargs):
        self.graph = tf.Graph()
        with self.graph.as_default():
            shape = (None, None, max_chars) if kwargs.get("use_character_inputs", True) else (None, None)
            self.ids = tf.placeholder(tf.int32, shape)
            self.model = BidirectionalLanguageModel(options_file, weight_file, max_batch_size=max_batch_size,
                                                    **kwargs)
            self.ops = self.model(self.ids)
            self.sess = tf.Session()
            self.sess.run(tf.global_variables_initializer())

    def run(self, ids, *names):
        return self.sess.run([self.ops[name] for name in names], {self.ids: ids})

    def states(self):
        return self.sess.run(self.model.state_variables(self.ids))


@needs_reference
def test_weight_layout_of_reference_file():
    """expected_weight_shapes describes the original's file exactly."""
    from bilm.core.options import load_options
    with h5py.File(WEIGHTS, "r") as fin:
        found = {}
        fin.visititems(lambda name, obj: found.update({name: obj.shape}) if isinstance(obj, h5py.Dataset) else None)
    assert found == expected_weight_shapes(load_options(OPTIONS))


@needs_reference
def test_conformance_with_original_stateful_batches():
    batcher = Batcher(VOCAB, 50)
    graph = Graph(OPTIONS, WEIGHTS, max_batch_size=4)
    max_diff = 0.0
    for i, batch in enumerate(reference_sentences()):
        lm_embeddings, lengths = graph.run(batcher.batch_sentences(batch), "lm_embeddings", "lengths")
        for k, sentence in enumerate(batch):
            expected = reference_top_layer(k, i)
            assert lengths[k] == len(sentence) == expected.shape[0]
            got = lm_embeddings[k, 2, : lengths[k]]
            max_diff = max(max_diff, float(np.abs(got - expected).max()))
            assert np.allclose(got, expected, atol=1e-6), f"batch {i} sentence {k}"
    print(f"max |bilm - original| over the 30 reference sentences: {max_diff:.3g}")

    # The original's own test reads the states through model._graphs[ids].lstm_init_states: same variables.
    with graph.graph.as_default():
        compat = graph.model._graphs[graph.ids].lstm_init_states
        for direction, name in enumerate(("forward", "backward")):
            for layer in range(2):
                for k, state in enumerate(graph.sess.run(compat[name][layer])):
                    assert np.abs(state[-1]).sum() < 1e-7  # batches of 3: the fourth row never ran
                    np.testing.assert_array_equal(state, graph.states()[direction][layer][k])

    # A batch of 2 reads and writes rows [:2] only: row 2 keeps its state.
    before = graph.states()
    graph.run(batcher.batch_sentences(reference_sentences()[0][:2]), "lm_embeddings")
    after = graph.states()
    for direction in range(2):
        for layer_before, layer_after in zip(before[direction], after[direction]):
            for state_before, state_after in zip(layer_before, layer_after):
                np.testing.assert_array_equal(state_before[2:], state_after[2:])
                assert not np.allclose(state_before[:2], state_after[:2])


def _onednn_here():
    """"1" or "0": whether this process's TensorFlow runs oneDNN's kernels (None if it cannot tell)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        return "1" if _pywrap_util_port.IsMklEnabled() else "0"
    except (ImportError, AttributeError):
        return None


@needs_reference
@pytest.mark.parametrize("onednn", ["0", "1"])
def test_conformance_with_and_without_onednn(onednn):
    """The bilm command turns oneDNN on where TensorFlow leaves it off: the original's numbers either way.
    The setting of this process is checked here; the other one in a process of its own."""
    if onednn == _onednn_here():
        test_conformance_with_original_stateful_batches()
        return
    test = f"{__file__}::test_conformance_with_original_stateful_batches"
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                             "-o", "addopts=", test], env=env, capture_output=True, text=True, timeout=600,
                            cwd=os.path.dirname(__file__))
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-2000:]


def test_embeddings_ops_are_cached_and_variables_shared(tmp_path):
    options_file, weight_file = write_model(tmp_path, make_options())
    with tf.Graph().as_default():
        model = BidirectionalLanguageModel(options_file, weight_file)
        first, second = tf.placeholder(tf.int32, (None, None, 50)), tf.placeholder(tf.int32, (None, None, 50))
        ops = model(first)
        n_weights = len([v for v in tf.global_variables() if "lstm_" not in v.name])
        assert model(first) is ops
        model(second)
        assert len([v for v in tf.global_variables() if "lstm_" not in v.name]) == n_weights
        assert tf.trainable_variables() == []



def test_every_lstm_layer_calls_one_looped_function(tmp_path, monkeypatch):
    # Both directions' layers, the warm-up (computed: no kept states) and a second placeholder call one graph
    # function holding the while loop, built once per graph, not one loop per layer.
    monkeypatch.setenv("BILM_NO_WARM_CACHE", "1")
    options_file, weight_file = write_model(tmp_path, make_options(n_layers=2))
    with tf.Graph().as_default() as graph:
        model = BidirectionalLanguageModel(options_file, weight_file, state_mode="warm")
        model(tf.placeholder(tf.int32, (None, None, 50)))
        model(tf.placeholder(tf.int32, (None, 7, 50)))
        graph_def = graph.as_graph_def()
    with_loop = [f.signature.name for f in graph_def.library.function
                 if any(node.op in ("While", "StatelessWhile") for node in f.node_def)]
    calls = [node for node in graph_def.node if node.op in ("PartitionedCall", "StatefulPartitionedCall")]
    loops_here = [node.name for node in graph_def.node if node.op in ("While", "StatelessWhile")]
    assert len(with_loop) == 1 and all("/map/" in name for name in loops_here)  # (the char CNN's chunks)
    assert sum(node.attr["f"].func.name == with_loop[0] for node in calls) == 3 * 2 * 2  # warm-up + 2 graphs

OPTION_CASES = {
    "default": {},
    "skip": {"skip": True, "n_layers": 3},
    "no_highway_tanh": {"n_highway": 0, "activation": "tanh"},
    "two_highway": {"n_highway": 2},
    "no_cnn_projection": {"filters": ((1, 4), (2, 4)), "projection_dim": 8},
    "no_lstm_projection": {"dim": 8, "projection_dim": 8, "skip": True},
    "no_clips": {"cell_clip": None, "proj_clip": None, "n_layers": 1},
    "tight_clips_tanh": {"cell_clip": 0.3, "proj_clip": 0.1, "activation": "tanh", "n_highway": 2},
    "three_layers_no_proj_cnn_skip": {"filters": ((1, 8),), "projection_dim": 8, "n_layers": 3, "skip": True},
    "short_tokens": {"max_chars": 7, "filters": ((1, 4), (3, 6))},
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_graph_matches_numpy_oracle(tmp_path, case):
    """Seeded random weights, several consecutive stateful batches of sizes 1..max_batch_size."""
    options = make_options(**OPTION_CASES[case])
    options_file, weight_file = write_model(tmp_path, options, seed=len(case), scale=1.0)
    max_batch_size = 5
    graph = Graph(options_file, weight_file, max_batch_size, max_chars=options["char_cnn"]["max_characters_per_token"])
    oracle = NumpyBiLM(options, load_weight_file(weight_file), max_batch_size)
    rng = np.random.default_rng(7)
    for batch_size in (1, 5, 3, 5, 2, 1):
        sentences = random_sentences(rng, batch_size)
        if batch_size == 3:
            sentences[1] = ["one"]  # a sentence of length 1 among longer ones
        ids = char_ids_for_sentences(sentences, options["char_cnn"]["max_characters_per_token"])
        expected = oracle(ids)
        got = dict(zip(("lm_embeddings", "lengths", "mask", "token_embeddings"),
                       graph.run(ids, "lm_embeddings", "lengths", "mask", "token_embeddings")))
        np.testing.assert_array_equal(got["lengths"], expected["lengths"])
        np.testing.assert_array_equal(got["mask"], expected["mask"])
        np.testing.assert_allclose(got["token_embeddings"], expected["token_embeddings"], atol=2e-5, rtol=1e-5)
        np.testing.assert_allclose(got["lm_embeddings"], expected["lm_embeddings"], atol=2e-5, rtol=1e-5)
    for direction, name in enumerate(("forward", "backward")):
        for layer, (c, h) in enumerate(graph.states()[direction]):
            np.testing.assert_allclose(c, oracle.states[name][layer][0], atol=2e-5)
            np.testing.assert_allclose(h, oracle.states[name][layer][1], atol=2e-5)


def test_batch_larger_than_max_batch_size_fails_clearly(tmp_path):
    options_file, weight_file = write_model(tmp_path, make_options())
    graph = Graph(options_file, weight_file, max_batch_size=2)
    ids = char_ids_for_sentences([["a"]] * 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_batch_size=2"):
        graph.run(ids, "lm_embeddings")


def test_placeholder_of_wrong_shape_is_refused(tmp_path):
    options_file, weight_file = write_model(tmp_path, make_options())
    with tf.Graph().as_default():
        model = BidirectionalLanguageModel(options_file, weight_file)
        with pytest.raises(InputError, match="max_characters_per_token is 50"):
            model(tf.placeholder(tf.int32, (None, None, 40)))
        with pytest.raises(InputError, match="expected"):
            model(tf.placeholder(tf.int32, (None, None)))


@needs_reference
def test_token_input_equals_char_input(tmp_path):
    vocab_file = tmp_path / "vocab.txt"  # every token of the sentences: in-vocabulary text
    tokens = sorted({token for batch in reference_sentences() for sentence in batch for token in sentence})
    vocab_file.write_text("\n".join(["<S>", "</S>"] + tokens) + "\n", encoding="utf-8")
    embedding_file = str(tmp_path / "embedding.hdf5")
    dump_token_embeddings(str(vocab_file), OPTIONS, WEIGHTS, embedding_file)
    char_graph = Graph(OPTIONS, WEIGHTS, max_batch_size=4)
    token_graph = Graph(OPTIONS, WEIGHTS, max_batch_size=4, use_character_inputs=False,
                        embedding_weight_file=embedding_file)
    char_batcher, token_batcher = Batcher(VOCAB, 50), TokenBatcher(str(vocab_file))
    for i, batch in enumerate(reference_sentences()):
        by_chars, lengths = char_graph.run(char_batcher.batch_sentences(batch), "lm_embeddings", "lengths")
        by_tokens, = token_graph.run(token_batcher.batch_sentences(batch), "lm_embeddings")
        for k in range(3):
            np.testing.assert_allclose(by_tokens[k, :, : lengths[k]], by_chars[k, :, : lengths[k]], atol=1e-6)
            assert np.allclose(by_tokens[k, 2, : lengths[k]], reference_top_layer(k, i), atol=1e-6)


def test_dump_token_embeddings_rows_are_char_cnn_of_each_token(tmp_path):
    options = make_options(n_highway=2)
    options_file, weight_file = write_model(tmp_path / "model", options, seed=5)
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join(["<S>", "</S>", "<UNK>", "the", "naïve", "日本語", "x" * 70]) + "\n", "utf-8")
    out = tmp_path / "embedding.hdf5"
    dump_token_embeddings(str(vocab_file), options_file, weight_file, str(out))
    oracle = NumpyBiLM(options, load_weight_file(weight_file))
    vocab = vocab_file.read_text("utf-8").split()
    with h5py.File(out, "r") as fin:
        assert list(fin) == ["embedding"]
        embedding = fin["embedding"][...]
    assert embedding.shape == (len(vocab), 8) and embedding.dtype == np.float32
    words = [w for w in vocab if w not in ("<S>", "</S>")]
    ids = char_ids_for_sentences([words])  # (1, n + 2, 50): <S> words </S>
    expected = oracle.token_embeddings(ids)[0]
    np.testing.assert_allclose(embedding[vocab.index("<S>")], expected[0], atol=1e-6)
    np.testing.assert_allclose(embedding[vocab.index("</S>")], expected[-1], atol=1e-6)
    np.testing.assert_allclose(embedding[[vocab.index(w) for w in words]], expected[1:-1], atol=1e-6)


def test_stateful_dump_equals_original_sentence_by_sentence(tmp_path):
    options = make_options(skip=True)
    options_file, weight_file = write_model(tmp_path / "model", options, seed=6)
    sentences = random_sentences(np.random.default_rng(3), 12) + [["Hello"]]
    dataset = tmp_path / "dataset.txt"
    dataset.write_text("\n".join(" ".join(s) for s in sentences) + "\n", encoding="utf-8")
    out = tmp_path / "out.hdf5"
    dump_bilm_embeddings(None, str(dataset), options_file, weight_file, str(out), state_mode="stateful")
    oracle = NumpyBiLM(options, load_weight_file(weight_file), max_batch_size=1)
    with h5py.File(out, "r") as fin:
        assert sorted(fin, key=int) == [str(i) for i in range(len(sentences))]
        for i, sentence in enumerate(sentences):
            expected = oracle(char_ids_for_sentences([sentence]))["lm_embeddings"][0]
            assert fin[str(i)].shape == (3, len(sentence), 16) and fin[str(i)].dtype == np.float32
            np.testing.assert_allclose(fin[str(i)][...], expected, atol=2e-5)


def test_reset_states_zeroes_the_carried_states(tmp_path):
    options_file, weight_file = write_model(tmp_path, make_options())
    graph = Graph(options_file, weight_file, max_batch_size=3)
    ids = char_ids_for_sentences([["the", "cat"], ["sat"]])
    first = graph.run(ids, "lm_embeddings")[0]
    assert any(np.abs(v).max() > 0 for d in graph.states() for layer in d for v in layer)
    assert not np.allclose(graph.run(ids, "lm_embeddings")[0], first, atol=1e-6)  # carried states changed it
    with graph.graph.as_default():
        graph.sess.run(graph.model.reset_states(graph.ids))
    assert all(not np.abs(v).any() for d in graph.states() for layer in d for v in layer)
    np.testing.assert_allclose(graph.run(ids, "lm_embeddings")[0], first, atol=1e-6)  # as from the start


def test_model_built_under_an_outer_variable_scope(tmp_path):
    options = make_options()
    options_file, weight_file = write_model(tmp_path, options, seed=4)
    ids = char_ids_for_sentences([["the", "naïve", "cat"]])
    expected = NumpyBiLM(options, load_weight_file(weight_file))(ids)["lm_embeddings"]
    with tf.Graph().as_default():
        placeholder = tf.placeholder(tf.int32, (None, None, 50))
        with tf.variable_scope("task/encoder"):
            ops = BidirectionalLanguageModel(options_file, weight_file, state_mode="zero")(placeholder)
        names = [v.op.name for v in tf.global_variables()]
        assert "task/encoder/bilm/CNN/W_cnn_0" in names and all(n.startswith("task/encoder/") for n in names)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            got = sess.run(ops["lm_embeddings"], {placeholder: ids})
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_graph_api_in_eager_mode_says_what_to_do(tmp_path):
    options_file, weight_file = write_model(tmp_path, make_options())
    model = BidirectionalLanguageModel(options_file, weight_file)
    assert tf.executing_eagerly()  # TF2's default outside a graph
    with pytest.raises(InputError, match=r"executing eagerly .*tf\.Graph\(\)\.as_default\(\).*bilm\.keras\.ELMo"):
        model(tf.constant(char_ids_for_sentences([["hello"]])))


@pytest.mark.parametrize("clips, projected", [((3.0, 3.0), True), ((0.05, 0.02), True), ((None, None), False)],
                         ids=["loose clips", "clips that bite", "no clips, no projection"])
def test_unrolled_training_lstm_has_the_gradients_of_the_loop(clips, projected):
    """Training windows run the unrolled LSTM (one product per weight gradient); inference runs the loop.
    Same outputs, and the same gradients as back-propagation through the loop."""
    from bilm.core import network
    from bilm.core.options import ModelOptions
    out_dim = 6 if projected else 12
    options = ModelOptions(make_options(dim=12, projection_dim=out_dim, cell_clip=clips[0], proj_clip=clips[1]))
    rng = np.random.default_rng(3)
    kernel = tf.constant(rng.standard_normal((out_dim * 2, 48)).astype(np.float32) * 0.5)
    bias = tf.constant(rng.standard_normal(48).astype(np.float32) * 0.1)
    projection = tf.constant(rng.standard_normal((12, 6)).astype(np.float32) * 0.5)
    with tf.Graph().as_default():
        kernel, bias, projection = (tf.Variable(v.numpy()) for v in (kernel, bias, projection))
        inputs = tf.constant(rng.standard_normal((3, 7, out_dim)).astype(np.float32))
        state = tuple(tf.constant(rng.standard_normal((3, n)).astype(np.float32) * 0.3) for n in (12, out_dim))
        weights = tf.constant(rng.standard_normal((3, 7, out_dim)).astype(np.float32))
        results = []
        for lengths in (None, tf.constant([7, 7, 7])):  # unrolled, then the loop
            outputs, (c, h) = network.lstm_layer(inputs, state, options, kernel, bias, projection if projected else None,
                                                 lengths)
            loss = tf.reduce_sum(outputs * weights) + tf.reduce_sum(c) + 2 * tf.reduce_sum(h)
            wrt = [kernel, bias] + ([projection] if projected else []) + [inputs, *state]
            results.append([outputs, c, h] + [tf.convert_to_tensor(g) for g in tf.gradients(loss, wrt)])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            unrolled, looped = sess.run(results)
    for got, expected in zip(unrolled, looped):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(looped[3]).max() > 0  # the kernel's gradient is not zero
