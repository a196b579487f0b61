"""The original library's checkpoints, and fine-tuning from a checkpoint or a weight file."""
import hashlib
import http.server
import json
import logging
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm.training.checkpoints import dump_weights, load_options_latest_checkpoint
from bilm.cli import main
from bilm.errors import CheckpointError, InputError, VocabularyError
from bilm.training.evaluation import evaluate_checkpoint
from bilm.training.finetune import finetune
from conftest import TINY_CORPUS, copy_run, tree_digest

VOCAB = str(TINY_CORPUS.with_name("tiny_vocab.txt"))
TEXT = TINY_CORPUS.read_text(encoding="utf-8")
TOKENS_PER_EPOCH = len(TEXT.split()) + len(TEXT.splitlines())  # the </S> targets count too
N_VOCAB = len(Path(VOCAB).read_text().split())
OPTIONS = {
    "bidirectional": True, "dropout": 0.0, "all_clip_norm_val": 10.0,
    "char_cnn": {"activation": "relu", "embedding": {"dim": 4}, "filters": [[1, 8], [2, 8]],
                 "max_characters_per_token": 50, "n_characters": 261, "n_highway": 1},
    "lstm": {"dim": 16, "projection_dim": 8, "n_layers": 2, "cell_clip": 3, "proj_clip": 3,
             "use_skip_connections": False},
    "n_epochs": 1, "n_train_tokens": 200, "batch_size": 2, "unroll_steps": 5, "n_tokens_vocab": N_VOCAB,
    "n_negative_samples_batch": 4, "learning_rate": 0.2,
}


def original_layout(options):
    """{name in the original's checkpoint: shape} of its trainable variables, written from the facts
    (DESIGN.md: the original's training graph), independently of bilm's layout code."""
    cnn, lstm = options["char_cnn"], options["lstm"]
    e, p, d = cnn["embedding"]["dim"], lstm["projection_dim"], lstm["dim"]
    f = sum(n for _, n in cnn["filters"])
    shapes = {"lm/char_embed": (261, e)}
    for i, (width, n) in enumerate(cnn["filters"]):
        shapes[f"lm/CNN/W_cnn_{i}"] = (1, width, e, n)
        shapes[f"lm/CNN/b_cnn_{i}"] = (n,)
    for k in range(cnn["n_highway"]):
        for gate in ("carry", "transform"):
            shapes[f"lm/CNN_high_{k}/W_{gate}"] = (f, f)
            shapes[f"lm/CNN_high_{k}/b_{gate}"] = (f,)
    shapes["lm/CNN_proj/W_proj"], shapes["lm/CNN_proj/b_proj"] = (f, p), (p,)
    for direction in range(2):
        for layer in range(lstm["n_layers"]):
            cell = f"lm/RNN_{direction}/rnn/multi_rnn_cell/cell_{layer}/lstm_cell"
            shapes[f"{cell}/kernel"], shapes[f"{cell}/bias"] = (2 * p, 4 * d), (4 * d,)
            shapes[f"{cell}/projection/kernel"] = (d, p)
    shapes["lm/softmax/W"], shapes["lm/softmax/b"] = (options["n_tokens_vocab"], p), (options["n_tokens_vocab"],)
    return shapes


def weight_file_name(name):
    """The original's dump_weights renaming (its _get_outname), for checking our export."""
    name = name[len("lm/"):].replace("/rnn/", "/RNN/").replace("/multi_rnn_cell/", "/MultiRNNCell/")
    name = name.replace("/cell_", "/Cell").replace("/lstm_cell/", "/LSTMCell/")
    return name.replace("projection/kernel", "W_P_0").replace("LSTMCell/kernel", "LSTMCell/W_0").replace(
        "LSTMCell/bias", "LSTMCell/B")


def write_checkpoint(directory, variables, step, options, rename=None):
    """A save directory: options.json and a TensorFlow checkpoint of ``variables`` ({name: array})."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "options.json").write_text(json.dumps(options))
    with tf.Graph().as_default():
        made = {(rename or (lambda n: n))(name): tf.Variable(value, name=(rename or (lambda n: n))(name))
                for name, value in variables.items()}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver(made).save(sess, str(directory / "model.ckpt"), global_step=step)


def original_checkpoint(directory, options=OPTIONS, seed=0, step=935):
    """A checkpoint as the original's training writes it: seeded weights, Adagrad accumulators, a float
    global_step and a train_perplexity scalar. Returns {name: value}."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in original_layout(options).items():
        values[name] = (rng.standard_normal(shape) * 0.3).astype(np.float32)
        values[name + "/Adagrad"] = (5.0 + rng.random(shape)).astype(np.float32)
    values["global_step"] = np.float32(step)
    values["train_perplexity"] = np.float32(42.0)
    write_checkpoint(directory, values, step, options)
    return values


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """(directory, values) of one ``original_checkpoint``, made once for the module: read only."""
    directory = tmp_path_factory.mktemp("original") / "orig"
    return directory, original_checkpoint(directory)


