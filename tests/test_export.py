"""`bilm export`: a SavedModel that TF2 loads in eager mode, equal to bilm's graph."""
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm import Batcher, BidirectionalLanguageModel, weight_layers
from bilm.cli import main
from bilm.errors import OutputExistsError
from bilm.embedding.export import export_saved_model, token_char_ids_op
from bilm.core.text import Tokenizer
from conftest import make_options, write_model
from numpy_bilm import char_ids_for_sentences

SENTENCES = ["the cat sat on the mat .", "naïve Zürich", "x" * 70 + " 日本語 !", "a"]
# Spaces other than ASCII's: no-break, ideographic, thin, line separator, and a run of them.
UNICODE_SPACED = "the\u00a0cat\u3000sat\u2009on\u2028the \u00a0\u205f mat\u0085."

LOADER = """
import json, sys
import numpy as np
import tensorflow as tf
assert tf.executing_eagerly()
model = tf.saved_model.load(sys.argv[1])
sentences = json.loads(sys.argv[2])
out = {}
for k, v in model.signatures["default"](tf.constant(sentences)).items():
    out["default/" + k] = v.numpy()
alone = model.signatures["default"](tf.constant(sentences[-1:]))
out["alone/default"] = alone["default"].numpy()
tokens = [s.split() for s in sentences]
width = max(map(len, tokens)) + 2  # extra padding on purpose
padded = [t + ["PAD"] * (width - len(t)) for t in tokens]
result = model.signatures["tokens"](tokens=tf.constant(padded), sequence_len=tf.constant([len(t) for t in tokens]))
for k, v in result.items():
    out["tokens/" + k] = v.numpy()
spaced, split = json.loads(sys.argv[4])
out["spaced/elmo"] = model.signatures["default"](tf.constant([spaced]))["elmo"].numpy()
out["split/elmo"] = model.signatures["tokens"](tokens=tf.constant([split]),
                                               sequence_len=tf.constant([len(split)]))["elmo"].numpy()
np.savez(sys.argv[3], **out)
"""

