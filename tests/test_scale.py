"""Embedding at scale: exact float32 (no TF32), reduced precisions, several devices, pooled and float16 outputs."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm.cli import main
from bilm.embedding.dumps import dump_bilm_embeddings, dump_token_embeddings
from bilm.embedding.embedder import ElmoEmbedder
from conftest import REFERENCE_MODEL, TINY_CORPUS, make_options, needs_reference, random_sentences, same_hdf5, write_model

ROOT = Path(__file__).resolve().parents[1]
TINY_VOCAB = TINY_CORPUS.with_name("tiny_vocab.txt")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    options_file, weight_file = write_model(directory, make_options(skip=True), seed=9)
    sentences = random_sentences(np.random.default_rng(11), 120, max_len=15)
    data = directory / "data.txt"
    data.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
    return {"options": options_file, "weights": weight_file, "data": str(data), "sentences": sentences}


def test_bilm_sessions_compute_in_float32_and_leave_the_setting_as_they_found_it(model, monkeypatch, tmp_path):
    seen = []
    run = tf.Session.run

    def recording(self, *args, **kwargs):
        seen.append(tf.config.experimental.tensor_float_32_execution_enabled())
        return run(self, *args, **kwargs)

    monkeypatch.setattr(tf.Session, "run", recording)
    assert tf.config.experimental.tensor_float_32_execution_enabled()  # TensorFlow's default
    with ElmoEmbedder(model["options"], model["weights"]) as embedder:
        embedder.embed_sentences(model["sentences"][:5])
    assert seen and not any(seen)  # TF32 off in every step of bilm's sessions
    assert tf.config.experimental.tensor_float_32_execution_enabled()  # and back on afterwards
    seen.clear()  # the token dump, training and evaluation too
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(TINY_VOCAB.read_text(encoding="utf-8"), encoding="utf-8")
    dump_token_embeddings(str(vocab), model["options"], model["weights"], str(tmp_path / "tokens.hdf5"))
    training = ["--train_prefix", str(TINY_CORPUS), "--vocab_file", str(vocab), "--save_dir", str(tmp_path / "ckpt")]
    assert main(["--quiet", "train", *training, "--lstm_dim", "16", "--projection_dim", "8", "--filters",
                 "[[1, 8]]", "--batch_size", "2", "--unroll_steps", "5", "--n_negative_samples", "4",
                 "--n_epochs", "1"]) == 0
    assert main(["--quiet", "test", *training[2:], "--test_prefix", str(TINY_CORPUS),
                 "--batch_size", "2"]) == 0
    assert len(seen) > 20 and not any(seen)
    assert tf.config.experimental.tensor_float_32_execution_enabled()
    seen.clear()
    with ElmoEmbedder(model["options"], model["weights"], precision="tf32") as embedder:
        embedder.embed_sentence(["a", "cat"])
    assert seen and all(seen)


def test_the_two_directions_share_the_cores(model, monkeypatch, tmp_path):
    """bilm's own sessions give each operation cores // (directions x towers) threads, so that the
    directions' independent LSTMs run side by side instead of each product taking every core."""
    from bilm.core import sessions
    monkeypatch.setattr(sessions, "cpu_cores", lambda: 8)
    threads = []
    session_init = tf.Session.__init__

    def recording(self, target="", graph=None, config=None):
        threads.append(config.intra_op_parallelism_threads)
        session_init(self, target, graph, config)

    monkeypatch.setattr(tf.Session, "__init__", recording)
    with ElmoEmbedder(model["options"], model["weights"]) as embedder:
        embedder.embed_sentence(["a", "cat"])
    assert threads == [4]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(TINY_VOCAB.read_text(encoding="utf-8"), encoding="utf-8")
    training = ["--train_prefix", str(TINY_CORPUS), "--vocab_file", str(vocab), "--lstm_dim", "16",
                "--projection_dim", "8", "--filters", "[[1, 8]]", "--batch_size", "2", "--unroll_steps", "5",
                "--n_negative_samples", "4", "--n_epochs", "1"]
    threads.clear()
    assert main(["--quiet", "train", *training, "--save_dir", str(tmp_path / "ckpt")]) == 0
    assert threads[0] == 4
    from bilm.training.graph import session_config
    assert session_config(2).intra_op_parallelism_threads == 2  # without GPUs, towers are CPU devices: 2 x 2 chains
    assert session_config(1, n_directions=1).intra_op_parallelism_threads == 0  # forward only: one chain, all cores
    assert sessions.config(threads=3).intra_op_parallelism_threads == 3  # an explicit count wins


def _cosines(a, b):
    a, b = np.concatenate(a, axis=1), np.concatenate(b, axis=1)  # (L, N, D)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.mark.parametrize("which", ["tiny random model", pytest.param("the original's reference model",
                                                                       marks=needs_reference)])
@pytest.mark.parametrize("precision, mean_bound, worst_bound", [("tf32", 1 - 1e-7, 1 - 1e-6),
                                                                ("bfloat16", 0.999, 0.99), ("float16", 0.9999, 0.999)])