def copy_original(original, destination):
    """A copy of the module's original checkpoint at ``destination``; its values."""
    copy_run(original[0], destination)
    return original[1]


def test_dump_weights_of_an_original_checkpoint_writes_its_values(original, tmp_path):
    values = copy_original(original, tmp_path / "orig")
    dump_weights(str(tmp_path / "orig"), str(tmp_path / "w.hdf5"))
    expected = {weight_file_name(n): v for n, v in values.items()
                if n.startswith("lm/") and not n.endswith("/Adagrad") and "softmax" not in n}
    with h5py.File(tmp_path / "w.hdf5", "r") as fin:
        found = {}
        fin.visititems(lambda name, obj: found.update({name: obj[...]}) if isinstance(obj, h5py.Dataset) else None)
    assert sorted(found) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(found[name], value, err_msg=name)


def test_original_and_bilm_layouts_give_the_same_perplexity(original, tmp_path):
    values = copy_original(original, tmp_path / "orig")
    weights = {n: v for n, v in values.items() if n.startswith("lm/") and not n.endswith("/Adagrad")}
    write_checkpoint(tmp_path / "mine", weights, 935, OPTIONS,
                     rename=lambda n: "lm/" + weight_file_name(n) if n.startswith("lm/") else n)
    original = evaluate_checkpoint(str(tmp_path / "orig"), str(TINY_CORPUS), VOCAB, batch_size=2)
    mine = evaluate_checkpoint(str(tmp_path / "mine"), str(TINY_CORPUS), VOCAB, batch_size=2)
    assert original == pytest.approx(mine, rel=1e-6) and np.isfinite(original)


def test_restart_of_an_original_checkpoint_keeps_step_and_accumulators(original, tmp_path):
    values = copy_original(original, tmp_path / "orig")
    args = ["--quiet", "restart", "--train_prefix", str(TINY_CORPUS), "--vocab_file", VOCAB, "--save_dir",
            str(tmp_path / "orig")]
    # 935 batches of 10 tokens already count toward the plan; 3 more batches' worth of tokens are asked for.
    assert main(args + ["--n_train_tokens", str(938 * 10)]) == 0
    _, ckpt = load_options_latest_checkpoint(str(tmp_path / "orig"))
    reader = tf.train.load_checkpoint(ckpt)
    assert ckpt.endswith("model.ckpt-938") and reader.get_tensor("global_step") == 938
    for name in ("lm/RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0", "lm/CNN/W_cnn_1", "lm/char_embed"):
        old = values[name.replace("RNN/MultiRNNCell/Cell0/LSTMCell/W_0", "rnn/multi_rnn_cell/cell_0/lstm_cell/kernel")
                     + "/Adagrad"]
        new = reader.get_tensor(name + "/Adagrad")
        assert (new >= old - 1e-6).all() and (new > old).any()  # kept and grown, not restarted at 1.0

    # With another batch size, its 935 batches count at the batch size they were trained with (10 tokens).
    copy_original(original, tmp_path / "other")
    other = args[:-1] + [str(tmp_path / "other")]
    assert main(other + ["--batch_size", "4", "--n_train_tokens", str(935 * 10 + 3 * 20)]) == 0
    _, ckpt = load_options_latest_checkpoint(str(tmp_path / "other"))
    reader = tf.train.load_checkpoint(ckpt)
    assert reader.get_tensor("global_step") == 938 and reader.get_tensor("tokens_trained") == 935 * 10 + 3 * 20


