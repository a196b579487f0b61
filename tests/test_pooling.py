"""Sentence vectors and `bilm embed --layers`: pooling and layer selection against plain NumPy."""
import json

import h5py
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm.cli import main
from bilm.errors import InputError
from bilm.core.pooling import masked_max, masked_mean, select_layers, sentence_vectors
from conftest import make_options, write_model


def test_masked_pooling_ignores_padding():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((3, 5, 4)).astype(np.float32)
    lengths = [5, 2, 0]
    mask = np.arange(5)[None, :] < np.array(lengths)[:, None]
    values[1, 2:] = 100.0  # padding that must not count
    with tf.Graph().as_default(), tf.Session() as sess:
        mean, maximum = sess.run([masked_mean(tf.constant(values), tf.constant(mask)),
                                  masked_max(tf.constant(values), tf.constant(mask))])
    for i, n in enumerate(lengths):
        expected_mean = values[i, :n].mean(axis=0) if n else np.zeros(4)
        expected_max = values[i, :n].max(axis=0) if n else np.zeros(4)
        np.testing.assert_allclose(mean[i], expected_mean, atol=1e-6)
        np.testing.assert_allclose(maximum[i], expected_max, atol=1e-6)


def test_sentence_vectors_and_layer_selection():
    rng = np.random.default_rng(1)
    sentences = [rng.standard_normal((3, n, 6)).astype(np.float32) for n in (4, 1, 0)]
    top_mean = sentence_vectors(sentences, layer="top")
    np.testing.assert_allclose(top_mean[0], sentences[0][2].mean(axis=0), atol=1e-6)
    assert not top_mean[2].any()
    average_max = sentence_vectors(sentences, layer="average", pooling="max")
    np.testing.assert_allclose(average_max[0], sentences[0].mean(axis=0).max(axis=0), atol=1e-6)
    mixed = select_layers(sentences[0], "mix", mix_weights=[0.2, 0.3, 0.5], gamma=2.0)
    np.testing.assert_allclose(mixed, 2.0 * (0.2 * sentences[0][0] + 0.3 * sentences[0][1] + 0.5 * sentences[0][2]),
                               atol=1e-6)
    np.testing.assert_array_equal(select_layers(sentences[0], 1), sentences[0][1])
    with pytest.raises(InputError, match="needs 3 mix_weights"):
        select_layers(sentences[0], "mix", mix_weights=[1.0])
    with pytest.raises(InputError, match="pooling is 'sum'"):
        sentence_vectors(sentences, pooling="sum")
    with pytest.raises(InputError, match="layer is 7"):
        select_layers(sentences[0], 7)


def test_embed_layers_and_sentence_to_index(tmp_path):
    options_file, weight_file = write_model(tmp_path / "model", make_options(), seed=2)
    data = tmp_path / "data.txt"
    data.write_text("the cat sat\nhello there\nthe cat sat\nlast one here .\n", encoding="utf-8")
    model = ["--options", options_file, "--weights", weight_file, "--state-mode", "zero"]
    outputs = {}
    for layers in ("all", "top", "average", "mix"):
        out = tmp_path / f"{layers}.hdf5"
        extra = ["--mix-weights", "0.5,0.25,0.25"] if layers == "mix" else []
        assert main(["--quiet", "embed", str(data), str(out), "--layers", layers] + extra + model) == 0
        with h5py.File(out, "r") as fin:
            outputs[layers] = {key: fin[key][...] for key in fin if key != "sentence_to_index"}
            record = json.loads(fin["sentence_to_index"][0])
    assert record == {"the cat sat": "2", "hello there": "1", "last one here .": "3"}
    for key, full in outputs["all"].items():
        assert full.shape[0] == 3
        np.testing.assert_allclose(outputs["top"][key], full[2], atol=1e-6)
        np.testing.assert_allclose(outputs["average"][key], full.mean(axis=0), atol=1e-6)
        np.testing.assert_allclose(outputs["mix"][key], 0.5 * full[0] + 0.25 * full[1] + 0.25 * full[2], atol=1e-6)
    for k in range(2):
        assert main(["--quiet", "embed", str(data), str(tmp_path / f"s{k}.hdf5"), "--shard", f"{k}/2"] + model) == 0
    assert main(["merge", str(tmp_path / "merged.hdf5"), str(tmp_path / "s0.hdf5"), str(tmp_path / "s1.hdf5")]) == 0
    with h5py.File(tmp_path / "merged.hdf5", "r") as fin:
        assert json.loads(fin["sentence_to_index"][0]) == record
        assert sorted(k for k in fin if k != "sentence_to_index") == ["0", "1", "2", "3"]
