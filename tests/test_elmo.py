"""weight_layers against the ELMo formula computed in NumPy."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm import weight_layers

B, L, T, D = 3, 3, 5, 4


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    lm_embeddings = rng.standard_normal((B, L, T, D)).astype(np.float32)
    lengths = np.array([5, 2, 3])
    mask = np.arange(T)[None, :] < lengths[:, None]
    return lm_embeddings, mask


def _run(name="elmo", w=None, gamma=None, **kwargs):
    lm_embeddings, mask = _inputs()
    with tf.Graph().as_default():
        ops = {"lm_embeddings": tf.placeholder(tf.float32, (None, L, None, D)), "mask": tf.placeholder(tf.bool)}
        out = weight_layers(name, ops, **kwargs)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for suffix, value in (("_ELMo_W", w), ("_ELMo_gamma", gamma)):
                if value is not None:
                    var = [v for v in tf.global_variables() if v.op.name == name + suffix][0]
                    var.load(np.asarray(value, np.float32), sess)
            reg = out["regularization_op"]
            fetch = [out["weighted_op"], reg[0] if isinstance(reg, list) else tf.constant(reg)]
            feed = {ops["lm_embeddings"]: lm_embeddings, ops["mask"]: mask}
            names = sorted(v.op.name for v in tf.global_variables())
            collected = tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)
            return sess.run(fetch, feed) + [names, collected]


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def test_weighted_sum_matches_formula():
    w, gamma = [0.3, -1.2, 0.5], [1.7]
    got, reg, names, collected = _run(w=w, gamma=gamma, l2_coef=0.25)
    lm_embeddings, _ = _inputs()
    s = _softmax(np.array(w) + 1.0 / L)
    expected = gamma[0] * sum(s[layer] * lm_embeddings[:, layer] for layer in range(L))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert names == ["elmo_ELMo_W", "elmo_ELMo_gamma"]
    assert reg == pytest.approx(0.25 * sum(x * x for x in w), rel=1e-6)
    assert len(collected) == 1


def test_initial_weights_average_layers():
    got, reg, _, _ = _run()
    lm_embeddings, _ = _inputs()
    np.testing.assert_allclose(got, lm_embeddings.mean(axis=1), rtol=1e-5, atol=1e-6)
    assert reg == 0.0


def test_use_top_only():
    got, reg, names, _ = _run(gamma=[2.0], use_top_only=True)
    lm_embeddings, _ = _inputs()
    np.testing.assert_allclose(got, 2.0 * lm_embeddings[:, -1], rtol=1e-6)
    assert names == ["elmo_ELMo_gamma"] and reg == 0.0


def test_layer_norm_uses_only_real_positions():
    w = [0.1, 0.2, -0.4]
    got, _, _, _ = _run(w=w, do_layer_norm=True)
    lm_embeddings, mask = _inputs()
    s = _softmax(np.array(w) + 1.0 / L)
    expected = 0
    for layer in range(L):
        real = lm_embeddings[:, layer][mask]  # (n_real, D)
        mean, var = real.mean(), real.var()
        expected = expected + s[layer] * (lm_embeddings[:, layer] - mean) / np.sqrt(var + 1e-12)
    np.testing.assert_allclose(got[mask], expected[mask], rtol=1e-4, atol=1e-5)
    # Padded positions are normalised with the real positions' statistics too.
    assert np.abs(got[~mask] - expected[~mask]).max() < 1e-4


def test_reused_weights_collect_one_regulariser():
    with tf.Graph().as_default():
        make = lambda: {"lm_embeddings": tf.placeholder(tf.float32, (None, L, None, D)),  # noqa: E731
                        "mask": tf.placeholder(tf.bool)}
        first = weight_layers("input", make(), l2_coef=0.1)
        with tf.variable_scope("", reuse=True):
            second = weight_layers("input", make(), l2_coef=0.1)
        assert len(tf.trainable_variables()) == 2
        assert len(tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)) == 1
        assert first["regularization_op"][0] is second["regularization_op"][0]