def test_checkpoints_that_do_not_fit_say_so_in_one_line(original, tmp_path, capsys):
    other = dict(OPTIONS, lstm=dict(OPTIONS["lstm"], dim=32))
    copy_original(original, tmp_path / "orig")
    (tmp_path / "orig" / "options.json").write_text(json.dumps(other))
    with pytest.raises(CheckpointError, match=r"variable 'lm/RNN_0/rnn/multi_rnn_cell/cell_0/lstm_cell/kernel' has "
                                              r"shape \(16, 64\); the options need \(16, 128\)"):
        dump_weights(str(tmp_path / "orig"), str(tmp_path / "w.hdf5"))
    token_model = {k: v for k, v in OPTIONS.items() if k != "char_cnn"}
    (tmp_path / "orig" / "options.json").write_text(json.dumps(token_model))
    with pytest.raises(CheckpointError, match=r"missing variable 'lm/embedding' .*another architecture"):
        dump_weights(str(tmp_path / "orig"), str(tmp_path / "w2.hdf5"))
    (tmp_path / "orig" / "options.json").unlink()
    assert main(["dump-weights", "--save_dir", str(tmp_path / "orig"), "--outfile", str(tmp_path / "w3.hdf5")]) == 2
    assert "no options.json (expected the options file training writes" in capsys.readouterr().err


def test_finetune_from_a_checkpoint_keeps_the_best_and_never_writes_the_source(original, tmp_path):
    copy_original(original, tmp_path / "orig")
    before = tree_digest(tmp_path / "orig")
    best = finetune(str(tmp_path / "tuned"), str(TINY_CORPUS), VOCAB, str(TINY_CORPUS),
                    source_dir=str(tmp_path / "orig"), n_epochs=6, eval_every=6, patience=2, eval_batch_size=2,
                    seed=0)
    assert tree_digest(tmp_path / "orig") == before
    history = json.loads((tmp_path / "tuned" / "finetune.json").read_text())
    evaluations = history["evaluations"]
    lowest = min(evaluations, key=lambda e: e["heldout_perplexity"])
    assert history["best"] == lowest and best == pytest.approx(lowest["heldout_perplexity"])
    assert evaluations[0]["heldout_perplexity"] > lowest["heldout_perplexity"]  # it learned
    _, latest = load_options_latest_checkpoint(str(tmp_path / "tuned"))
    assert latest == lowest["checkpoint"]  # dump-weights exports the best
    # Evaluated every 6 batches and after the last; the run goes to the end, or stops once 2 evaluations
    # after the best did not improve (which one depends on the seeded random streams).
    n_batches = 6 * TOKENS_PER_EPOCH // 10
    schedule = list(range(6, n_batches + 1, 6)) + ([n_batches] if n_batches % 6 else [])
    steps = [e["step"] for e in evaluations]
    assert steps == schedule[:len(steps)]
    after_best = len(evaluations) - 1 - evaluations.index(lowest)
    assert after_best < 2 if steps == schedule else after_best == 2
    assert evaluate_checkpoint(str(tmp_path / "tuned"), str(TINY_CORPUS), VOCAB, 2) == pytest.approx(best, rel=1e-5)


def test_finetune_stops_after_patience_evaluations_without_improvement(original, tmp_path):
    copy_original(original, tmp_path / "orig")
    finetune(str(tmp_path / "tuned"), str(TINY_CORPUS), VOCAB, str(TINY_CORPUS), source_dir=str(tmp_path / "orig"),
             n_epochs=6, eval_every=6, patience=1, eval_batch_size=2, seed=0)
    evaluations = json.loads((tmp_path / "tuned" / "finetune.json").read_text())["evaluations"]
    best = min(evaluations, key=lambda e: e["heldout_perplexity"])
    assert evaluations[-1]["step"] < 6 * TOKENS_PER_EPOCH // 10  # stopped before its last batch,
    assert evaluations.index(best) == len(evaluations) - 2  # at the first evaluation without improvement
    _, latest = load_options_latest_checkpoint(str(tmp_path / "tuned"))
    assert latest == best["checkpoint"]  # the best is kept and is the latest


def test_finetune_refuses_another_vocabulary_and_its_source_as_target(original, tmp_path):
    copy_original(original, tmp_path / "orig")
    smaller = tmp_path / "v.txt"
    smaller.write_text("\n".join(Path(VOCAB).read_text().split()[:-1]) + "\n")
    with pytest.raises(VocabularyError, match=r"42 tokens; the checkpoint's softmax has 43 rows"):
        finetune(str(tmp_path / "tuned"), str(TINY_CORPUS), str(smaller), str(TINY_CORPUS),
                 source_dir=str(tmp_path / "orig"))
    with pytest.raises(Exception, match="is where the source of this job lies"):
        finetune(str(tmp_path), str(TINY_CORPUS), VOCAB, str(TINY_CORPUS), source_dir=str(tmp_path / "orig"))


