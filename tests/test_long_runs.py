"""Training runs that lose nothing: signals, errors mid-run, divergence, restarts with other settings, full disks."""
import itertools
import json
import logging
import re
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py  # noqa: F401 (h5py before TensorFlow, as the library imports them)
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm.training.checkpoints import latest_checkpoint, load_options_latest_checkpoint
from bilm.cli import main
from bilm.errors import CheckpointError, TrainingError, VocabularyError
from bilm.training.evaluation import evaluate_checkpoint
from bilm.training.dataset import load_vocab
from bilm.training import train
from bilm.data import BidirectionalLMDataset
from conftest import SMALL, TINY_CORPUS, TINY_VOCAB, copy_run

ROOT = Path(__file__).resolve().parents[1]
VOCAB = str(TINY_VOCAB)
TEXT = TINY_CORPUS.read_text(encoding="utf-8")
TOKENS_PER_EPOCH = len(TEXT.split()) + len(TEXT.splitlines())  # the </S> targets count too


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
                   "--checkpoint_every", "100000", "--seed", "1", "--precision", "bfloat16"])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2
    assert "b.txt, line 6: not valid UTF-8" in message and "; saved " in message and "continue with: " in message
    assert message.endswith("--precision bfloat16")  # the command to continue keeps the run's precision
    assert latest_checkpoint(str(save)) is not None


def test_non_finite_loss_stops_at_once_and_keeps_the_weights_before_the_update_that_broke(tmp_path):
    options = _options(n_batches=10)
    save = str(tmp_path / "ckpt")
    train(options, _dataset(options), 1, save, save, seed=0)  # 10 good batches: model.ckpt-10
    good = stored(f"{save}/model.ckpt-10", "lm/softmax/W")
    exploding = dict(options, learning_rate=1e30, n_train_tokens=40 * 10)
    with pytest.raises(TrainingError) as raised:
        train(exploding, _dataset(options), 1, save, save, restart_ckpt_file=f"{save}/model.ckpt-10",
              checkpoint_every=1, seed=0)
    message = str(raised.value)
    batch = int(re.search(r"^training diverged at batch (\d+): loss \S+, gradient norm \S+: not finite", message).group(1))
    assert batch <= 13, message  # at once, without a warm-up
    # Batch 11 was applied (its loss was good) and ruined the weights; model.ckpt-11 was written, then never
    # confirmed by a good batch: it is gone, and the weights before it stay the latest.
    assert "the last good checkpoint, " + f"{save}/model.ckpt-10, was saved: it stays the latest" in message
    assert tf.train.latest_checkpoint(save) == f"{save}/model.ckpt-10"
    assert sorted(p.name for p in Path(save).glob("model.ckpt-*.index")) == ["model.ckpt-10.index"]
    np.testing.assert_array_equal(stored(f"{save}/model.ckpt-10", "lm/softmax/W"), good)


def judged_batches(monkeypatch):
    """The (step, loss) of every batch a training run's DivergenceWatch judges, in order: what a failed
    assertion about a divergence shows, to tell a mislabelled batch from a loss that behaved otherwise."""
    from bilm.training.divergence import DivergenceWatch
    judged, judge = [], DivergenceWatch.judge

    def recording(self, step, loss, *args, **kwargs):
        judged.append((step, round(loss, 3)))
        return judge(self, step, loss, *args, **kwargs)

    monkeypatch.setattr(DivergenceWatch, "judge", recording)
    return judged


