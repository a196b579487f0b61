"""The Keras 3 layer: eager, tf.function, model.fit, saving; the same numbers as the graph API."""
import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import bilm
from bilm import Batcher, BidirectionalLanguageModel
from bilm.keras import ELMo
from bilm.models import default_model_files
from conftest import make_options, random_sentences, write_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("model"), make_options(skip=True), seed=21)


def graph_outputs(options_file, weight_file, ids, state_mode):
    with tf.Graph().as_default():
        placeholder = tf.compat.v1.placeholder(tf.int32, (None, None, 50))
        ops = BidirectionalLanguageModel(options_file, weight_file, state_mode=state_mode)(placeholder)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return sess.run([ops["lm_embeddings"], ops["mask"]], {placeholder: ids})


def padded_tokens(sentences):
    width = max(len(s) for s in sentences)
    return tf.constant([s + [""] * (width - len(s)) for s in sentences])


@pytest.mark.parametrize("state_mode", ["warm", "zero"])
def test_outputs_equal_the_graph_api(model, state_mode):
    options_file, weight_file = model
    sentences = random_sentences(np.random.default_rng(2), 6, max_len=10)
    ids = Batcher(None, 50).batch_sentences(sentences)
    expected, mask = graph_outputs(options_file, weight_file, ids, state_mode)
    expected = expected * mask[:, None, :, None]  # the layer zeroes what lies past a sentence
    for inputs, given in (("char_ids", tf.constant(ids)), ("tokens", padded_tokens(sentences))):
        layer = ELMo(None, options_file, weight_file, inputs=inputs, output="all", state_mode=state_mode)
        np.testing.assert_allclose(layer(given).numpy(), expected, atol=1e-5, err_msg=inputs)
        np.testing.assert_array_equal(layer.compute_mask(given).numpy(), mask)
    layer = ELMo(None, options_file, weight_file, output="top", state_mode=state_mode)
    assert layer.built and len(layer.weights) > 2  # made eagerly, not inside the first trace
    compiled = tf.function(lambda x: layer(x))
    given = padded_tokens(sentences)
    first = compiled(given).numpy()  # the first call is a trace
    np.testing.assert_allclose(first, layer(given).numpy(), atol=1e-5)
    np.testing.assert_allclose(layer(given).numpy(), expected[:, -1], atol=1e-5)


def test_a_classifier_learns_with_the_mix_while_the_bilm_stays_frozen(model, tmp_path):
    options_file, weight_file = model
    keras.utils.set_random_seed(0)  # the classifier's initial weights and batches: the same run every time
    rng = np.random.default_rng(0)
    sentences = random_sentences(rng, 16, max_len=8)
    labels = np.array([len(s) % 2 for s in sentences])
    tokens = keras.Input(shape=(None,), dtype="string")
    elmo = ELMo(None, options_file, weight_file, name="elmo")
    pooled = keras.layers.GlobalAveragePooling1D()(elmo(tokens))  # over the real tokens (the layer's mask)
    classifier = keras.Model(tokens, keras.layers.Dense(2, activation="softmax")(pooled))
    classifier.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    x = padded_tokens(sentences)
    frozen_before = [w.numpy().copy() for w in elmo.non_trainable_weights]
    mix_before = elmo.mix.numpy().copy()
    history = classifier.fit(x, labels, epochs=8, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.allclose(elmo.mix.numpy(), mix_before)  # the mix weights learned
    assert [w.name for w in elmo.trainable_weights] == ["ELMo_W", "ELMo_gamma"]
    for before, after in zip(frozen_before, elmo.non_trainable_weights):  # the biLM did not
        np.testing.assert_array_equal(after.numpy(), before)
    # Saved and loaded, it gives the same outputs.
    path = str(tmp_path / "classifier.keras")
    classifier.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), classifier.predict(x, verbose=0), atol=1e-6)


def test_a_trainable_bilm_and_bad_arguments(model):
    options_file, weight_file = model
    layer = ELMo(None, options_file, weight_file, trainable_bilm=True, output=1)
    out = layer(padded_tokens([["a", "cat"]]))
    assert out.shape == (1, 2, 16) and len(layer.trainable_weights) > 2
    with pytest.raises(ValueError, match="output is 'middle'"):
        ELMo(None, options_file, weight_file, output="middle")
    with pytest.raises(ValueError, match="state_mode"):
        ELMo(None, options_file, weight_file, state_mode="stateful")