def test_finetune_from_a_weight_file_trains_only_the_softmax_first(original, tmp_path, caplog):
    values = copy_original(original, tmp_path / "orig")
    weight_file, options_file = str(tmp_path / "w.hdf5"), str(tmp_path / "options.json")
    dump_weights(str(tmp_path / "orig"), weight_file, options_outfile=options_file)
    n_batches = TOKENS_PER_EPOCH // 10  # one epoch of the tiny corpus in batches of 2 x 5 tokens
    finetune(str(tmp_path / "tuned"), str(TINY_CORPUS), VOCAB, str(TINY_CORPUS), options_file=options_file,
             weight_file=weight_file, batch_size=2, n_negative_samples=4, eval_every=100, eval_batch_size=2,
             softmax_only_batches=n_batches, seed=0)
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING and "softmax_only" in r.message]
    assert warnings == [f"softmax_only_batches (--softmax_only_batches) is {n_batches}, at least the {n_batches} "
                        f"batches of the run: only the softmax is trained, no weight of the body (char CNN, LSTMs) "
                        f"changes"]
    _, ckpt = load_options_latest_checkpoint(str(tmp_path / "tuned"))
    reader = tf.train.load_checkpoint(ckpt)
    assert reader.get_tensor("global_step") == n_batches
    with h5py.File(weight_file, "r") as fin:  # the body is exactly the weight file's
        for name in ("RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_0", "CNN/W_cnn_0", "char_embed", "CNN_high_0/W_carry"):
            np.testing.assert_array_equal(reader.get_tensor("lm/" + name), fin[name][...], err_msg=name)
    softmax = reader.get_tensor("lm/softmax/W")
    assert not np.allclose(softmax, values["lm/softmax/W"])  # a new softmax, not the checkpoint's
    assert np.abs(reader.get_tensor("lm/softmax/W/Adagrad") - 1.0).max() > 0  # it learned


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_a_published_checkpoint_is_downloaded_and_used_by_name(original, tmp_path, monkeypatch, capsys):
    values = copy_original(original, tmp_path / "served")
    served = tmp_path / "served"
    (served / "vocab.txt").write_text(Path(VOCAB).read_text())
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Files(*a, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        files = {"options": f"{url}/options.json", "vocab": f"{url}/vocab.txt"}
        files.update({f"model.ckpt-935.{part}": f"{url}/model.ckpt-935.{part}"
                      for part in ("index", "data-00000-of-00001")})
        catalogue = tmp_path / "catalogue.json"
        digests = {role: hashlib.sha256((served / url.rsplit("/", 1)[1]).read_bytes()).hexdigest()
                   for role, url in files.items()}
        catalogue.write_text(json.dumps({"tiny-checkpoint": {"kind": "checkpoint", "files": files,
                                                             "sha256": digests}}))
        monkeypatch.setenv("BILM_CATALOGUE", str(catalogue))
        monkeypatch.setenv("BILM_CACHE", str(tmp_path / "cache"))
        assert main(["--quiet", "download", "tiny-checkpoint"]) == 0
        assert main(["--quiet", "dump-weights", "--save_dir", "tiny-checkpoint", "--outfile",
                     str(tmp_path / "w.hdf5")]) == 0
        with h5py.File(tmp_path / "w.hdf5", "r") as fin:
            np.testing.assert_array_equal(fin["CNN/W_cnn_0"][...], values["lm/CNN/W_cnn_0"])
        assert main(["--quiet", "restart", "--save_dir", "tiny-checkpoint", "--train_prefix", str(TINY_CORPUS),
                     "--vocab_file", VOCAB]) == 2  # never written to: fine-tune it instead
        assert "is a downloaded checkpoint, never written to" in capsys.readouterr().err
    finally:
        httpd.shutdown()


# --- held-out text, resuming, sources ----------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _start(*args):
    return subprocess.Popen([sys.executable, "-m", "bilm.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(condition, process, timeout=180):
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _evaluations(record):
    try:
        return len(json.loads(record.read_text())["evaluations"])
    except FileNotFoundError:
        return 0


def test_finetune_checks_the_heldout_text_before_training(original, tmp_path):
    copy_original(original, tmp_path / "orig")
    tuned = tmp_path / "tuned"

    def tune(heldout):
        finetune(str(tuned), str(TINY_CORPUS), VOCAB, heldout, source_dir=str(tmp_path / "orig"), eval_every=2,
                 seed=0)

    bad = tmp_path / "bad.txt"  # its last line is Latin-1, not UTF-8: found now, not at the first evaluation
    bad.write_bytes(TEXT.encode("utf-8") + "caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"bad\.txt, line 6: not valid UTF-8"):
        tune(str(bad))
    assert not list(tuned.glob("model.ckpt-*"))  # nothing was trained
    with pytest.raises(InputError, match=r"no held-out file of heldout_prefix \(--heldout_prefix\) matches "
                                         r"'.*missing\*\.txt'"):
        tune(str(tmp_path / "missing*.txt"))
    (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InputError, match=r"held-out text of heldout_prefix \(--heldout_prefix\), '.*blank\.txt' "
                                         r"\(1 file\(s\)\), holds no sentence"):
        tune(str(tmp_path / "blank.txt"))
    assert not list(tuned.glob("model.ckpt-*"))


def test_finetune_with_a_small_heldout_text_and_its_next_hint_run_as_printed(original, tmp_path, caplog, capsys):
    copy_original(original, tmp_path / "orig")
    small = tmp_path / "small.txt"  # 2 sentences: fewer than the 64 evaluation streams and 256 test streams
    small.write_text("the mill wheel turns .\nthe zeppelin flies over the town .\n", encoding="utf-8")
    caplog.set_level(logging.INFO)
    assert main(["finetune", "--from", str(tmp_path / "orig"), "--save_dir", str(tmp_path / "tuned"),
                 "--train_prefix", str(TINY_CORPUS), "--vocab_file", VOCAB, "--heldout_prefix", str(small),
                 "--eval_every", "4", "--seed", "0"]) == 0
    best = float(capsys.readouterr().out.split("best held-out perplexity: ")[1])
    words, vocabulary = small.read_text().split(), set(Path(VOCAB).read_text().split())
    unknown = 100 * sum(word not in vocabulary for word in words) / len(words)
    assert unknown > 0 and any(f"2 sentences, 12 tokens ({unknown:.1f}% not in the vocabulary), 14 targets per "
                               f"direction" in r.message for r in caplog.records)
    hint = next(r.message for r in caplog.records if r.message.startswith("next: "))
    evaluate = re.search(r"`(bilm test [^`]*)`", hint).group(1)
    assert main(shlex.split(evaluate)[1:]) == 0
    printed = capsys.readouterr().out
    assert "targets scored: 14 per direction (every token and sentence end of the text, once)" in printed
    assert float(re.search(r"^perplexity: ([0-9.]+) ", printed, flags=re.M).group(1)) == pytest.approx(best, abs=1e-3)


def test_an_interrupted_finetune_resumes_with_its_evaluations_and_best_checkpoint(original, tmp_path, capsys):
    copy_original(original, tmp_path / "orig")
    n_batches = 10 * TOKENS_PER_EPOCH // 10  # 10 epochs of the tiny corpus in batches of 2 x 5 tokens

    def command(save_dir):
        return ["finetune", "--from", str(tmp_path / "orig"), "--save_dir", str(save_dir), "--train_prefix",
                str(TINY_CORPUS), "--vocab_file", VOCAB, "--heldout_prefix", str(TINY_CORPUS), "--n_epochs", "10",
                "--eval_every", "6", "--patience", "1000", "--eval_batch_size", "2", "--keep_checkpoints", "1",
                "--seed", "0"]

    tuned = tmp_path / "tuned"
    record = tuned / "finetune.json"
    process = _start(*command(tuned))
    _wait_for(lambda: _evaluations(record) >= 2, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143 and "Traceback" not in stderr, stderr
    hint = stderr.strip().splitlines()[-1].split("continue with: ")[1]
    assert hint.startswith(f"bilm finetune --resume --save_dir {tuned} ")
    before = json.loads(record.read_text())
    assert not before["finished"] and before["settings"]["eval_every"] == 6
    # restart would go on without evaluations or early stopping, and the same command would start afresh:
    # both refused, pointing to --resume
    assert main(["restart", "--train_prefix", str(TINY_CORPUS), "--vocab_file", VOCAB, "--save_dir", str(tuned)]) == 2
    assert "is a fine-tune (finetune.json); continue it with bilm finetune --resume" in capsys.readouterr().err
    assert main(command(tuned)) == 2
    assert "holds an earlier fine-tune; continue it with --resume, or pass --overwrite" in capsys.readouterr().err
    # No later evaluation may beat the best so far: the resumed run must keep its checkpoint through every save
    # (it keeps 2 by default) and end with it as the latest.
    kept = before["best"]
    for entry in [before["best"]] + [e for e in before["evaluations"] if e["step"] == kept["step"]]:
        entry["heldout_perplexity"] = 0.0
    record.write_text(json.dumps(before))

    assert main(shlex.split(hint)[1:]) == 0
    after = json.loads(record.read_text())
    # The batches and evaluations of the same fine-tune uninterrupted (as in
    # test_finetune_from_a_checkpoint_keeps_the_best_and_never_writes_the_source): every 6 batches, and the last.
    steps = list(range(6, n_batches + 1, 6)) + ([n_batches] if n_batches % 6 else [])
    assert [e["step"] for e in after["evaluations"]] == steps
    assert after["evaluations"][:len(before["evaluations"])] == before["evaluations"]  # the history goes on
    assert after["finished"] and after["best"] == before["best"]
    _, latest = load_options_latest_checkpoint(str(tuned))
    assert latest == str(tuned / f"model.ckpt-{kept['step']}") and Path(latest + ".index").is_file()
    assert tf.train.load_checkpoint(latest).get_tensor("global_step") == kept["step"]
    # Resuming a finished fine-tune trains nothing more.
    assert main(shlex.split(hint)[1:]) == 0
    assert json.loads(record.read_text()) == after


def test_finetune_refuses_a_source_another_process_is_training(tmp_path, capsys):
    source = tmp_path / "training"
    trainer = _start("train", "--train_prefix", str(TINY_CORPUS), "--vocab_file", VOCAB, "--save_dir", str(source),
                     "--lstm_dim", "16", "--projection_dim", "8", "--filters", "[[1, 8]]", "--n_highway", "0",
                     "--batch_size", "2", "--unroll_steps", "5", "--n_negative_samples", "4", "--n_epochs", "1000",
                     "--checkpoint_every", "1")
    try:
        _wait_for(lambda: (source / "checkpoint").exists(), trainer)  # a checkpoint to fine-tune, being trained
        assert main(["finetune", "--from", str(source), "--save_dir", str(tmp_path / "tuned"), "--train_prefix",
                     str(TINY_CORPUS), "--vocab_file", VOCAB, "--heldout_prefix", str(TINY_CORPUS)]) == 2
        error = capsys.readouterr().err
        assert f"training: is being written by another process (pid {trainer.pid}, " in error
        assert f"(its lock: {source / 'train.lock'})" in error
        assert not (tmp_path / "tuned").exists()  # refused at once
    finally:
        trainer.send_signal(signal.SIGTERM)
        trainer.communicate(timeout=120)
    assert trainer.returncode == 143


def test_a_finetune_interrupted_during_an_evaluation_makes_it_when_resumed(original, tmp_path):
    copy_original(original, tmp_path / "orig")
    heldout = tmp_path / "heldout.txt"  # long enough that SIGTERM lands while it is evaluated
    heldout.write_text(TEXT * 30, encoding="utf-8")
    n_batches = 2 * TOKENS_PER_EPOCH // 10
    tuned = tmp_path / "tuned"
    process = _start("finetune", "--from", str(tmp_path / "orig"), "--save_dir", str(tuned), "--train_prefix",
                     str(TINY_CORPUS), "--vocab_file", VOCAB, "--heldout_prefix", str(heldout), "--n_epochs", "2",
                     "--eval_every", "6", "--patience", "1000", "--eval_batch_size", "1", "--seed", "0")
    _wait_for((tuned / "model.ckpt-6.index").exists, process)  # saved just before the evaluation of batch 6
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert f"the latest checkpoint, {tuned / 'model.ckpt-6'}, holds batch 6" in stderr
    assert json.loads((tuned / "finetune.json").read_text())["evaluations"] == []  # batch 6 not evaluated
    assert main(shlex.split(stderr.strip().splitlines()[-1].split("continue with: ")[1])[1:]) == 0
    evaluations = json.loads((tuned / "finetune.json").read_text())["evaluations"]
    assert [e["step"] for e in evaluations] == [6, 12, n_batches]  # as an uninterrupted run's
    assert evaluations[0]["train_perplexity"] is None  # made on resuming: no batch of it to report
