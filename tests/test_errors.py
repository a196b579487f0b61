"""Every bad input the library handles, in one table: what is wrong, the call, the error.

Each case builds a bad input under ``tmp_path``, calls the library, and expects a
``bilm`` error class whose one-line message contains the given text (a regular
expression). The command line's handling of the same errors is in ``test_cli.py``
and at the end of this file; recovery from interruption is in ``test_recovery.py``.
"""
import json
import re

import h5py
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm import Batcher, BidirectionalLanguageModel, TokenBatcher
from bilm.embedding.dumps import dump_bilm_embeddings, merge_shards
from bilm.errors import (BilmError, CheckpointError, InputError, InvalidNumberOfCharacters, OptionsError, OutputError,
                         OutputExistsError, OutputLockedError, VocabularyError, WeightFileError)
from bilm.training.finetune import finetune
from bilm.training.dataset import LMDataset, load_vocab
from bilm.core.options import ModelOptions, check_options, load_options
from bilm.core.files import OutputLock, PartsJob, atomic_output
from bilm.core.text import DatasetReader
from bilm.training.evaluation import evaluate_checkpoint
from bilm.training.checkpoints import load_options_latest_checkpoint
from bilm.training.loop import restart_training, save_dir_lock
from bilm.core.vocabulary import UnicodeCharsVocabulary, Vocabulary, frequency_order_warning
from bilm.core.weights import check_embedding_file, check_weight_file
from conftest import make_options, random_weight_file, write_model

CASES = []


def case(error, message):
    """Register a case: ``function(tmp_path)`` must raise ``error`` with ``message`` in it."""
    assert issubclass(error, BilmError)

    def register(function):
        CASES.append(pytest.param(function, error, message, id=function.__name__))
        return function
    return register


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def options_file(tmp_path, change=None, **kwargs):
    options = make_options(**kwargs)
    if change:
        change(options)
    return write(tmp_path / "options.json", json.dumps(options))


def check_options_file(tmp_path, change=None, **kwargs):
    """Write make_options(**kwargs), changed by ``change``, and check it as a file."""
    path = options_file(tmp_path, change, **kwargs)
    check_options(load_options(path), path)


def training_options(n_characters=261, **extra):
    """Complete training options of a tiny character model, with ``extra`` keys."""
    options = make_options()
    options["char_cnn"]["n_characters"] = n_characters
    options.update(batch_size=2, unroll_steps=3, n_tokens_vocab=10, n_epochs=1, n_train_tokens=100,
                   n_negative_samples_batch=4, **extra)
    return options


def check_training_options(options, source="options"):
    ModelOptions(options, source, training=True)


def parts_job(tmp_path, settings, **kwargs):
    """Open (and close) a PartsJob on out.hdf5 with one part written."""
    with PartsJob(str(tmp_path / "out.hdf5"), settings, **kwargs) as job, job.writer() as writer:
        writer.add(0, {"0": np.zeros(2)})


def model_files(tmp_path, **kwargs):
    options = make_options(**kwargs)
    weights = tmp_path / "weights.hdf5"
    random_weight_file(weights, options, seed=0)
    return options, str(weights)


def vocab_file(tmp_path, tokens):
    return write(tmp_path / "vocab.txt", "\n".join(tokens) + "\n")


SPECIALS = ["<S>", "</S>", "<UNK>"]

# --- options.json -------------------------------------------------------------------


@case(OptionsError, r"options\.json: options file not found")
def options_missing_file(tmp_path):
    load_options(str(tmp_path / "options.json"))


@case(OptionsError, r"models: is a directory; expected a file \(options file\)")
def options_file_is_a_directory(tmp_path):
    (tmp_path / "models").mkdir()
    load_options(str(tmp_path / "models"))


@case(OptionsError, r"options\.json: not valid JSON")
def options_invalid_json(tmp_path):
    load_options(write(tmp_path / "options.json", '{"lstm": {"dim": 8,}}'))


@case(OptionsError, r"expected a JSON object at the top level, found list")
def options_not_an_object(tmp_path):
    load_options(write(tmp_path / "options.json", "[1, 2]"))


