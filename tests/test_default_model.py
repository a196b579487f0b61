"""The shipped default model: its files follow the original's layout and it runs by default."""
import json

import h5py
import pytest

from bilm.models import default_model_files
from bilm.precompute import ElmoEmbedder
from bilm.core.vocabulary import read_vocabulary_file
from bilm.core.weights import expected_weight_shapes

FILES = default_model_files()
pytestmark = pytest.mark.skipif(FILES is None, reason="the default model files are not in bilm/models/default")


def test_files_follow_the_weight_file_layout():
    options_file, weight_file, vocab_file = FILES
    options = json.load(open(options_file))
    assert options["char_cnn"]["n_characters"] == 262
    with h5py.File(weight_file, "r") as fin:
        found = {}
        fin.visititems(lambda n, o: found.update({n: o.shape}) if isinstance(o, h5py.Dataset) else None)
    assert found == expected_weight_shapes(options)
    assert read_vocabulary_file(vocab_file)[:3] == ["<S>", "</S>", "<UNK>"]


def test_embeds_with_the_defaults():
    with ElmoEmbedder(*FILES) as embedder:
        vectors = embedder.embed_sentences([["The", "river", "flows", "."], ["Hello"]])
    options = json.load(open(FILES[0]))
    width = 2 * options["lstm"]["projection_dim"]
    assert [v.shape for v in vectors] == [(3, 4, width), (3, 1, width)]