# Then, in the same process: what the signatures do with lengths that do not fit, and with empty batches.
CHECKS = """
tokens, default = model.signatures["tokens"], model.signatures["default"]
report = {}
for name, lengths in [("longer", [3, 1]), ("negative", [-1, 1]), ("more rows", [1, 1, 1]), ("fewer rows", [2])]:
    try:
        tokens(tokens=tf.constant([["a", "b"], ["c", ""]]), sequence_len=tf.constant(lengths))
        report[name] = "no error"
    except tf.errors.InvalidArgumentError as err:
        report[name] = [line for line in err.message.splitlines() if "sequence_len" in line]
report["empty tokens"] = tokens(tokens=tf.zeros((0, 3), tf.string), sequence_len=tf.zeros((0,), tf.int32))[
    "elmo"].shape.as_list()
report["empty default"] = default(tf.zeros((0,), tf.string))["elmo"].shape.as_list()
with open(sys.argv[5], "w") as fout:
    json.dump(report, fout)
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("export")
    options_file, weight_file = write_model(directory / "model", make_options(n_layers=2, skip=True), seed=4)
    export_saved_model(options_file, weight_file, str(directory / "saved"))
    result = subprocess.run([sys.executable, "-c", LOADER + CHECKS, str(directory / "saved"), json.dumps(SENTENCES),
                             str(directory / "out.npz"), json.dumps([UNICODE_SPACED, Tokenizer()(UNICODE_SPACED)]),
                             str(directory / "checks.json")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return options_file, weight_file, dict(np.load(directory / "out.npz")), directory / "checks.json"


def _graph_outputs(options_file, weight_file, sentences):
    with tf.Graph().as_default():
        ids = tf.placeholder(tf.int32, (None, None, 50))
        ops = BidirectionalLanguageModel(options_file, weight_file, state_mode="warm")(ids)
        elmo = weight_layers("check", ops)["weighted_op"]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            return sess.run({"lm": ops["lm_embeddings"], "elmo": elmo, "tokens": ops["token_embeddings"]},
                            {ids: Batcher(None, 50).batch_sentences(sentences)})


def test_exported_model_equals_the_graph(exported):
    options_file, weight_file, out, _ = exported
    tokens = [s.split() for s in SENTENCES]
    expected = _graph_outputs(options_file, weight_file, tokens)
    lengths = [len(t) for t in tokens]
    for i, n in enumerate(lengths):
        for prefix in ("default/", "tokens/"):
            np.testing.assert_allclose(out[prefix + "elmo"][i, :n], expected["elmo"][i, :n], atol=1e-5)
            np.testing.assert_allclose(out[prefix + "default"][i], expected["elmo"][i, :n].mean(axis=0), atol=1e-5)
            assert not out[prefix + "elmo"][i, n:].any()  # padding positions are zeros
        for layer in (1, 2):
            np.testing.assert_allclose(out[f"tokens/lstm_outputs{layer}"][i, :n], expected["lm"][i, layer, :n],
                                       atol=1e-5)
        np.testing.assert_allclose(out["tokens/word_emb"][i, :n], expected["tokens"][i, 1:n + 1], atol=1e-5)
    assert out["tokens/word_emb"].shape[-1] == 8 and out["tokens/elmo"].shape[-1] == 16


def test_mean_pooling_ignores_padding(exported):
    _, _, out, _ = exported
    # The last sentence has one token: in the batch it is padded to the longest sentence.
    np.testing.assert_allclose(out["default/default"][-1], out["alone/default"][0], atol=1e-5)
    assert np.abs(out["default/default"][-1] - out["default/default"][0]).max() > 1e-3


def test_in_graph_character_ids_equal_the_batcher():
    tokens = [["the", "x" * 48, "y" * 49, "é" * 30, "!"], ["日本語", "", "", "", ""]]
    lengths = [5, 1]
    with tf.Graph().as_default(), tf.Session() as sess:
        got = sess.run(token_char_ids_op(tf.constant(tokens), tf.constant(lengths), 50))
    expected = char_ids_for_sentences([t[:n] for t, n in zip(tokens, lengths)], 50)  # the oracle's encoder
    np.testing.assert_array_equal(got, expected)


def test_export_command_does_not_overwrite(tmp_path, exported):
    options_file, weight_file, *_ = exported
    (tmp_path / "saved").mkdir()
    with pytest.raises(OutputExistsError, match="already exists"):
        export_saved_model(options_file, weight_file, str(tmp_path / "saved"))
    assert main(["--quiet", "export", str(tmp_path / "saved"), "--options", options_file, "--weights",
                 weight_file, "--state-mode", "zero", "--overwrite"]) == 0
    assert (tmp_path / "saved" / "saved_model.pb").is_file()


def test_the_default_signature_splits_on_unicode_spaces_as_embed_does(exported):
    *_, out, _ = exported
    split = Tokenizer()(UNICODE_SPACED)  # how `bilm embed` and the dumps split a line
    assert split == ["the", "cat", "sat", "on", "the", "mat", "."]
    assert out["spaced/elmo"].shape == out["split/elmo"].shape == (1, len(split), 16)
    np.testing.assert_allclose(out["spaced/elmo"], out["split/elmo"], atol=1e-6)


def test_sequence_len_is_checked_and_an_empty_batch_is_empty(exported):
    report = json.loads(exported[-1].read_text())
    assert report["longer"] == ["assertion failed: [sequence_len: expected lengths in [0, the width of tokens]; "
                                "width:] [2] [sequence_len:] [3 1]"]
    assert report["negative"] == ["assertion failed: [sequence_len: expected lengths in [0, the width of tokens]; "
                                  "width:] [2] [sequence_len:] [-1 1]"]
    for name, n in (("more rows", 3), ("fewer rows", 1)):
        assert report[name] == [f"assertion failed: [sequence_len: expected one length per row of tokens; "
                                f"lengths:] [{n}] [rows:] [2]"]
    assert report["empty tokens"] == [0, 3, 16] and report["empty default"] == [0, 0, 16]
