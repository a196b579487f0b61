"""Inference's packed LSTM matrices (bilm.core.network.packs): where they are used, and the same numbers."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm.core import inference, network, sessions
from bilm.core.batching import Batcher
from bilm.embedding.embedder import ElmoEmbedder
from conftest import make_options, random_sentences, write_model

needs_packing = pytest.mark.skipif(not network.packs(tf.bfloat16),
                                   reason="TensorFlow packs no bfloat16 products here (no oneDNN, or a GPU)")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    options = make_options(dim=40, projection_dim=16, n_layers=3, skip=True)
    options_file, weight_file = write_model(tmp_path_factory.mktemp("model"), options, seed=5)
    return options_file, weight_file, random_sentences(np.random.default_rng(3), 50, max_len=14)


@pytest.fixture
def fresh_packs():
    network.packs.cache_clear()
    yield network.packs
    network.packs.cache_clear()


def test_only_bfloat16_is_packed_and_only_by_onednn_on_the_cpu(fresh_packs, monkeypatch):
    from tensorflow.python.util import _pywrap_util_port

    assert not fresh_packs(tf.float32) and not fresh_packs(tf.float16)
    if not _pywrap_util_port.IsMklEnabled() or tf.config.list_physical_devices("GPU"):
        pytest.skip("TensorFlow's oneDNN is off here (TF_ENABLE_ONEDNN_OPTS=0, or not an x86 build), or a GPU is "
                    "visible")
    assert fresh_packs(tf.bfloat16)  # an x86 build with oneDNN on has the packing product for bfloat16
    fresh_packs.cache_clear()
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["a GPU"] if kind == "GPU" else [])
    assert not fresh_packs(tf.bfloat16)  # its kernels are the CPU's
    fresh_packs.cache_clear()
    monkeypatch.undo()
    monkeypatch.setattr(_pywrap_util_port, "IsMklEnabled", lambda: False)
    assert not fresh_packs(tf.bfloat16)


def _embed(model, pack, monkeypatch, **kwargs):
    """The layers of the model's sentences, and the packed products of the embedder's graph."""
    options_file, weight_file, sentences = model
    monkeypatch.setattr(inference, "PACK_LSTM_WEIGHTS", pack)
    with ElmoEmbedder(options_file, weight_file, precision="bfloat16", **kwargs) as embedder:
        layers = embedder.embed_sentences(sentences)
        graph_def = embedder._graph.as_graph_def()
    packed = [(function.signature.name, node) for function in graph_def.library.function
              for node in function.node_def if node.op == "_MklNativeFusedMatMul"]
    return layers, packed, graph_def


@needs_packing
@pytest.mark.parametrize("state_mode, batch_size", [("warm", 7), ("stateful", 1)])
def test_packed_matrices_give_the_same_numbers(model, monkeypatch, state_mode, batch_size):
    plain, none, _ = _embed(model, False, monkeypatch, state_mode=state_mode, batch_size=batch_size)
    packed, products, graph_def = _embed(model, True, monkeypatch, state_mode=state_mode, batch_size=batch_size)
    assert none == []
    # per layer and direction: its input product, recurrent product and projection, each its own
    assert len(products) == 3 * 3 * 2 and all(node.attr["is_filter_const"].b for _, node in products)
    # in functions of its own: each layer and direction calls its own copy of the loop's functions
    called = {function.signature.name: {value.func.name for node in function.node_def
                                        for value in node.attr.values() if value.func.name}
              for function in graph_def.library.function}

    def reached(name):
        return {name}.union(*(reached(callee) for callee in called[name]))

    calls = [node.attr["f"].func.name for node in graph_def.node if node.op.endswith("PartitionedCall")]
    owners = [function for function, _ in products]
    per_call = [reached(call) for call in calls if reached(call) & set(owners)]
    assert sorted(sum(owners.count(f) for f in functions) for functions in per_call) == [3] * 3 * 2
    assert len(set.union(*per_call)) == sum(map(len, per_call))  # no function shared between calls
    # batches of 7 in length order: steps of 7 rows down to 1, and the last batch of 1 (50 = 7 x 7 + 1)
    # (the same bits on the CPUs measured; other CPUs may pick other kernels: bfloat16's rounding then)
    worst = max(np.abs(a - b).max() / np.abs(a).max() for a, b in zip(plain, packed))
    assert worst <= 1e-2, worst


@needs_packing
def test_a_model_called_twice_packs_its_matrices_once(model, monkeypatch):
    # Two placeholders (a question and its context) read the same weights: one packed copy of each matrix.
    options_file, weight_file, sentences = model
    monkeypatch.setattr(inference, "PACK_LSTM_WEIGHTS", True)
    ids = Batcher(None, 50).batch_sentences(sentences[:5])
    with tf.Graph().as_default() as graph:
        bilm = inference.BidirectionalLanguageModel(options_file, weight_file, state_mode="zero", precision="bfloat16")
        placeholders = [tf.placeholder(tf.int32, (None, None, 50)) for _ in range(2)]
        outputs = [bilm(placeholder)["lm_embeddings"] for placeholder in placeholders]
        graph_def = graph.as_graph_def()
        with tf.Session(config=sessions.without_graph_rewrites(sessions.config(branches=2))) as sess:
            sess.run(tf.global_variables_initializer())
            first, second = sess.run(outputs, dict.fromkeys(placeholders, ids))
    np.testing.assert_array_equal(first, second)
    products = [node for function in graph_def.library.function for node in function.node_def
                if node.op == "_MklNativeFusedMatMul"]
    calls = [node for node in graph_def.node if node.op.endswith("PartitionedCall")]
    assert len(products) == 3 * 3 * 2 and len(calls) == 2 * 3 * 2


def test_a_session_without_graph_rewrites_keeps_the_other_settings():
    config = sessions.config(threads=3, branches=2)
    plain = sessions.without_graph_rewrites(config)
    assert plain.graph_options.rewrite_options.disable_meta_optimizer
    assert not config.graph_options.rewrite_options.disable_meta_optimizer  # a copy: the caller's is unchanged
    assert plain.intra_op_parallelism_threads == 3 and plain.allow_soft_placement
