"""Training runs that lose nothing: signals, errors mid-run, divergence, restarts with other settings, full disks."""
import json
import re
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import h5py  # noqa: F401 (h5py before TensorFlow, as the library imports them)
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm.checkpoints import latest_checkpoint, load_options_latest_checkpoint
from bilm.cli import main
from bilm.errors import CheckpointError, TrainingError, VocabularyError
from bilm.lm_dataset import load_vocab
from bilm.training import train
from bilm.data import BidirectionalLMDataset
from conftest import TINY_CORPUS

ROOT = Path(__file__).resolve().parents[1]
VOCAB = str(TINY_CORPUS.with_name("tiny_vocab.txt"))
TEXT = TINY_CORPUS.read_text(encoding="utf-8")
TOKENS_PER_EPOCH = len(TEXT.split()) + len(TEXT.splitlines())  # the </S> targets count too
SMALL = ["--lstm_dim", "16", "--projection_dim", "8", "--filters", "[[1, 8], [2, 8]]", "--n_highway", "1",
         "--char_embedding_dim", "4", "--batch_size", "2", "--unroll_steps", "5", "--n_negative_samples", "4",
         "--seed", "0"]


def common(save, corpus=TINY_CORPUS, vocab=VOCAB):
    return ["--train_prefix", str(corpus), "--vocab_file", str(vocab), "--save_dir", str(save)]


def stored(ckpt_file, name):
    return tf.train.load_checkpoint(ckpt_file).get_tensor(name)


def all_finite(ckpt_file):
    reader = tf.train.load_checkpoint(ckpt_file)
    return all(np.isfinite(reader.get_tensor(name)).all() for name in reader.get_variable_to_shape_map())


