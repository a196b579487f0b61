"""Property-based and fuzz tests: arbitrary text and corrupted files get results or ``bilm`` errors only."""
import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bilm import Batcher, TokenBatcher
from bilm.errors import BilmError, OptionsError, WeightFileError
from bilm.core.options import check_options, load_options
from bilm.core.vocabulary import UnicodeCharsVocabulary
from bilm.core.weights import check_weight_file, expected_weight_shapes, read_dataset
from conftest import make_options, random_weight_file
from numpy_bilm import char_ids_for_sentences

# A vocabulary token: any characters a whitespace split leaves together (no surrogates).
TOKEN = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda t: t.split() == [t] and t != "!!!MAXTERMID")
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.lists(TOKEN, min_size=1, max_size=30, unique=True), st.integers(3, 50))
def test_vocabulary_reads_back_any_unicode_tokens(tmp_path, tokens, max_chars):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    vocab = UnicodeCharsVocabulary(str(path), max_chars)
    assert [vocab.id_to_word(i) for i in range(vocab.size)] == tokens
    assert all(vocab.word_to_id(t) == i for i, t in enumerate(tokens))
    for i, token in enumerate(tokens):
        if token not in ("<S>", "</S>"):
            expected = [258] + list(token.encode("utf-8")[: max_chars - 2]) + [259]
            assert list(vocab.word_char_ids[i][: len(expected)]) == expected
            assert (vocab.word_char_ids[i][len(expected):] == 260).all()


@SETTINGS
@given(st.lists(TOKEN, min_size=1, max_size=12, unique=True),
       st.lists(st.lists(TOKEN, max_size=5), min_size=1, max_size=4))
def test_token_batcher_ids_are_line_numbers_or_unk(tmp_path, tokens, sentences):
    vocab_tokens = ["<S>", "</S>", "<UNK>"] + [t for t in tokens if t not in ("<S>", "</S>", "<UNK>")]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab_tokens) + "\n", encoding="utf-8")
    ids = TokenBatcher(str(path)).batch_sentences(sentences)
    for row, sentence in zip(ids, sentences):
        expected = [0] + [vocab_tokens.index(t) if t in vocab_tokens else 2 for t in sentence] + [1]
        assert list(row[: len(sentence) + 2]) == [i + 1 for i in expected]
        assert (row[len(sentence) + 2:] == 0).all()


@SETTINGS
@given(st.lists(st.lists(TOKEN, max_size=5), min_size=1, max_size=4), st.integers(3, 50))
def test_batcher_with_and_without_vocabulary_agree(tmp_path, sentences, max_chars):
    vocabulary_tokens = sorted({t for s in sentences for t in s} - {"<S>", "</S>"})[:5]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(["<S>", "</S>"] + vocabulary_tokens) + "\n", encoding="utf-8")
    sentences = [[t for t in s if t not in ("<S>", "</S>")] for s in sentences]
    np.testing.assert_array_equal(Batcher(str(path), max_chars).batch_sentences(sentences),
                                  Batcher(None, max_chars).batch_sentences(sentences))
    np.testing.assert_array_equal(Batcher(None, max_chars).batch_sentences(sentences),
                                  char_ids_for_sentences(sentences, max_chars))  # the oracle's own encoder


JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=True) | st.text(max_size=5),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children,
                                                                                      max_size=3), max_leaves=6)


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_options_are_accepted_or_an_options_error(data):
    options = make_options()
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths(options))
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = options
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSON)
    try:
        check_options(options, "fuzzed")
    except OptionsError:
        return
    shapes = expected_weight_shapes(options)  # accepted options describe a weight file
    assert all(all(isinstance(n, int) and n > 0 for n in shape) for shape in shapes.values())


def _not_json(name):
    raise ValueError(name)


def _json_bytes(value):
    return json.dumps(value).encode("utf-8")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | JSON.map(_json_bytes) | st.dictionaries(st.text(max_size=5), JSON).map(_json_bytes))
def test_any_options_file_bytes_load_or_raise_an_options_error(tmp_path, content):
    path = tmp_path / "options.json"
    path.write_bytes(content)
    try:  # strict JSON: NaN and Infinity are not numbers JSON has
        value = json.loads(content.decode("utf-8"), parse_constant=_not_json)
    except ValueError:  # not UTF-8 JSON
        value = None
    if isinstance(value, dict):
        assert load_options(str(path)) == value
    else:
        with pytest.raises(OptionsError, match=r"options\.json: (not valid JSON|expected a JSON object|"
                                               r"(NaN|-?Infinity) is not a number JSON allows)"):
            load_options(str(path))


@pytest.fixture(scope="module")
def weight_file(tmp_path_factory):
    options = make_options()
    path = tmp_path_factory.mktemp("weights") / "weights.hdf5"
    random_weight_file(path, options, seed=0)
    return options, path


@pytest.mark.parametrize("seed", range(40))
def test_corrupted_weight_files_load_or_raise_a_weight_file_error(weight_file, tmp_path, seed):
    options, original = weight_file
    rng = np.random.default_rng(seed)
    data = bytearray(original.read_bytes())
    if seed % 3 == 0:
        data = data[: rng.integers(0, len(data))]
    else:
        for _ in range(rng.integers(1, 40) if seed % 3 == 1 else 1):
            start = rng.integers(0, len(data))
            block = rng.integers(1, 64 if seed % 3 == 1 else 4096)
            data[start:start + block] = rng.integers(0, 256, min(block, len(data) - start), dtype=np.uint8).tobytes()
    path = tmp_path / "weights.hdf5"
    path.write_bytes(bytes(data))
    try:
        check_weight_file(str(path), options)
        for name in expected_weight_shapes(options):
            read_dataset(str(path), name, pad_row=name == "char_embed")
    except WeightFileError:
        return
    except BilmError as err:
        pytest.fail(f"a corrupted weight file raised {type(err).__name__} instead of WeightFileError: {err}")
    # Overwritten data bytes can go unnoticed (HDF5 has no checksums here); a cut file cannot.
    assert seed % 3 != 0, "a truncated weight file loaded without an error"


def test_corruption_is_found_before_anything_is_loaded(weight_file, tmp_path):
    options, original = weight_file
    path = tmp_path / "weights.hdf5"
    shutil.copy(original, path)
    with open(path, "r+b") as fout:
        fout.truncate(path.stat().st_size - 100)  # the last dataset's data is cut
    with pytest.raises(WeightFileError, match=r"weights\.hdf5: cannot read .*truncated"):
        check_weight_file(str(path), options)