def test_reduced_precisions_agree_with_float32_within_their_bounds(model, which, precision, mean_bound, worst_bound):
    sentences = model["sentences"][:60]
    files = (model["options"], model["weights"])
    if which != "tiny random model":
        files = (str(REFERENCE_MODEL / "options.json"), str(REFERENCE_MODEL / "lm_weights.hdf5"))
    with ElmoEmbedder(*files) as embedder:
        exact = embedder.embed_sentences(sentences)
    with ElmoEmbedder(*files, precision=precision) as embedder:
        reduced = embedder.embed_sentences(sentences)
    cosines = _cosines(exact, reduced)
    assert cosines.mean(axis=1).min() >= mean_bound and cosines.min() >= worst_bound, cosines.mean(axis=1)
    if precision == "tf32" and not tf.config.list_physical_devices("GPU"):  # no TF32 units: exactly float32
        assert all(np.array_equal(e, r) for e, r in zip(exact, reduced))
    if precision != "tf32":  # really computed in the reduced type (TF32 is float32 on a CPU)
        assert max(np.abs(e - r).max() for e, r in zip(exact, reduced)) > 1e-5


def test_pool_and_dtype_outputs_are_computed_from_the_float32_layers(model, tmp_path):
    every = tmp_path / "all.hdf5"
    dump_bilm_embeddings(None, model["data"], model["options"], model["weights"], str(every))
    outputs = {}
    for name, kwargs in {"mean": dict(pool="mean"), "max_top": dict(pool="max", layers="top"),
                         "half": dict(dtype="float16"), "half_mean_average": dict(pool="mean", layers="average",
                                                                                  dtype="float16")}.items():
        outputs[name] = tmp_path / f"{name}.hdf5"
        dump_bilm_embeddings(None, model["data"], model["options"], model["weights"], str(outputs[name]), **kwargs)
    with h5py.File(every, "r") as fin:
        layers = {key: fin[key][...] for key in fin}
    files = {name: h5py.File(path, "r") for name, path in outputs.items()}
    for key, value in layers.items():  # (3, n, 16), float32
        assert files["mean"][key].dtype == np.float32 and files["half"][key].dtype == np.float16
        np.testing.assert_allclose(files["mean"][key][...], value.mean(axis=1), atol=1e-6)
        np.testing.assert_allclose(files["max_top"][key][...], value[-1].max(axis=0), atol=1e-6)
        np.testing.assert_array_equal(files["half"][key][...], value.astype(np.float16))
        np.testing.assert_array_equal(files["half_mean_average"][key][...],
                                      value.mean(axis=0).mean(axis=0).astype(np.float16))
    for handle in files.values():
        handle.close()
    assert outputs["half"].stat().st_size < 0.6 * every.stat().st_size


def test_two_cpu_devices_write_the_file_of_one_process_even_after_a_kill(model, tmp_path):
    one = tmp_path / "one.hdf5"
    args = [model["data"], "--options", model["options"], "--weights", model["weights"], "--batch-size", "4"]
    assert main(["--quiet", "embed", args[0], str(one), *args[1:]]) == 0
    two = tmp_path / "two.hdf5"
    assert main(["--quiet", "embed", args[0], str(two), *args[1:], "--devices", "cpu:2"]) == 0
    same_hdf5(two, one)
    with h5py.File(two, "r") as got, h5py.File(one, "r") as want:  # the same bytes: keys in line order
        assert got["sentence_to_index"][0] == want["sentence_to_index"][0]
    # Killed (SIGKILL: no chance to save) while both devices compute; --resume continues every device's share.
    killed = tmp_path / "killed.hdf5"
    process = subprocess.Popen([sys.executable, "-m", "bilm.cli", "--quiet", "embed", args[0], str(killed), *args[1:],
                                "--devices", "cpu:2"], cwd=ROOT, start_new_session=True)
    directory = Path(str(killed) + ".devices")
    deadline = time.time() + 120
    while not list(directory.glob("device-*.hdf5.parts/job.json")) and time.time() < deadline:  # one writes
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the command and its device processes
    process.wait()
    assert not killed.exists() and directory.is_dir()
    assert main(["--quiet", "embed", args[0], str(killed), *args[1:], "--devices", "cpu:2"]) == 2  # parts are there
    assert main(["--quiet", "embed", args[0], str(killed), *args[1:], "--devices", "cpu:2", "--resume"]) == 0
    same_hdf5(killed, one)
    assert not directory.exists()


def test_a_failing_device_stops_the_job_with_its_error(model, tmp_path, capsys):
    out = tmp_path / "out.hdf5"
    broken = tmp_path / "weights.hdf5"
    broken.write_bytes(Path(model["weights"]).read_bytes()[:5000])  # each device reads it: each fails
    assert main(["--quiet", "embed", model["data"], str(out), "--options", model["options"], "--weights",
                 str(broken), "--devices", "cpu:2"]) == 2
    error = capsys.readouterr().err
    assert "bilm: error: device cpu (process " in error and "weights.hdf5" in error and "--resume" in error
    assert not out.exists()
    assert main(["--quiet", "embed", model["data"], str(out), "--options", model["options"], "--weights",
                 model["weights"], "--devices", "cpu:2", "--shard", "0/2"]) == 2
    assert "--shard and --devices both split the lines: give one of them" in capsys.readouterr().err