def start_training(*args):
    return subprocess.Popen([sys.executable, "-m", "bilm.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_line(process, text, timeout=180):
    """Read the process's stderr until a line contains ``text``; return the lines read."""
    import time
    deadline, lines = time.time() + timeout, []
    while time.time() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no {text!r} in: {''.join(lines)}")


@pytest.mark.parametrize("signum, status, word", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                  (signal.SIGINT, 130, "interrupted")])
def test_a_signal_saves_the_last_batch_and_restart_finishes_the_plan(tmp_path, signum, status, word):
    save = tmp_path / "ckpt"
    epochs = 12
    process = start_training("train", *common(save), *SMALL, "--n_epochs", str(epochs), "--log_every", "3",
                             "--checkpoint_every", "100000")
    wait_for_line(process, "batch 6/")
    process.send_signal(signum)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == status and "Traceback" not in rest, rest
    message = rest.strip().splitlines()[-1]
    assert message.startswith(f"bilm: {word}; saved ") and "continue with: bilm restart" in message, message
    _, ckpt = load_options_latest_checkpoint(str(save))
    step = int(stored(ckpt, "global_step"))
    assert step >= 6 and f"after batch {step} " in message and all_finite(ckpt)
    assert int(stored(ckpt, "tokens_trained")) == step * 10
    # The command the message gives, as given, finishes the run's plan: the same steps and tokens as
    # an uninterrupted run of these options (epochs x tokens per epoch, in batches of 2 x 5 tokens).
    command = shlex.split(message.split("continue with: ")[1])
    assert command[:2] == ["bilm", "restart"]
    assert main(["--quiet"] + command[1:]) == 0
    _, ckpt = load_options_latest_checkpoint(str(save))
    steps = epochs * TOKENS_PER_EPOCH // 10
    assert ckpt.endswith(f"model.ckpt-{steps}")
    assert int(stored(ckpt, "global_step")) == steps and int(stored(ckpt, "tokens_trained")) == steps * 10


def test_an_error_mid_run_saves_then_says_how_to_continue(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(TEXT * 8, encoding="utf-8")
    (corpus / "b.txt").write_bytes(TEXT.encode("utf-8") + b"a line with a bad \xff byte .\n")
    save = tmp_path / "ckpt"
    # --n_train_tokens given: nothing scans the files first, the bad line is met when its shard is read
    # (with seed 1, after the other shard: the shard order is seeded).
    status = main(["--quiet", "train", *common(save, corpus / "*.txt"), *SMALL, "--n_train_tokens", "2000",
                   "--checkpoint_every", "100000", "--seed", "1"])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2
    assert "b.txt, line 6: not valid UTF-8" in message and "; saved " in message and "continue with: " in message
    assert latest_checkpoint(str(save)) is not None


def test_divergence_stops_at_once_and_never_saves_non_finite_weights(tmp_path):
    options = json.loads(json.dumps(_options(learning_rate=1e30, n_batches=40)))
    save = str(tmp_path / "ckpt")
    with pytest.raises(TrainingError, match=r"training diverged at batch \d+: train perplexity .*the latest "
                                            r"checkpoint .* is the last good one") as raised:
        train(options, _dataset(options), 1, save, save, checkpoint_every=1, seed=0)
    batch = int(re.search(r"diverged at batch (\d+)", str(raised.value)).group(1))
    paths = sorted(Path(save).glob("model.ckpt-*.index"))
    assert paths, "the batches before the divergence were saved"
    # Stopped at once: the last checkpoint is the batch before, and the message names it.
    assert tf.train.latest_checkpoint(save).endswith(f"model.ckpt-{batch - 1}")
    assert f"model.ckpt-{batch - 1}" in str(raised.value)
    assert all(all_finite(str(p)[: -len(".index")]) for p in paths)


def test_non_finite_options_are_refused(capsys):
    for flag, value in (("--dropout", "nan"), ("--learning_rate", "nan"), ("--learning_rate", "inf")):
        with pytest.raises(SystemExit):
            main(["train", "--train_prefix", "x", "--vocab_file", "v", "--save_dir", "s", flag, value])
        assert "expected a" in capsys.readouterr().err


def test_overwrite_checks_everything_before_removing_the_old_run(tmp_path, capsys):
    save = tmp_path / "ckpt"
    assert main(["--quiet", "train", *common(save), *SMALL, "--n_epochs", "1"]) == 0
    before = sorted(p.name for p in save.iterdir())
    status = main(["--quiet", "train", *common(save), *SMALL, "--n_epochs", "1", "--overwrite",
                   "--n_negative_samples", "8192"])  # the default: more than this vocabulary's 43 tokens
    assert status == 2 and "'n_negative_samples_batch' is 8192, more than the 43 tokens" in capsys.readouterr().err
    assert sorted(p.name for p in save.iterdir()) == before  # the old model is still there


def test_restart_and_test_refuse_another_vocabulary(tmp_path, capsys):
    save = tmp_path / "ckpt"
    assert main(["--quiet", "train", *common(save), *SMALL, "--n_epochs", "1"]) == 0
    tokens = Path(VOCAB).read_text(encoding="utf-8").split()
    shuffled = tmp_path / "shuffled.txt"
    shuffled.write_text("\n".join(tokens[:3] + tokens[3:][::-1]) + "\n", encoding="utf-8")
    bigger = tmp_path / "bigger.txt"
    bigger.write_text("\n".join(tokens + ["extra"]) + "\n", encoding="utf-8")
    for vocab, expected in ((shuffled, "same number of tokens, in another order"),
                            (bigger, "44 tokens, more than the 43 rows of the model's softmax")):
        assert main(["--quiet", "test", "--test_prefix", str(TINY_CORPUS), "--vocab_file", str(vocab), "--save_dir",
                     str(save), "--batch_size", "2"]) == 2
        assert expected in capsys.readouterr().err
        assert main(["--quiet", "restart", *common(save, vocab=vocab), "--n_epochs", "2"]) == 2
        assert expected in capsys.readouterr().err


def test_restart_with_another_batch_size_trains_the_tokens_left(tmp_path):
    save = tmp_path / "ckpt"
    assert main(["--quiet", "train", *common(save), *SMALL, "--n_epochs", "1"]) == 0
    first = TOKENS_PER_EPOCH // 10
    assert main(["--quiet", "restart", *common(save), "--n_epochs", "2", "--batch_size", "4"]) == 0
    _, ckpt = load_options_latest_checkpoint(str(save))
    tokens = int(stored(ckpt, "tokens_trained"))
    # 2 epochs of tokens in all: first 1 epoch in batches of 10 tokens, then what is left in batches of 20.
    assert 2 * TOKENS_PER_EPOCH - 20 < tokens <= 2 * TOKENS_PER_EPOCH
    assert int(stored(ckpt, "global_step")) == first + (2 * TOKENS_PER_EPOCH - first * 10) // 20


def test_restore_checks_shapes_against_the_options(tmp_path, capsys):
    save = tmp_path / "ckpt"
    assert main(["--quiet", "train", *common(save), *SMALL, "--n_epochs", "1"]) == 0
    options = json.loads((save / "options.json").read_text())
    options["lstm"]["dim"] = 32
    (save / "options.json").write_text(json.dumps(options))
    assert main(["--quiet", "restart", *common(save), "--n_epochs", "2"]) == 2
    error = capsys.readouterr().err.strip()
    assert "variable 'lm/RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0' has shape (16, 64); the options need (16, 128)" \
        in error and "Traceback" not in error


def test_a_broken_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, caplog):
    save = tmp_path / "ckpt"
    assert main(["--quiet", "train", *common(save), *SMALL, "--n_epochs", "1", "--checkpoint_every", "5"]) == 0
    latest, older = [p for p in sorted(save.glob("model.ckpt-*.index"), key=lambda p: -int(p.name.split("-")[1]
                                                                                            .split(".")[0]))]
    data = Path(str(latest).replace(".index", ".data-00000-of-00001"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # a partial copy
    assert latest_checkpoint(str(save)) == str(older)[: -len(".index")]
    assert "is truncated" in caplog.text and "using the newest intact checkpoint" in caplog.text
    Path(str(older).replace(".index", ".data-00000-of-00001")).unlink()
    with pytest.raises(CheckpointError, match=r"data file is truncated .*; no intact checkpoint is left"):
        load_options_latest_checkpoint(str(save))


def test_a_restart_from_an_earlier_checkpoint_never_names_a_later_one_latest(tmp_path):
    from bilm.trainer import _Checkpoints

    with tf.Graph().as_default():
        step = tf.train.get_or_create_global_step()
        graph = {"global_step": step, "weights_finite": tf.constant(True)}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            first = _Checkpoints(sess, graph, str(tmp_path), keep=2)
            for value in (10, 20):
                step.load(value, sess)
                first.save()
            restarted = _Checkpoints(sess, graph, str(tmp_path), keep=2)  # restarted from model.ckpt-10
            step.load(15, sess)
            assert restarted.save() == str(tmp_path / "model.ckpt-15")
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-15")
    assert sorted(p.name for p in tmp_path.glob("*.index")) == ["model.ckpt-10.index", "model.ckpt-15.index"]


def test_checkpoints_are_bounded_across_restarts(tmp_path):
    save = tmp_path / "ckpt"
    assert main(["--quiet", "train", *common(save), *SMALL, "--n_epochs", "1", "--checkpoint_every", "2",
                 "--keep_checkpoints", "3"]) == 0
    for epochs in (2, 3):
        assert main(["--quiet", "restart", *common(save), "--n_epochs", str(epochs), "--checkpoint_every", "2",
                     "--keep_checkpoints", "3"]) == 0
    assert len(list(save.glob("model.ckpt-*.index"))) == 3


def test_a_full_disk_during_a_checkpoint_is_one_line_and_leaves_nothing_half_written(tmp_path, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        save = disk / "ckpt"
        args = ["train", *common(save), *SMALL, "--n_epochs", "2", "--checkpoint_every", "5", "--lstm_dim", "32",
                "--projection_dim", "16", "--log_dir", str(tmp_path / "logs")]
        assert main(["--quiet"] + args) == 0
        size = sum(f.stat().st_size for f in save.glob("model.ckpt-*"))
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * max(0, free - size // 4))  # room for a quarter of a checkpoint
        process = subprocess.run([sys.executable, "-m", "bilm.cli", "--quiet", "restart", *common(save),
                                  "--n_epochs", "4", "--checkpoint_every", "5", "--log_dir", str(tmp_path / "logs")],
                                 cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert process.returncode == 2, process.stderr
        message = process.stderr.strip().splitlines()[-1]
        assert "cannot write checkpoint model.ckpt-" in message and "No space left on device" in message
        assert "the latest complete checkpoint is" in message and "Traceback" not in process.stderr
        assert not [p for p in save.iterdir() if "temp" in p.name or p.name.endswith(".tmp")]
        (disk / "filler").unlink()
        assert main(["--quiet", "restart", *common(save), "--n_epochs", "4", "--log_dir", str(tmp_path / "logs")]) == 0
        _, ckpt = load_options_latest_checkpoint(str(save))
        assert int(stored(ckpt, "tokens_trained")) == 4 * TOKENS_PER_EPOCH // 10 * 10
        # TensorBoard events on a full disk: an error too, not a silent gap in the curves.
        (disk / "filler").write_bytes(b"\0" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize))
        elsewhere = common(tmp_path / "other") + SMALL + ["--n_epochs", "1", "--log_dir", str(disk / "logs")]
        assert main(["--quiet", "train"] + elsewhere) == 2
        assert "TensorBoard events cannot be written (is the disk full?)" in capsys.readouterr().err
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def _options(**changes):
    n_batches = changes.pop("n_batches", 20)
    options = {
        "bidirectional": True, "dropout": 0.0, "all_clip_norm_val": 10.0,
        "char_cnn": {"activation": "relu", "embedding": {"dim": 4}, "filters": [[1, 8], [2, 8]],
                     "max_characters_per_token": 50, "n_characters": 261, "n_highway": 1},
        "lstm": {"dim": 16, "projection_dim": 8, "n_layers": 2, "cell_clip": 3, "proj_clip": 3},
        "n_epochs": 1, "n_train_tokens": n_batches * 10, "batch_size": 2, "unroll_steps": 5,
        "n_tokens_vocab": load_vocab(VOCAB).size, "n_negative_samples_batch": 4,
    }
    options.update(changes)
    return options


def _dataset(options):
    return BidirectionalLMDataset(str(TINY_CORPUS), load_vocab(VOCAB, 50), shuffle_on_load=True)


def test_vocabulary_larger_than_the_softmax_is_an_error_not_a_traceback(tmp_path):
    save = tmp_path / "ckpt"
    assert main(["--quiet", "train", *common(save), *SMALL, "--n_epochs", "1"]) == 0
    options, _ = load_options_latest_checkpoint(str(save))
    with pytest.raises(VocabularyError, match="more than the 43 rows"):
        from bilm.checkpoints import check_vocabulary
        from bilm.options import ModelOptions
        vocab = tmp_path / "v.txt"
        vocab.write_text(Path(VOCAB).read_text() + "one\ntwo\n")
        check_vocabulary(str(save), load_vocab(str(vocab)), ModelOptions(options, training=True))