@case(OptionsError, r"options\.json: missing key 'lstm\.dim'")
def options_missing_key(tmp_path):
    check_options_file(tmp_path, lambda o: o["lstm"].pop("dim"))


@case(OptionsError, r"key 'lstm\.dim' is '24'; expected int")
def options_mistyped_key(tmp_path):
    check_options_file(tmp_path, lambda o: o["lstm"].update(dim="24"))


@case(OptionsError, r"key 'lstm\.n_layers' is 0; expected at least 1")
def options_zero_size(tmp_path):
    check_options_file(tmp_path, lambda o: o["lstm"].update(n_layers=0))


@case(OptionsError, r"key 'char_cnn\.embedding\.dim' is -4; expected at least 1")
def options_negative_size(tmp_path):
    check_options_file(tmp_path, lambda o: o["char_cnn"]["embedding"].update(dim=-4))


@case(OptionsError, r"lstm\.projection_dim \(32\) is larger than lstm\.dim \(24\)")
def options_projection_larger_than_dim(tmp_path):
    check_options_file(tmp_path, projection_dim=32)


@case(OptionsError, r"key 'char_cnn\.activation' is 'gelu'; expected one of \('relu', 'tanh'\)")
def options_unknown_activation(tmp_path):
    check_options_file(tmp_path, activation="gelu")


@case(OptionsError, r"key 'char_cnn\.filters\[1\]' is \[2\]; expected \[width, n_filters\]")
def options_malformed_filter(tmp_path):
    check_options_file(tmp_path, lambda o: o["char_cnn"]["filters"].__setitem__(1, [2]))


@case(OptionsError, r"'char_cnn\.filters\[0\]' has width 9, wider than max_characters_per_token \(5\)")
def options_filter_wider_than_token(tmp_path):
    check_options_file(tmp_path, filters=((9, 4),), max_chars=5)


@case(InvalidNumberOfCharacters, r"'char_cnn\.n_characters' is 261; expected 262 at inference .*adds id 0")
def options_261_characters_at_inference(tmp_path):
    check_options_file(tmp_path, lambda o: o["char_cnn"].update(n_characters=261))


@case(InvalidNumberOfCharacters, r"'char_cnn\.n_characters' is 262; expected 261 in training")
def options_262_characters_in_training(tmp_path):
    check_training_options(training_options(n_characters=262), "train options")


@case(OptionsError, r"'dropout' is 1\.5; expected a dropout rate in \[0, 1\)")
def options_impossible_dropout(tmp_path):
    check_training_options(training_options(dropout=1.5))


@case(OptionsError, r"options\.json: NaN is not a number JSON allows; expected a finite value")
def options_nan_in_file(tmp_path):
    load_options(write(tmp_path / "options.json", '{"lstm": {"dim": 8}, "dropout": NaN}'))


@case(OptionsError, r"key 'learning_rate' is nan; expected a finite number")
def options_nan_in_dict(tmp_path):
    check_training_options(training_options(learning_rate=float("nan")))


@case(OptionsError, r"'n_negative_samples_batch' is 4, more than the 3 tokens of the vocabulary")
def options_more_negatives_than_tokens(tmp_path):
    check_training_options(dict(training_options(), n_tokens_vocab=3))


@case(OptionsError, r"'share_embedding_softmax' needs token input")
def options_shared_softmax_with_characters(tmp_path):
    check_training_options(training_options(share_embedding_softmax=True))


# --- weight files -------------------------------------------------------------------


@case(WeightFileError, r"weights\.hdf5: weight file not found")
def weights_missing_file(tmp_path):
    check_weight_file(str(tmp_path / "weights.hdf5"), make_options())


@case(WeightFileError, r"models: is a directory; expected a file \(weight file\)")
def weights_file_is_a_directory(tmp_path):
    (tmp_path / "models").mkdir()
    check_weight_file(str(tmp_path / "models"), make_options())