@pytest.mark.parametrize("padded, where", [
    ([["", "the", "cat"]], [1, 2]),            # at the front, as Keras' pad_sequences pads
    ([["the", "", "cat"]], [0, 2]),            # a hole
    ([["", "the", "", "cat", ""]], [1, 3]),    # everywhere
])
def test_padding_anywhere_gives_the_vectors_of_the_unpadded_sentence(model, padded, where):
    options_file, weight_file = model
    for output in ("all", "elmo"):
        layer = ELMo(None, options_file, weight_file, output=output)
        alone = layer(tf.constant([["the", "cat"]])).numpy()
        for got in (layer(tf.constant(padded)).numpy(), tf.function(layer)(tf.constant(padded)).numpy()):
            t = got.ndim - 2  # the token axis
            np.testing.assert_allclose(np.take(got, where, axis=t), alone, atol=1e-6)
            others = [k for k in range(len(padded[0])) if k not in where]
            assert not np.take(got, others, axis=t).any()  # padding positions are zeros
        np.testing.assert_array_equal(layer.compute_mask(tf.constant(padded)).numpy()[0],
                                      [k in where for k in range(len(padded[0]))])
    # In a batch, each row its own way: left-padded, right-padded, not padded.
    layer = ELMo(None, options_file, weight_file, output="top")
    rows = [["a", "b", "c"], ["d", "e"], ["f"]]
    expected = [layer(tf.constant([row])).numpy()[0] for row in rows]
    got = layer(tf.constant([["a", "b", "c"], ["", "d", "e"], ["f", "", ""]])).numpy()
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)
    np.testing.assert_allclose(got[1, 1:], expected[1], atol=1e-6)
    np.testing.assert_allclose(got[2, :1], expected[2], atol=1e-6)


def test_an_empty_batch_gives_an_empty_output(model):
    options_file, weight_file = model
    for output, shape in (("elmo", (0, 3, 16)), ("all", (0, 3, 3, 16))):
        layer = ELMo(None, options_file, weight_file, output=output)
        assert layer(tf.zeros((0, 3), tf.string)).shape == shape
    layer = ELMo(None, options_file, weight_file, inputs="char_ids")
    assert layer(tf.zeros((0, 5, 50), tf.int32)).shape == (0, 3, 16)


def test_a_mixed_precision_policy_computes_close_to_float32(model):
    options_file, weight_file = model
    sentences = random_sentences(np.random.default_rng(3), 4, max_len=8)
    given = padded_tokens(sentences)
    expected = ELMo(None, options_file, weight_file)(given).numpy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = ELMo(None, options_file, weight_file)
        got = layer(given)
        compiled = tf.function(layer)(given)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert got.dtype == tf.bfloat16 and layer.mix.dtype == "float32"
    scale = np.abs(expected).max()
    assert 0 < np.abs(got.numpy().astype(np.float32) - expected).max() < 0.02 * scale  # bfloat16 products
    np.testing.assert_allclose(compiled.numpy().astype(np.float32), got.numpy().astype(np.float32), atol=1e-6)


SAVED_LOADER = """
import sys
import keras
import numpy as np
import tensorflow as tf
import bilm.keras  # registers the layer
model = keras.models.load_model(sys.argv[1])
np.save(sys.argv[2], model.predict(tf.constant([["Hello", "world", "!"]]), verbose=0))
"""


def test_a_saved_model_keeps_a_model_name_not_its_paths(tmp_path):
    tokens = keras.Input(shape=(None,), dtype="string")
    classifier = keras.Model(tokens, keras.layers.GlobalAveragePooling1D()(ELMo("default", name="elmo")(tokens)))
    path = tmp_path / "saved" / "classifier.keras"
    path.parent.mkdir()
    classifier.save(str(path))
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    layer = next(c for c in json.loads(config)["config"]["layers"] if c["class_name"] == "ELMo")["config"]
    assert layer["model"] == "default" and layer["options_file"] is None and layer["weight_file"] is None
    assert os.path.dirname(bilm.__file__) not in config and "hdf5" not in config  # no path of this install
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / "moved.keras"
    path.rename(moved)
    result = subprocess.run([sys.executable, "-c", SAVED_LOADER, moved.name, "out.npy"], cwd=elsewhere,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = classifier.predict(tf.constant([["Hello", "world", "!"]]), verbose=0)
    np.testing.assert_allclose(np.load(elsewhere / "out.npy"), expected, atol=1e-6)
    # Files given by path stay paths.
    options_file, weight_file, _ = default_model_files()
    assert ELMo(None, options_file, weight_file).get_config()["options_file"] == options_file
    with pytest.raises(ValueError, match="expected a model name, or options_file and weight_file together"):
        ELMo(None, options_file)