def test_a_diverging_run_stops_with_one_line_and_never_keeps_a_diverged_checkpoint(tmp_path, capsys, monkeypatch,
                                                                                   small_run):
    # The tiny model at --learning_rate 1e8: its loss is finite (exp overflows: train perplexity inf) but
    # far worse than guessing, from the second batch on.
    judged = judged_batches(monkeypatch)
    save = tmp_path / "ckpt"
    diverging = ["--quiet", "train", *common(save), *SMALL, "--n_epochs", "24", "--checkpoint_every", "1"]
    assert main(diverging + ["--learning_rate", "1e8"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bilm: error: training diverged at batch 21: loss "), (lines, judged)
    assert "above ln(2 x 43) = 4.45, worse than guessing uniformly" in lines[0] and "since batch 2;" in lines[0], judged
    assert "no checkpoint of this run is known to be good, so none was kept" in lines[0]
    judged.clear()
    assert not list(save.glob("model.ckpt-*")) and not (save / "checkpoint").exists()
    # From a good checkpoint (1 epoch of these options): the run that diverges after it names it, and it
    # stays the latest.
    shutil.rmtree(save)
    copy_run(small_run, save)
    steps = TOKENS_PER_EPOCH // 10
    kept = sorted(p.name for p in save.glob("model.ckpt-*.index"))
    assert kept[-1] == f"model.ckpt-{steps}.index"
    options = json.loads((save / "options.json").read_text())
    (save / "options.json").write_text(json.dumps(dict(options, learning_rate=1e8)))
    assert main(["--quiet", "restart", *common(save), "--n_epochs", "24", "--checkpoint_every", "1"]) == 2
    message = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"bilm: error: training diverged at batch {steps + 21}: loss \S+, above ln\(2 x 43\) = "
                        rf"4\.45, .* since batch {steps + 2}; nothing after the last good checkpoint, "
                        rf"{save}/model\.ckpt-{steps}, was saved: it stays the latest \(a lower learning rate may "
                        rf"help\)", message), (message, judged)
    assert tf.train.latest_checkpoint(str(save)) == f"{save}/model.ckpt-{steps}"
    assert sorted(p.name for p in save.glob("model.ckpt-*.index")) == kept  # none of the diverged run's


class PoisonedShard:
    """Batches of the tiny corpus, with a window of garbage (random vocabulary words) from batch ``at`` on:
    a shard that makes a run diverge once. Records how often its batches are read from the start."""

    def __init__(self, vocab, garbage_file, at=None, length=30):
        self.vocab, self.garbage_file, self.at, self.length, self.passes = vocab, garbage_file, at, length, 0

    def iter_batches(self, batch_size, num_steps):
        self.passes += 1
        clean = BidirectionalLMDataset(str(TINY_CORPUS), self.vocab, shuffle_on_load=True)
        garbage = BidirectionalLMDataset(str(self.garbage_file), self.vocab, test=True)
        clean, garbage = clean.iter_batches(batch_size, num_steps), garbage.iter_batches(batch_size, num_steps)
        for k in itertools.count():
            poisoned = self.at is not None and self.at <= k < self.at + self.length
            yield next(garbage) if poisoned else next(clean)


def test_rollback_skips_the_window_that_diverged_and_ends_as_a_clean_run(tmp_path, caplog):
    vocab = load_vocab(VOCAB)
    rng = np.random.default_rng(0)
    words = [vocab.id_to_word(i) for i in range(3, vocab.size)]
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("\n".join(" ".join(rng.choice(words, 30)) for _ in range(60)) + "\n", encoding="utf-8")
    # A token model, full softmax, 1,600 batches of 8 x 5 tokens: it ends near its floor (a perplexity of
    # about 1.4-4 on this 43-token vocabulary). Its end is sensitive to float rounding (measured: clean
    # runs whose gradients agree to 1e-5 ended at 1.49, 1.82 and 2.29 after 800 batches; after 1,600 a
    # clean run and its rolled-back twin ended at 1.41 and 1.63 with one summation order, 3.88 and 2.09
    # with another), so the rolled-back run is held to a finite perplexity within 3x of the clean one's.
    options = {"bidirectional": True, "dropout": 0.0, "all_clip_norm_val": 10.0, "sample_softmax": False,
               "lstm": {"dim": 16, "projection_dim": 8, "n_layers": 2, "cell_clip": 3, "proj_clip": 3},
               "n_epochs": 1, "n_train_tokens": 1600 * 40, "batch_size": 8, "unroll_steps": 5,
               "n_tokens_vocab": vocab.size}

    def run(name, at, on_divergence):
        data = PoisonedShard(vocab, garbage, at)
        train(options, data, 1, str(tmp_path / name), str(tmp_path / name), checkpoint_every=10, seed=0,
              on_divergence=on_divergence)
        return evaluate_checkpoint(str(tmp_path / name), str(TINY_CORPUS), VOCAB, batch_size=1), data

    clean, _ = run("clean", None, "stop")
    # Garbage from batch 401: the loss leaps above ln(2V) and the run diverges after 5 such batches.
    with pytest.raises(TrainingError, match=r"diverged at batch 405: loss .* since batch 401; nothing after the last "
                                            r"good checkpoint, .*/model.ckpt-390, was saved"):
        run("stopped", 400, "stop")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bilm.training.loop"):
        rolled_back, data = run("rolled_back", 400, "rollback")
    warnings = [r.getMessage() for r in caplog.records if "rolled back" in r.getMessage()]
    assert len(warnings) == 1, warnings
    skipped = int(re.search(r"rolled back to .*/model\.ckpt-390 \(rollback 1 of at most 3\) and skipped the next "
                            r"(\d+) batch", warnings[0]).group(1))
    assert 25 <= skipped <= 30  # the rest of the window (batches 406 to 430), and no more than a few after it
    assert data.passes == 1  # the data went on from where it was: nothing was read twice
    assert tf.train.latest_checkpoint(str(tmp_path / "rolled_back")).endswith("model.ckpt-1600")
    assert np.isfinite(rolled_back) and rolled_back < 3 * clean, (rolled_back, clean)


def test_the_divergence_watch_judges_streaks_after_the_warm_up():
    from bilm.training.divergence import DIVERGED_AFTER, WARMUP_BATCHES, DivergenceWatch

    watch = DivergenceWatch(100)  # bound ln(200) = 5.30
    for step in range(1, WARMUP_BATCHES + 1):  # the warm-up: a streak is noted, never judged
        assert watch.judge(step, 6.0) is None
    assert watch.bad and len(watch.streak) == WARMUP_BATCHES
    for step in range(WARMUP_BATCHES + 1, WARMUP_BATCHES + 60):
        assert watch.judge(step, 1.0) is None  # good: the streak ends
    assert not watch.bad
    assert watch.judge(99, 3.2) is None  # a perplexity under 10 x e: not a spike (the mean is now 62.2 / 60)
    verdicts = [watch.judge(100 + k, 3.5) for k in range(DIVERGED_AFTER)]  # over 10 x exp(1.0367) = 28.2
    assert verdicts[:-1] == [None] * (DIVERGED_AFTER - 1)
    assert verdicts[-1] == f"loss 3.5, a perplexity over 10 x 2.82, that of the mean loss 1.04 of the 60 good " \
                           f"batches before, for {DIVERGED_AFTER} batches since batch 100"
    late = DivergenceWatch(100)  # a run that ends in a streak has diverged, warm-up or not
    assert [late.judge(k, 9.0, last=k == DIVERGED_AFTER) is None for k in range(1, DIVERGED_AFTER + 1)] == \
        [True] * (DIVERGED_AFTER - 1) + [False]
    assert "not finite" in DivergenceWatch(100).judge(1, 2.0, grad_norm=float("nan"))


def test_a_failed_train_leaves_no_save_directory(tmp_path, capsys):
    save = tmp_path / "new" / "ckpt"
    assert main(["--quiet", "train", *common(save, corpus=tmp_path / "nothing*.txt"), *SMALL]) == 2
    assert "no training file matches" in capsys.readouterr().err
    assert not save.exists()
    save.mkdir(parents=True)  # a directory that was there before is kept
    assert main(["--quiet", "train", *common(save, corpus=tmp_path / "nothing*.txt"), *SMALL]) == 2
    assert save.is_dir() and not list(save.iterdir())


def test_messages_name_relative_save_directories_once(tmp_path, monkeypatch, capsys, caplog, small_run):
    monkeypatch.chdir(tmp_path)
    copy_run(small_run, Path("s1x"))  # 1 epoch, checkpoints 6 and 8
    steps = TOKENS_PER_EPOCH // 10
    for name in Path("s1x").glob(f"model.ckpt-{steps}.data-*"):
        name.unlink()
    assert main(["--quiet", "test", "--test_prefix", str(TINY_CORPUS), "--vocab_file", VOCAB, "--save_dir", "s1x",
                 "--batch_size", "2"]) == 0
    assert f"s1x/model.ckpt-{steps}: its data file model.ckpt-{steps}.data-00000-of-00001 is missing; using the " \
           f"newest intact checkpoint, s1x/model.ckpt-6" in caplog.text
    for name in Path("s1x").glob("model.ckpt-*"):
        name.unlink()
    assert main(["--quiet", "test", "--test_prefix", str(TINY_CORPUS), "--vocab_file", VOCAB, "--save_dir", "s1x",
                 "--batch_size", "2"]) == 2
    assert capsys.readouterr().err == f"bilm: error: s1x/model.ckpt-{steps}: its index file model.ckpt-{steps}.index " \
                                      f"is missing; no intact checkpoint is left in s1x\n"


def test_non_finite_options_are_refused(capsys):
    for flag, value in (("--dropout", "nan"), ("--learning_rate", "nan"), ("--learning_rate", "inf")):
        with pytest.raises(SystemExit):
            main(["train", "--train_prefix", "x", "--vocab_file", "v", "--save_dir", "s", flag, value])
        assert "expected a" in capsys.readouterr().err


def test_overwrite_checks_everything_before_removing_the_old_run(tmp_path, capsys, small_run):
    save = copy_run(small_run, tmp_path / "ckpt")
    before = sorted(p.name for p in save.iterdir())
    status = main(["--quiet", "train", *common(save), *SMALL, "--n_epochs", "1", "--overwrite",
                   "--n_negative_samples", "8192"])  # the default: more than this vocabulary's 43 tokens
    assert status == 2 and "'n_negative_samples_batch' is 8192, more than the 43 tokens" in capsys.readouterr().err
    assert sorted(p.name for p in save.iterdir()) == before  # the old model is still there


def test_restart_and_test_refuse_another_vocabulary(tmp_path, capsys, small_run):
    save = copy_run(small_run, tmp_path / "ckpt")
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


def test_restart_with_another_batch_size_trains_the_tokens_left(tmp_path, small_run):
    save = copy_run(small_run, tmp_path / "ckpt")  # 1 epoch in batches of 2 x 5 tokens
    first = TOKENS_PER_EPOCH // 10
    assert main(["--quiet", "restart", *common(save), "--n_epochs", "2", "--batch_size", "4"]) == 0
    _, ckpt = load_options_latest_checkpoint(str(save))
    tokens = int(stored(ckpt, "tokens_trained"))
    # 2 epochs of tokens in all: first 1 epoch in batches of 10 tokens, then what is left in batches of 20.
    assert 2 * TOKENS_PER_EPOCH - 20 < tokens <= 2 * TOKENS_PER_EPOCH
    assert int(stored(ckpt, "global_step")) == first + (2 * TOKENS_PER_EPOCH - first * 10) // 20


def test_restart_of_a_finished_run_says_so_instead_of_a_perplexity_of_nan(tmp_path, caplog, small_run):
    save = copy_run(small_run, tmp_path / "ckpt")  # 1 epoch: every batch trained
    steps = TOKENS_PER_EPOCH // 10
    with caplog.at_level(logging.INFO, logger="bilm"):
        assert main(["restart", *common(save)]) == 0
    assert f"nothing left to train: {steps * 10} of {TOKENS_PER_EPOCH} tokens trained (less than a batch of 10 " \
           f"left); latest checkpoint {save}/model.ckpt-{steps}" in caplog.text
    assert "nan" not in caplog.text and "trained 0 batches" not in caplog.text
    assert load_options_latest_checkpoint(str(save))[1] == f"{save}/model.ckpt-{steps}"
    # Trained for 2 epochs, then restarted for 1: it says so, not that less than a batch is left.
    assert main(["--quiet", "restart", *common(save), "--n_epochs", "2"]) == 0
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bilm"):
        assert main(["restart", *common(save), "--n_epochs", "1"]) == 0
    steps = 2 * TOKENS_PER_EPOCH // 10
    assert f"nothing left to train: {steps * 10} of {TOKENS_PER_EPOCH} tokens trained (already past the 1 epoch(s) " \
           f"asked for: pass a larger --n_epochs to train more); latest checkpoint {save}/model.ckpt-{steps}" \
           in caplog.text, caplog.text


def test_restore_checks_shapes_against_the_options(tmp_path, capsys, small_run):
    save = copy_run(small_run, tmp_path / "ckpt")
    options = json.loads((save / "options.json").read_text())
    options["lstm"]["dim"] = 32
    (save / "options.json").write_text(json.dumps(options))
    assert main(["--quiet", "restart", *common(save), "--n_epochs", "2"]) == 2
    error = capsys.readouterr().err.strip()
    assert "variable 'lm/RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0' has shape (16, 64); the options need (16, 128)" \
        in error and "Traceback" not in error


def test_a_broken_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, caplog, small_run):
    save = copy_run(small_run, tmp_path / "ckpt")  # two checkpoints
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
    from bilm.training.loop import _Checkpoints

    with tf.Graph().as_default():
        step = tf.train.get_or_create_global_step()
        graph = {"global_step": step, "weights_finite": tf.constant(True)}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            first = _Checkpoints(sess, graph, str(tmp_path), keep=2)
            for value in (10, 20):
                step.load(value, sess)
                first.save(publish=True)
            restarted = _Checkpoints(sess, graph, str(tmp_path), keep=2)  # restarted from model.ckpt-10
            step.load(15, sess)
            assert restarted.save(publish=True) == str(tmp_path / "model.ckpt-15")
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-15")
    assert sorted(p.name for p in tmp_path.glob("*.index")) == ["model.ckpt-10.index", "model.ckpt-15.index"]


