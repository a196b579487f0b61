"""The bilm command and the bin/ scripts."""
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from bilm.cli import main
from conftest import (REFERENCE_MODEL, REFERENCE_TRAIN, make_options, needs_reference,
                      write_model)

ROOT = Path(__file__).resolve().parents[1]
MODEL_ARGS = ["--options", str(REFERENCE_MODEL / "options.json"), "--weights", str(REFERENCE_MODEL / "lm_weights.hdf5"),
              "--vocab", str(REFERENCE_MODEL / "vocab_test.txt")]


def test_vocab_orders_specials_then_by_count(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("b a c a\nc a\n\nd\n", encoding="utf-8")
    assert main(["vocab", str(corpus), "--output", str(tmp_path / "v.txt")]) == 0
    assert (tmp_path / "v.txt").read_text().split("\n") == ["<S>", "</S>", "<UNK>", "a", "c", "b", "d", ""]
    assert main(["vocab", str(corpus), "--output", str(tmp_path / "v2.txt"), "--min-count", "2"]) == 0
    assert (tmp_path / "v2.txt").read_text().split() == ["<S>", "</S>", "<UNK>", "a", "c"]
    assert main(["vocab", str(corpus), "--output", str(tmp_path / "v3.txt"), "--max-size", "4"]) == 0
    assert (tmp_path / "v3.txt").read_text().split() == ["<S>", "</S>", "<UNK>", "a"]


@needs_reference
def test_embed_modes_shards_and_merge(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("The cat sat .\nA dog .\nHello\nSome more words here .\n", encoding="utf-8")
    out = tmp_path / "out.hdf5"
    assert main(["--quiet", "embed", str(data), str(out)] + MODEL_ARGS) == 0
    with h5py.File(out, "r") as fin:
        assert sorted(fin) == ["0", "1", "2", "3", "sentence_to_index"] and fin["3"].shape == (3, 5, 32)
        warm = fin["1"][...]
    for k in range(2):
        assert main(["--quiet", "embed", str(data), str(tmp_path / f"s{k}.hdf5"), "--shard", f"{k}/2"] + MODEL_ARGS) == 0
    assert main(["merge", str(tmp_path / "all.hdf5"), str(tmp_path / "s0.hdf5"), str(tmp_path / "s1.hdf5")]) == 0
    with h5py.File(tmp_path / "all.hdf5", "r") as fin:
        assert sorted(fin) == ["0", "1", "2", "3", "sentence_to_index"]
        np.testing.assert_allclose(fin["1"][...], warm, atol=1e-6)
    assert main(["--quiet", "embed", str(data), str(tmp_path / "st.hdf5"), "--state-mode", "stateful"]
                + MODEL_ARGS) == 0
    with h5py.File(tmp_path / "st.hdf5", "r") as fin:
        assert not np.allclose(fin["1"][1:], warm[1:], atol=1e-6)  # carried states differ from warm ones


@needs_reference
def test_train_test_restart_dump_weights(tmp_path, capsys):
    save = str(tmp_path / "ckpt")
    common = ["--train_prefix", str(REFERENCE_TRAIN / "data.txt"), "--vocab_file", str(REFERENCE_TRAIN / "vocab.txt"),
              "--save_dir", save]
    small = ["--lstm_dim", "16", "--projection_dim", "8", "--filters", "[[1, 8], [2, 8]]", "--n_highway", "1",
             "--char_embedding_dim", "4", "--batch_size", "2", "--unroll_steps", "5", "--n_negative_samples", "4",
             "--n_epochs", "2", "--log_every", "5", "--seed", "0"]
    assert main(["--quiet", "train"] + common + small) == 0
    assert sorted(p.name for p in Path(save).glob("model.ckpt-*.index")) == ["model.ckpt-27.index"]  # 2 x 139 // 10
    assert main(["--quiet", "restart"] + common + ["--n_epochs", "3"]) == 0
    assert (Path(save) / "model.ckpt-41.index").exists()
    assert main(["--quiet", "test", "--test_prefix", str(REFERENCE_TRAIN / "data.txt"), "--vocab_file",
                 str(REFERENCE_TRAIN / "vocab.txt"), "--save_dir", save, "--batch_size", "2"]) == 0
    assert "perplexity:" in capsys.readouterr().out
    weights = tmp_path / "w.hdf5"
    assert main(["dump-weights", "--save_dir", save, "--outfile", str(weights), "--options_outfile",
                 str(tmp_path / "options.json")]) == 0
    with h5py.File(weights, "r") as fin:
        assert fin["char_embed"].shape == (261, 4) and "softmax" not in fin


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_errors_are_one_line_without_traceback(tmp_path):
    result = _run("-m", "bilm.cli", "embed", "in.txt", str(tmp_path / "o.hdf5"), "--options", "missing.json",
                  "--weights", "w.hdf5", "--vocab", "v.txt")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "bilm: error: missing.json: options file not found"


@pytest.mark.parametrize("script", ["train_elmo.py", "run_test.py", "restart.py", "dump_weights.py"])
def test_bin_scripts_are_thin_wrappers(script):
    result = _run(f"bin/{script}", "--help")
    assert result.returncode == 0 and "--save_dir" in result.stdout


TRAINING = ["--train_prefix", "d.txt", "--vocab_file", "v.txt", "--save_dir", "ckpt"]
EMBED = ["embed", "in.txt", "o.hdf5"]
USAGE_ERRORS = [
    ([], "the following arguments are required: COMMAND"),
    (["embed"], "the following arguments are required: input, output"),
    (EMBED + ["--overwrite", "--resume"], "argument --resume: not allowed with argument --overwrite"),
    (EMBED + ["--batch-size", "0"], "argument --batch-size: expected a positive integer, got 0"),
    (EMBED + ["--shard", "2/2"], "argument --shard: expected 0 <= K < N, got '2/2'"),
    (EMBED + ["--shard", "half"], "argument --shard: expected K/N (e.g. 0/4), got 'half'"),
    (EMBED + ["--state-mode", "fresh"], "argument --state-mode: invalid choice: 'fresh'"),
    (EMBED + ["--empty-lines", "skip"], "argument --empty-lines: invalid choice: 'skip'"),
    (["merge", "out.hdf5"], "the following arguments are required: shards"),
    (["merge", "out.hdf5", "a.hdf5", "--resume"], "unrecognized arguments: --resume"),
    (["dump-token-embeddings"], "the following arguments are required: output"),
    (["dump-token-embeddings", "t.hdf5", "--resume", "--overwrite"], "not allowed with argument --resume"),
    (["train"] + TRAINING[2:], "the following arguments are required: --train_prefix"),
    (["train"] + TRAINING + ["--filters", "[[1,"], "argument --filters: expected JSON"),
    (["train"] + TRAINING + ["--n_gpus", "0"], "argument --n_gpus/--n-gpus: expected a positive integer, got 0"),
    (["train"] + TRAINING + ["--batch_size", "x"], "argument --batch_size/--batch-size: expected a positive integer"),
    (["train"] + TRAINING + ["--n_highway", "-1"], "argument --n_highway/--n-highway: expected a non-negative"),
    (["restart", "--save_dir", "ckpt"], "required: --train_prefix/--train-prefix, --vocab_file/--vocab-file"),
    (["test", "--save_dir", "ckpt"], "required: --test_prefix/--test-prefix, --vocab_file/--vocab-file"),
    (["dump-weights", "--save_dir", "ckpt"], "the following arguments are required: --outfile"),
    (["vocab", "--output", "v.txt"], "the following arguments are required: inputs"),
    (["vocab", "a.txt", "--output", "v.txt", "--min-count", "-1"], "argument --min_count/--min-count: expected a"),
]


@pytest.mark.parametrize("argv, message", USAGE_ERRORS, ids=[" ".join(a) or "nothing" for a, _ in USAGE_ERRORS])
def test_missing_or_contradictory_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("bilm") and message in error


def test_outputs_are_not_overwritten_and_runs_resume(tmp_path, capsys):
    options_file, weight_file = write_model(tmp_path / "model", make_options())
    data = tmp_path / "data.txt"
    data.write_text("a first line\nand a second one\n", encoding="utf-8")
    out = tmp_path / "out.hdf5"
    model = ["--options", options_file, "--weights", weight_file]
    assert main(["--quiet", "embed", str(data), str(out)] + model) == 0
    first = out.read_bytes()
    assert main(["--quiet", "embed", str(data), str(out)] + model) == 2
    expected = f"bilm: error: {out}: already exists; pass overwrite=True (--overwrite) to replace it"
    assert capsys.readouterr().err.strip() == expected
    assert out.read_bytes() == first
    assert main(["embed", str(data), str(out), "--resume", "--quiet"] + model) == 0  # complete: nothing to do
    assert main(["--quiet", "embed", str(data), str(out), "--overwrite", "--state-mode", "zero"]
                + model) == 0
    with h5py.File(out, "r") as fin:
        assert sorted(fin) == ["0", "1", "sentence_to_index"] and fin["1"].shape == (3, 4, 16)
    data.write_text("a first line\n\nthird\n", encoding="utf-8")
    assert main(["--quiet", "embed", str(data), str(tmp_path / "o2.hdf5")] + model) == 2
    assert f"{data}, line 2: empty line" in capsys.readouterr().err
    assert main(["--quiet", "embed", str(data), str(tmp_path / "o2.hdf5"), "--empty-lines", "keep"] + model) == 0
    with h5py.File(tmp_path / "o2.hdf5", "r") as fin:
        assert fin["1"].shape == (3, 0, 16) and fin["2"].shape == (3, 1, 16)
    vocab = tmp_path / "vocab.txt"
    assert main(["vocab", str(data), "--output", str(vocab)]) == 0
    assert main(["vocab", str(data), "--output", str(vocab)]) == 2
    assert main(["vocab", str(data), "--output", str(vocab), "--overwrite"]) == 0


def test_dump_token_embeddings_command_gives_layer_zero_of_embed(tmp_path):
    options_file, weight_file = write_model(tmp_path / "model", make_options(), seed=7)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("<S>\n</S>\n<UNK>\nthe\ncat\nnaïve\n", encoding="utf-8")
    model = ["--options", options_file, "--weights", weight_file, "--vocab", str(vocab)]
    assert main(["--quiet", "dump-token-embeddings", str(tmp_path / "tokens.hdf5")] + model) == 0
    data = tmp_path / "data.txt"
    data.write_text("naïve cat the\n", encoding="utf-8")
    assert main(["--quiet", "embed", str(data), str(tmp_path / "out.hdf5"), "--state-mode", "zero"] + model) == 0
    with h5py.File(tmp_path / "tokens.hdf5", "r") as tokens, h5py.File(tmp_path / "out.hdf5", "r") as out:
        assert tokens["embedding"].shape == (6, 8)
        layer0 = out["0"][0, :, :8]  # layer 0 is [token embedding, token embedding]
        np.testing.assert_allclose(tokens["embedding"][...][[5, 4, 3]], layer0, atol=1e-6)
