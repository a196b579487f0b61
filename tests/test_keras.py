"""The Keras 3 layer: eager, tf.function, model.fit, saving; the same numbers as the graph API."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from bilm import Batcher, BidirectionalLanguageModel
from bilm.keras import ELMo
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