def test_checkpoints_are_bounded_across_restarts(tmp_path, small_run):
    save = copy_run(small_run, tmp_path / "ckpt")  # a run that kept 2 checkpoints
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
        capsys.readouterr()
        assert main(["--quiet", "restart", *common(save), "--n_epochs", "4", "--checkpoint_every", "5", "--log_dir",
                     str(tmp_path / "logs")]) == 2
        stderr = capsys.readouterr().err
        message = stderr.strip().splitlines()[-1]
        assert "cannot write checkpoint model.ckpt-" in message and "No space left on device" in message
        assert "the latest complete checkpoint is" in message and "Traceback" not in stderr
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


def test_vocabulary_larger_than_the_softmax_is_an_error_not_a_traceback(tmp_path, small_run):
    options, _ = load_options_latest_checkpoint(str(small_run))
    with pytest.raises(VocabularyError, match="more than the 43 rows"):
        from bilm.training.checkpoints import check_vocabulary
        from bilm.core.options import ModelOptions
        vocab = tmp_path / "v.txt"
        vocab.write_text(Path(VOCAB).read_text() + "one\ntwo\n")
        check_vocabulary(str(small_run), load_vocab(str(vocab)), ModelOptions(options, training=True))


def test_signals_held_wait_for_the_end_of_the_innermost_block_then_act_as_before():
    from bilm.cli import Terminated, _on_sigterm
    from bilm.core.sessions import signals_held
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        reached = []
        with pytest.raises(Terminated):
            with signals_held():
                with signals_held():
                    os.kill(os.getpid(), signal.SIGTERM)
                    reached.append("after the signal")  # not interrupted here, inside TensorFlow's calls
                reached.append("after the inner block")  # raised at the end of the inner block
        assert reached == ["after the signal"]
        assert signal.getsignal(signal.SIGTERM) is _on_sigterm  # put back
        with pytest.raises(KeyboardInterrupt) as raised:
            with signals_held():
                os.kill(os.getpid(), signal.SIGINT)
                reached.append("after Ctrl-C")
        assert reached[-1] == "after Ctrl-C" and type(raised.value) is KeyboardInterrupt
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with signals_held():
            pass  # nothing held: nothing raised
        with signals_held(drop=True):  # a job saving because it was stopped: a second signal changes nothing
            with signals_held():
                os.kill(os.getpid(), signal.SIGTERM)
            reached.append("after a dropped signal")
        assert reached[-1] == "after a dropped signal" and signal.getsignal(signal.SIGTERM) is _on_sigterm
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_signal_during_a_step_ends_the_step_then_stops_the_run(tmp_path):
    # The segmentation faults came from a signal raised while TensorFlow's C++ read a step's feeds:
    # sent at every step, the SIGTERM is handled when the step has returned, and always the same way.
    save = tmp_path / "ckpt"
    process = start_training("train", *common(save), *SMALL, "--n_epochs", "1000", "--log_every", "1",
                             "--checkpoint_every", "100000")
    wait_for_line(process, "batch 3/")
    for _ in range(20):
        process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 143 and "Traceback" not in rest and "Fatal" not in rest, rest
    assert "terminated (SIGTERM); saved " in rest.strip().splitlines()[-1]