@case(WeightFileError, r"weights\.hdf5: cannot read as HDF5 .*expected a weight file")
def weights_not_hdf5(tmp_path):
    check_weight_file(write(tmp_path / "weights.hdf5", "not an HDF5 file\n" * 100), make_options())


@case(WeightFileError, r"weights\.hdf5: (cannot read|corrupted|truncated)")
def weights_truncated(tmp_path):
    options, weights = model_files(tmp_path)
    data = open(weights, "rb").read()
    open(weights, "wb").write(data[: len(data) * 2 // 3])
    check_weight_file(weights, options)


@case(WeightFileError, r"missing dataset 'RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_P_0' \(expected shape \(24, 8\)\)")
def weights_missing_dataset(tmp_path):
    options, weights = model_files(tmp_path)
    with h5py.File(weights, "a") as fout:
        del fout["RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_P_0"]
    check_weight_file(weights, options)


@case(WeightFileError, r"dataset 'char_embed' has shape \(262, 4\); the options need \(261, 4\) "
                       r"\(char_cnn\.embedding\.dim = 4 in options\)")
def weights_wrong_shape(tmp_path):
    options, weights = model_files(tmp_path)
    with h5py.File(weights, "a") as fout:
        del fout["char_embed"]
        fout["char_embed"] = np.zeros((262, 4), np.float32)
    check_weight_file(weights, options)


@case(WeightFileError, r"dataset 'RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0' has shape \(16, 96\); "
                       r"the options need \(16, 128\) \(lstm\.projection_dim = 8, lstm\.dim = 32 in options\)")
def weights_do_not_match_options(tmp_path):
    _, weights = model_files(tmp_path)
    check_weight_file(weights, make_options(dim=32))


@case(WeightFileError, r"dataset 'CNN_proj/W_proj' has shape \(28, 8\); the options need \(28, 24\) "
                       r"\(char_cnn\.filters = .*, lstm\.projection_dim \(absent: lstm\.dim\) = 24 in options\)")
def weights_of_options_without_their_projection_dim(tmp_path):
    options, weights = model_files(tmp_path)  # lstm.dim 24, projection_dim 8
    del options["lstm"]["projection_dim"]  # the options then mean no projection: projection_dim = dim
    check_weight_file(weights, options)


@case(WeightFileError, r"dataset 'CNN/b_cnn_0' has dtype int64; expected floating point")
def weights_not_floating_point(tmp_path):
    options, weights = model_files(tmp_path)
    with h5py.File(weights, "a") as fout:
        del fout["CNN/b_cnn_0"]
        fout["CNN/b_cnn_0"] = np.zeros(4, np.int64)
    check_weight_file(weights, options)


@case(WeightFileError, r"tokens\.hdf5: dataset 'embedding' has shape \(5, 7\); expected \(n_vocab, 8\)")
def token_embedding_file_wrong_width(tmp_path):
    with h5py.File(tmp_path / "tokens.hdf5", "w") as fout:
        fout["embedding"] = np.zeros((5, 7), np.float32)
    check_embedding_file(str(tmp_path / "tokens.hdf5"), 8)


# --- vocabulary files ---------------------------------------------------------------


@case(VocabularyError, r"vocab\.txt: vocabulary file not found")
def vocab_missing_file(tmp_path):
    Vocabulary(str(tmp_path / "vocab.txt"))


@case(VocabularyError, r"vocab\.txt: vocabulary file is empty")
def vocab_empty(tmp_path):
    Vocabulary(write(tmp_path / "vocab.txt", ""))


@case(VocabularyError, r"missing special token\(s\) <UNK>; a training vocabulary needs <S>, </S> and <UNK>")
def vocab_without_unk_in_training(tmp_path):
    load_vocab(vocab_file(tmp_path, ["<S>", "</S>", "the", "cat"]), 50)


@case(VocabularyError, r"token 'cat' is on lines 5 and 7 .*expected each token once")
def vocab_duplicate_token_in_training(tmp_path):
    load_vocab(vocab_file(tmp_path, SPECIALS + ["the", "cat", "sat", "cat"]))


@case(VocabularyError, r"vocab\.txt, line 5: not valid UTF-8")
def vocab_not_utf8(tmp_path):
    (tmp_path / "vocab.txt").write_bytes(b"<S>\n</S>\n<UNK>\nthe\nca\xfft\n")
    Vocabulary(str(tmp_path / "vocab.txt"))


@case(InputError, r"vocab\.txt: token input needs <S> and </S> in the vocabulary")
def vocab_without_boundaries_for_token_input(tmp_path):
    TokenBatcher(vocab_file(tmp_path, ["the", "cat"]))


@case(InputError, r"token 'dog' is not in the vocabulary, which has no <UNK>")
def token_batcher_unknown_token_without_unk(tmp_path):
    TokenBatcher(vocab_file(tmp_path, ["<S>", "</S>", "the"])).batch_sentences([["the", "dog"]])


# --- text inputs --------------------------------------------------------------------


@case(InputError, r"data\.txt, line 2: not valid UTF-8 .*--encoding latin-1.*encoding_errors='replace'")
def text_not_utf8(tmp_path):
    (tmp_path / "data.txt").write_bytes(b"a good line\nbad \xc3\x28 line\n")
    list(DatasetReader(str(tmp_path / "data.txt")))


@case(InputError, r"data\.txt: 1 empty line \(line 3\); expected a sentence on every line")
def text_empty_line(tmp_path):
    DatasetReader(write(tmp_path / "data.txt", "one\ntwo\n\nfour\n")).scan()


@case(InputError, r"data\.txt: 7 empty lines \(lines 2, 3, 5, 6, 7 and 2 more\)")
def text_many_empty_lines(tmp_path):
    DatasetReader(write(tmp_path / "data.txt", "one\n \t \u3000\n\nfour\n\n\n\n\n\nten\n")).scan()


@case(InputError, r"data\.txt: input file not found")
def text_missing_file(tmp_path):
    list(DatasetReader(str(tmp_path / "data.txt")))


@case(InputError, r"encoding \(--encoding\) is 'klingon'; expected a Python codec name")
def text_unknown_encoding(tmp_path):
    DatasetReader(write(tmp_path / "data.txt", "one\n"), encoding="klingon")


@case(InputError, r"mix_weights \(--mix-weights\) are used only with layers='mix' \(--layers mix\), not layers='top'")
def mix_weights_without_mix(tmp_path):
    options_path, weights = write_model(tmp_path, make_options())
    dump_bilm_embeddings(None, write(tmp_path / "data.txt", "one\n"), options_path, weights,
                         str(tmp_path / "out.hdf5"), layers="top", mix_weights=[0.5, 0.5, 0.0])


@case(InputError, r"batch_sentences got an empty list of sentences")
def batcher_empty_sentence_list(tmp_path):
    Batcher(None, 50).batch_sentences([])


@case(InputError, r"sentence 1 is a str; expected a list of tokens")
def batcher_untokenized_sentence(tmp_path):
    Batcher(None, 50).batch_sentences([["fine"], "not tokenized"])


@case(VocabularyError, r"max_characters_per_token is 2; expected at least 3")
def characters_per_token_too_small(tmp_path):
    UnicodeCharsVocabulary(vocab_file(tmp_path, SPECIALS), 2)


# --- training data ------------------------------------------------------------------


@case(InputError, r"no training file matches '.*nothing-\*\.txt'")
def training_data_empty_pattern(tmp_path):
    LMDataset(str(tmp_path / "nothing-*.txt"), load_vocab(vocab_file(tmp_path, SPECIALS)))


@case(InputError, r"no training file matches '.*corpus'; it is a directory: expected a glob of its files, such as "
                   r"'.*corpus/\*'")
def training_data_directory_as_pattern(tmp_path):
    (tmp_path / "corpus").mkdir()
    write(tmp_path / "corpus" / "a.txt", "the cat\n")
    LMDataset(str(tmp_path / "corpus"), load_vocab(vocab_file(tmp_path, SPECIALS)))


@case(InputError, r"no held-out file of test_prefix \(--test_prefix\) matches '.*nothing-\*\.txt'")
def evaluation_empty_pattern(tmp_path):
    evaluate_checkpoint(str(tmp_path / "ckpt"), str(tmp_path / "nothing-*.txt"), vocab_file(tmp_path, SPECIALS))


@case(InputError, r"\(2 file\(s\)\) contains no sentences")
def training_data_empty_shards(tmp_path):
    write(tmp_path / "shard-1.txt", "")
    write(tmp_path / "shard-2.txt", "\n  \n")
    LMDataset(str(tmp_path / "shard-*.txt"), load_vocab(vocab_file(tmp_path, SPECIALS)))


@case(InputError, r"shard-1\.txt, line 2: not valid UTF-8")
def training_data_not_utf8(tmp_path):
    (tmp_path / "shard-1.txt").write_bytes(b"the cat\nthe \xff\n")
    data = LMDataset(str(tmp_path / "shard-1.txt"), load_vocab(vocab_file(tmp_path, SPECIALS)), test=True)
    list(data.iter_batches(1, 2))


# --- fine-tuning -------------------------------------------------------------------


@case(OutputError, r"notes\.txt: is a file; expected a directory \(save directory\)")
def save_directory_is_a_file(tmp_path):
    with save_dir_lock(write(tmp_path / "notes.txt", "not a model\n")):
        pass


@case(CheckpointError, r"notes\.txt: is a file; expected a directory \(save directory\)")
def save_directory_to_read_is_a_file(tmp_path):
    load_options_latest_checkpoint(write(tmp_path / "notes.txt", "not a model\n"))


@case(CheckpointError, r"tuned: no finetune\.json, so no fine-tune to resume there \(a training run continues with "
                       r"restart\)")
def finetune_resume_without_a_record(tmp_path):
    finetune(str(tmp_path / "tuned"), "train.txt", "vocab.txt", "heldout.txt", resume=True)


@case(InputError, r"overwrite \(--overwrite\) and resume \(--resume\) contradict each other")
def finetune_overwrite_and_resume(tmp_path):
    finetune(str(tmp_path / "tuned"), "train.txt", "vocab.txt", "heldout.txt", resume=True, overwrite=True)


@case(CheckpointError, r"tuned: is a fine-tune \(finetune\.json\); continue it with finetune\(\.\.\., resume=True\)")
def restart_of_a_finetune(tmp_path):
    (tmp_path / "tuned").mkdir()
    write(tmp_path / "tuned" / "finetune.json", json.dumps({"evaluations": [], "best": None}))
    restart_training("train.txt", "vocab.txt", str(tmp_path / "tuned"))


# --- outputs ------------------------------------------------------------------------


@case(OutputExistsError, r"out\.txt: already exists; pass overwrite=True \(--overwrite\)")
def output_exists(tmp_path):
    write(tmp_path / "out.txt", "precious")
    with atomic_output(str(tmp_path / "out.txt")):
        pass


@case(OutputError, r"output directory .*missing does not exist")
def output_directory_missing(tmp_path):
    with atomic_output(str(tmp_path / "missing" / "out.txt")):
        pass


@case(OutputError, r"out\.hdf5: is a directory; expected a file name")
def output_is_a_directory(tmp_path):
    (tmp_path / "out.hdf5").mkdir()
    parts_job(tmp_path, {})


@case(OutputExistsError, r"out\.hdf5\.parts: an interrupted run left its parts here; pass resume=True")
def output_parts_left_by_a_killed_run(tmp_path):
    parts_job(tmp_path, {"a": 1})
    parts_job(tmp_path, {"a": 1})


@case(OutputError, r"job\.json: the interrupted run had other inputs or settings: batch_size \(--batch-size\) was "
                  r"64, is 32; resume with the same ones, or pass overwrite=True")
def output_resume_with_other_settings(tmp_path):
    parts_job(tmp_path, {"batch_size": 64})
    parts_job(tmp_path, {"batch_size": 32}, resume=True)


@case(OutputError, r"overwrite and resume contradict each other")
def output_overwrite_and_resume(tmp_path):
    PartsJob(str(tmp_path / "out.hdf5"), {}, overwrite=True, resume=True)


@case(OutputError, r"data\.txt: is the input text of this job \(.*data\.txt\); write the output elsewhere")
def output_is_the_input_text(tmp_path):
    options_path, weights = write_model(tmp_path, make_options())
    data = write(tmp_path / "data.txt", "one line\n")
    dump_bilm_embeddings(None, data, options_path, weights, str(tmp_path / "." / "data.txt"), overwrite=True)


@case(OutputError, r"link\.hdf5: is the weight file of this job")
def output_is_the_weight_file_through_a_link(tmp_path):
    options_path, weights = write_model(tmp_path, make_options())
    (tmp_path / "link.hdf5").symlink_to(weights)
    dump_bilm_embeddings(None, write(tmp_path / "data.txt", "one line\n"), options_path, weights,
                         str(tmp_path / "link.hdf5"), overwrite=True)


@case(OutputLockedError, r"out\.hdf5: is being written by another process \(pid \d+, .*\); wait for it")
def output_being_written_by_another_job(tmp_path):
    with OutputLock(str(tmp_path / "out.hdf5")):  # flock: a second open file conflicts, as another process's
        OutputLock(str(tmp_path / "out.hdf5")).acquire()


@case(InputError, r"b\.hdf5: dataset '1' is also in another shard")
def merge_overlapping_shards(tmp_path):
    for name in ("a", "b"):
        with h5py.File(tmp_path / f"{name}.hdf5", "w") as fout:
            fout["1"] = np.zeros(3)
    merge_shards([str(tmp_path / "a.hdf5"), str(tmp_path / "b.hdf5")], str(tmp_path / "all.hdf5"))


@pytest.mark.parametrize("make_bad_input, error, message", CASES)
def test_bad_input_gets_a_clear_error(tmp_path, make_bad_input, error, message):
    with pytest.raises(error, match=message) as raised:
        make_bad_input(tmp_path)
    text = str(raised.value)
    assert "\n" not in text


def test_a_failed_output_leaves_no_file_and_keeps_an_existing_one(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_output(str(target)) as temporary:
            write(tmp_path / temporary.split("/")[-1], "half")
            raise RuntimeError("killed half way")
    assert list(tmp_path.iterdir()) == []
    write(target, "precious")
    with pytest.raises(RuntimeError):
        with atomic_output(str(target), overwrite=True) as temporary:
            write(tmp_path / temporary.split("/")[-1], "half")
            raise RuntimeError("killed half way")
    assert target.read_text() == "precious" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


# --- warnings and lenient choices ---------------------------------------------------


def test_duplicate_vocabulary_token_at_inference_is_a_warning(tmp_path, caplog):
    vocab = Vocabulary(vocab_file(tmp_path, SPECIALS + ["the", "cat", "the"]))
    assert vocab.word_to_id("the") == 3  # the first line wins; both rows have the same character vectors
    assert "token 'the' is on lines 4 and 6" in caplog.text


def test_unsorted_vocabulary_is_detected_from_the_training_counts(tmp_path):
    rng = np.random.default_rng(0)
    words = [f"w{k:03d}" for k in range(200)]
    counts = {w: int(c) for w, c in zip(words, 1000 / np.arange(1, 201) ** 1.1 + rng.integers(0, 2, 200))}
    by_count = Vocabulary(vocab_file(tmp_path, SPECIALS + sorted(words, key=lambda w: -counts[w])))
    assert frequency_order_warning(by_count, counts) is None
    alphabetical = Vocabulary(vocab_file(tmp_path, SPECIALS + sorted(words, key=lambda w: w[::-1])))
    warning = frequency_order_warning(alphabetical, counts)
    assert warning and re.search(r"vocab\.txt: tokens do not look sorted by descending count", warning)


def test_replaced_encoding_errors_and_kept_empty_lines(tmp_path):
    (tmp_path / "data.txt").write_bytes(b"ok line\nbad \xff byte\n\n   \nend\n")
    reader = DatasetReader(str(tmp_path / "data.txt"), encoding_errors="replace", empty_lines="keep")
    assert reader.scan() == 5
    assert [(i, tokens) for i, _, tokens in reader] == [
        (0, ["ok", "line"]), (1, ["bad", "\ufffd", "byte"]), (2, []), (3, []), (4, ["end"])]
    half = DatasetReader(str(tmp_path / "data.txt"), (1, 2), encoding_errors="replace", empty_lines="keep")
    assert [i for i, _, _ in half] == [1, 3]


def test_latin1_text_keeps_its_accents(tmp_path):
    (tmp_path / "data.txt").write_bytes("café crème\nZürich\n".encode("latin-1"))
    reader = DatasetReader(str(tmp_path / "data.txt"), encoding="latin-1")
    assert [tokens for _, _, tokens in reader] == [["café", "crème"], ["Zürich"]]


def test_untokenized_text_gets_a_warning_and_moses_tokenizes_it(tmp_path, caplog):
    data = write(tmp_path / "data.txt", "Hello, world!\nIt's Mr. Smith's book.\nThe cat sat .\n")
    DatasetReader(data).scan()
    assert re.search(r"data\.txt: 2 of the first 3 lines look untokenized .*'Hello,' on line 1.*--tokenize moses",
                     caplog.text)
    caplog.clear()
    tokenized = DatasetReader(data, tokenize="moses")
    tokenized.scan()
    assert "untokenized" not in caplog.text
    assert [tokens for _, _, tokens in tokenized][:2] == [["Hello", ",", "world", "!"],
                                                          ["It", "'s", "Mr.", "Smith", "'s", "book", "."]]
    DatasetReader(write(tmp_path / "tok.txt", "Mr. Smith 's book .\nThe U.S. economy .\n")).scan()
    assert "untokenized" not in caplog.text


def test_extremely_long_tokens_and_lines_are_taken(tmp_path):
    sentence = ["é" * 10_000] + ["word"] * 20_000
    ids = Batcher(None, 50).batch_sentences([sentence])
    assert ids.shape == (1, 20_003, 50)
    # 48 bytes of the token survive (24 two-byte characters), between begin- and end-of-word.
    assert list(ids[0, 1, :3]) == [259, 0xC3 + 1, 0xA9 + 1] and ids[0, 1, 49] == 260 and ids[0, 1, 48] == 0xA9 + 1


# --- checks at graph building and inside the graph ----------------------------------


def test_batch_larger_than_max_batch_size(tmp_path):
    options_path, weights = write_model(tmp_path, make_options())
    with tf.Graph().as_default():
        model = BidirectionalLanguageModel(options_path, weights, max_batch_size=2)
        with pytest.raises(InputError, match=r"batch size 3; this model's max_batch_size is 2"):
            model(tf.placeholder(tf.int32, (3, None, 50)))
        ids = tf.placeholder(tf.int32, (None, None, 50))
        ops = model(ids)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            with pytest.raises(tf.errors.InvalidArgumentError, match="batch larger than max_batch_size=2"):
                sess.run(ops["lm_embeddings"], {ids: Batcher(None, 50).batch_sentences([["a"], ["b"], ["c"]])})


def test_token_ids_outside_the_embedding_file(tmp_path):
    options_path, weights = write_model(tmp_path, make_options())
    with h5py.File(tmp_path / "tokens.hdf5", "w") as fout:
        fout["embedding"] = np.ones((4, 8), np.float32)
    with tf.Graph().as_default():
        ids = tf.placeholder(tf.int32, (None, None))
        ops = BidirectionalLanguageModel(options_path, weights, use_character_inputs=False,
                                         embedding_weight_file=str(tmp_path / "tokens.hdf5"))(ids)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(ops["lm_embeddings"], {ids: [[1, 2, 4]]})  # ids 1..4 are rows 0..3 (+1 shift)
            with pytest.raises(tf.errors.InvalidArgumentError, match=r"token id outside the 4 rows of .*tokens\.hdf5"):
                sess.run(ops["lm_embeddings"], {ids: [[1, 5, 2]]})
