"""Training across worker processes on 127.0.0.1 (TensorFlow's collective ops), bounded in time."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm.data import BidirectionalLMDataset
from bilm.training.dataset import load_vocab
from bilm.training import train
from bilm.cli import main
from bilm.training import cluster as cluster_module
from bilm.training.cluster import local_addresses, lost_worker_error
from bilm.training.evaluation import evaluate_checkpoint
import cluster_worker
from conftest import TINY_CORPUS

ROOT = Path(__file__).resolve().parents[1]
VOCAB = str(TINY_CORPUS.with_name("tiny_vocab.txt"))
WORKER = str(Path(__file__).with_name("cluster_worker.py"))
TIMEOUT = 240


def options(char):
    opts = {"bidirectional": True, "dropout": 0.0, "all_clip_norm_val": 1.0, "sample_softmax": False,
            "lstm": {"dim": 16, "projection_dim": 8, "n_layers": 2, "cell_clip": 3, "proj_clip": 3},
            "n_epochs": 1, "n_train_tokens": 10 ** 6, "batch_size": 4, "unroll_steps": 5,
            "n_tokens_vocab": load_vocab(VOCAB).size, "learning_rate": 0.2}
    if char:
        opts["char_cnn"] = {"activation": "relu", "embedding": {"dim": 4}, "filters": [[1, 8], [2, 8]],
                            "max_characters_per_token": 50, "n_characters": 261, "n_highway": 1}
    return opts


def as_lists(batch, rows):
    return {k: None if v is None else v[rows].tolist() for k, v in batch.items()}


def run_workers(specs, meanwhile=lambda: None):
    """Each spec's worker in its own process; ``meanwhile`` runs here while they do."""
    processes = [subprocess.Popen([sys.executable, WORKER, json.dumps(spec)], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for spec in specs]
    try:
        meanwhile()
        for process in processes:
            _, err = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 0, err[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def checkpoint_values(save_dir):
    ckpt = tf.train.latest_checkpoint(str(save_dir))
    reader = tf.train.load_checkpoint(ckpt)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}, ckpt


@pytest.mark.parametrize("char", [True, False], ids=["character model", "token model (sparse gradients)"])
def test_two_workers_make_the_update_of_one_worker_with_the_whole_batch(tmp_path, char):
    opts = options(char)
    vocab = load_vocab(VOCAB, 50 if char else None)
    # A starting checkpoint (1 batch of 8 streams), then 4 batches of 8 streams: whole, or 4 + 4 on two workers.
    start = tmp_path / "start"
    first = dict(opts, batch_size=8, n_train_tokens=8 * 5)
    train(first, BidirectionalLMDataset(str(TINY_CORPUS), vocab, shuffle_on_load=True), 1, str(start), str(start),
          seed=0)
    ckpt = tf.train.latest_checkpoint(str(start))
    batches = []
    for batch in BidirectionalLMDataset(str(TINY_CORPUS), vocab, shuffle_on_load=True).iter_batches(8, 5):
        batches.append(batch)
        if len(batches) == 4:
            break
    total = dict(opts, n_train_tokens=5 * 8 * 5)  # the first batch and these 4
    single = {"options": dict(total, batch_size=8), "batches": [as_lists(b, slice(None)) for b in batches],
              "save_dir": str(tmp_path / "single"), "restart": ckpt}
    workers = local_addresses(2)
    halves = [{"options": total, "batches": [as_lists(b, slice(4 * k, 4 * k + 4)) for b in batches],
               "save_dir": str(tmp_path / f"worker{k}"), "restart": ckpt, "workers": workers, "index": k,
               "dense_limit": 0} for k in range(2)]
    run_workers(halves, meanwhile=lambda: cluster_worker.run(single))  # the single worker: the same code, here
    one, one_ckpt = checkpoint_values(tmp_path / "single")
    two, two_ckpt = checkpoint_values(tmp_path / "worker0")
    assert one_ckpt.endswith("-5") and two_ckpt.endswith("-5")
    assert sorted(one) == sorted(two)
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-6, err_msg=name)
    start_values, _ = checkpoint_values(start)
    moved = sum(not np.array_equal(one[n], start_values[n]) for n in one if n.startswith("lm/") and "Adagrad" not in n)
    assert moved == len([n for n in one if n.startswith("lm/") and "Adagrad" not in n])
    assert not list((tmp_path / "worker1").glob("*"))  # only the chief writes


def test_a_cluster_trains_and_a_lost_worker_stops_it_then_restart_finishes(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    lines = TINY_CORPUS.read_text(encoding="utf-8").splitlines()
    (shards / "a.txt").write_text("\n".join(lines[:3]) + "\n", encoding="utf-8")
    (shards / "b.txt").write_text("\n".join(lines[3:]) + "\n", encoding="utf-8")
    addresses = local_addresses(2)
    workers = ",".join(addresses)
    saves = [tmp_path / "save"] * 2  # a shared file system: every worker reads the run's options to restart

    def command(name, k, *extra):
        return [sys.executable, "-m", "bilm.cli", name, "--train_prefix", str(shards / "*.txt"), "--vocab_file", VOCAB,
                "--save_dir", str(saves[k]), "--workers", workers, "--worker_index", str(k), "--worker_timeout",
                "30", "--log_every", "10", *extra]

    small = ["--token_input", "--lstm_dim", "32", "--projection_dim", "16", "--batch_size", "2", "--unroll_steps",
             "5", "--n_negative_samples", "8", "--n_epochs", "60", "--seed", "0", "--checkpoint_every", "20"]
    processes = [subprocess.Popen(command("train", k, *small), cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for k in range(2)]
    deadline = time.time() + TIMEOUT
    while not list(saves[0].glob("model.ckpt-40.index")):  # two checkpoints, then a worker is lost
        assert time.time() < deadline and processes[0].poll() is None, processes[0].communicate()
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGKILL)
    killed = time.time()
    _, stderr = processes[0].communicate(timeout=120)
    processes[1].communicate()
    message = stderr.strip().splitlines()[-1]
    assert processes[0].returncode == 2 and time.time() - killed < 60
    assert f"worker 1 ({addresses[1]}) stopped responding" in message, message
    assert "continue with: bilm restart" in message
    # The whole cluster runs the restart command; it finishes the planned batches.
    tokens = sum(len(line.split()) + 1 for line in lines)
    planned = 60 * tokens // (2 * 5 * 2)
    restart = [subprocess.Popen(command("restart", k), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for k in range(2)]
    for process in restart:
        _, err = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, err[-3000:]
    assert tf.train.latest_checkpoint(str(saves[0])).endswith(f"model.ckpt-{planned}")
    # The cluster-trained model learned the text as one machine's would (the bar of test_training).
    assert evaluate_checkpoint(str(saves[0]), str(TINY_CORPUS), VOCAB, batch_size=1) < 20


def two_shards(directory):
    for k in range(2):
        (directory / f"shard{k}.txt").write_text(TINY_CORPUS.read_text(encoding="utf-8"), encoding="utf-8")
    return str(directory / "shard*.txt")


class Worker:
    """A ``bilm`` command in its own process, its stderr read as it comes (every wait on it is bounded)."""

    def __init__(self, *args, env=None):
        self.process = subprocess.Popen([sys.executable, "-m", "bilm.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, env=env)
        self.lines = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        self.reader.start()

    def wait_for_line(self, text, timeout=TIMEOUT):
        deadline = time.time() + timeout
        while not any(text in line for line in list(self.lines)):
            assert time.time() < deadline and self.process.poll() is None, f"no {text!r} in: {''.join(self.lines)}"
            time.sleep(0.05)

    def finish(self, timeout=TIMEOUT):
        """(exit status, stderr); a process still running after ``timeout`` s is killed (and the status says so)."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.lines.append(f"\n(still running after {timeout} s: killed)")
        self.reader.join(timeout=10)
        return self.process.returncode, "".join(self.lines)


@pytest.fixture
def start_worker():
    """Start ``Worker``s; any still running when the test ends is killed."""
    started = []

    def start(*args, env=None):
        started.append(Worker(*args, env=env))
        return started[-1]

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


TOKEN_MODEL = ["--token_input", "--batch_size", "2", "--unroll_steps", "5", "--n_negative_samples", "8",
               "--projection_dim", "8", "--lstm_dim", "16"]


def test_workers_with_other_settings_are_refused_at_start_naming_each_setting(tmp_path, start_worker):
    workers = ",".join(local_addresses(2))
    common = ["--train_prefix", two_shards(tmp_path), "--vocab_file", VOCAB, "--workers", workers, *TOKEN_MODEL,
              "--n_epochs", "1", "--worker_timeout", "60"]
    # Worker 1 with another LSTM size and, on its own, more towers: a batch of other sizes (the chief would
    # count its own towers' tokens for every worker).
    other = {0: [], 1: ["--lstm_dim", "32", "--n_gpus", "2"]}
    processes = [start_worker("train", *common, "--save_dir", str(tmp_path / f"s{k}"), "--worker_index", str(k),
                              *other[k]) for k in range(2)]
    for status, stderr in [worker.finish() for worker in processes]:
        message = stderr.strip().splitlines()[-1]
        assert status == 2 and message.startswith("bilm: error: worker 1 (") and "Traceback" not in stderr, stderr
        assert "has --n_gpus 2 (the chief's: 1), options.lstm.dim 32 (the chief's: 16): every worker must start " \
               "with the chief's settings" in message, message
    assert not (tmp_path / "s0").exists() and not (tmp_path / "s1").exists()  # nothing written


def test_finetuning_workers_with_other_evaluations_are_refused_at_start(tmp_path, start_worker):
    source = tmp_path / "source"
    options = {"bidirectional": True, "dropout": 0.0, "all_clip_norm_val": 10.0, "n_epochs": 1, "n_train_tokens": 20,
               "lstm": {"dim": 16, "projection_dim": 8, "n_layers": 1}, "batch_size": 2, "unroll_steps": 5,
               "n_tokens_vocab": load_vocab(VOCAB).size, "n_negative_samples_batch": 8}
    train(options, BidirectionalLMDataset(str(TINY_CORPUS), load_vocab(VOCAB)), 1, str(source), str(source))
    workers = ",".join(local_addresses(2))
    common = ["--from", str(source), "--train_prefix", two_shards(tmp_path), "--heldout_prefix", str(TINY_CORPUS),
              "--vocab_file", VOCAB, "--workers", workers, "--worker_timeout", "60", "--eval_batch_size", "2",
              "--save_dir", str(tmp_path / "tuned")]
    processes = [start_worker("finetune", *common, "--worker_index", str(k), "--eval_every", str(5 + k))
                 for k in range(2)]
    for status, stderr in [worker.finish() for worker in processes]:
        message = stderr.strip().splitlines()[-1]
        assert status == 2 and "Traceback" not in stderr, stderr
        assert "has --eval_every 6 (the chief's: 5): every worker must start with the chief's settings" in message


def test_a_worker_whose_peers_never_come_waits_at_most_the_timeout_and_obeys_signals(tmp_path, start_worker):
    shards = two_shards(tmp_path)

    def lone_worker(index, timeout, *extra):
        addresses = local_addresses(2)  # a cluster of two; only this worker starts
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        process = start_worker(*extra, "train", "--train_prefix", shards, "--vocab_file", VOCAB, "--save_dir",
                               str(tmp_path / f"save{index}{timeout}"), *TOKEN_MODEL, "--worker_timeout", str(timeout),
                               env=dict(os.environ, TF_CONFIG=json.dumps(tf_config)))
        return process, addresses[1 - index]

    alone, missing = lone_worker(0, 3, "--quiet")
    waiting = {signum: lone_worker(1, 600) for signum in (signal.SIGTERM, signal.SIGINT)}
    status, stderr = alone.finish(timeout=120)  # start-up, 3 s of waiting, the end
    assert status == 2 and stderr.strip().splitlines() == [
        f"bilm: error: worker 1 ({missing}): not started within --worker_timeout 3 s; start every worker of the "
        f"cluster (the same command, each with its own index)"], stderr
    for signum, (process, missing) in waiting.items():
        process.wait_for_line(f"waiting for worker 0 ({missing}) (at most 600 s)")
        process.process.send_signal(signum)
        sent = time.time()
        status, stderr = process.finish(timeout=60)
        status_and_word = {signal.SIGTERM: (143, "terminated (SIGTERM)"), signal.SIGINT: (130, "interrupted")}[signum]
        assert status == status_and_word[0] and time.time() - sent < 15, stderr
        assert stderr.strip().splitlines()[-1] == f"bilm: {status_and_word[1]}; nothing was left half-written", stderr
    # A peer whose port answers but that is no TensorFlow server: TensorFlow's session would wait for it for
    # ever; the wait is bounded too.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        tf_config = {"cluster": {"worker": [local_addresses(1)[0], f"127.0.0.1:{silent.getsockname()[1]}"]},
                     "task": {"type": "worker", "index": 0}}
        process = start_worker("--quiet", "train", "--train_prefix", shards, "--vocab_file", VOCAB, "--save_dir",
                               str(tmp_path / "silent"), *TOKEN_MODEL, "--worker_timeout", "3",
                               env=dict(os.environ, TF_CONFIG=json.dumps(tf_config)))
        status, stderr = process.finish(timeout=120)
    assert status == 2 and stderr.strip().splitlines() == [
        f"bilm: error: another worker did not answer before training began (TimeoutError); start every worker of "
        f"the cluster (the same command, each with its own index)"], stderr


def test_a_worker_whose_chief_stops_ends_with_one_line(tmp_path, start_worker):
    workers = ",".join(local_addresses(2))
    common = ["--train_prefix", two_shards(tmp_path), "--vocab_file", VOCAB, "--save_dir", str(tmp_path / "save"),
              "--workers", workers, *TOKEN_MODEL, "--n_epochs", "1000", "--worker_timeout", "60", "--log_every", "5"]
    processes = [start_worker("train", *common, "--worker_index", str(k)) for k in range(2)]
    processes[0].wait_for_line("batch 5/")
    processes[0].process.send_signal(signal.SIGTERM)
    (chief, _), (status, stderr) = [worker.finish(timeout=120) for worker in processes]
    assert chief == 143 and status == 2, stderr
    lines = stderr.strip().splitlines()
    assert all(line.startswith(("INFO ", "WARNING ")) for line in lines[:-1]), stderr  # no TensorFlow lines
    assert lines[-1].startswith("bilm: error: worker 0 (") and "stopped responding" in lines[-1], stderr



class PortClosingLate:
    """A cluster whose worker 0's port closes only at the third look (a stopped chief saving its checkpoint)."""

    def __init__(self):
        self.looks = 0

    def unreachable(self):
        self.looks += 1
        return ["worker 0 (127.0.0.1:1)"] if self.looks >= 3 else []


def test_a_failed_step_names_the_worker_whose_port_closes_a_moment_later(monkeypatch):
    err = tf.errors.UnavailableError(None, None, "socket closed")
    message = str(lost_worker_error(err, PortClosingLate(), 7))
    assert message.startswith("worker 0 (127.0.0.1:1) stopped responding at batch 8 (UnavailableError)"), message
    monkeypatch.setattr(cluster_module, "LOST_PROBE_SECONDS", 0.6)  # the look is bounded: then "another worker"
    never = PortClosingLate()
    never.unreachable = lambda: []
    start = time.monotonic()
    assert str(lost_worker_error(err, never, 7)).startswith("another worker stopped responding at batch 8")
    assert time.monotonic() - start < 5
    before_training = PortClosingLate()  # before training: no second look (a silent peer is said at once)
    assert str(lost_worker_error(err, before_training, -1)).startswith("another worker did not answer")
    assert before_training.looks == 1

@pytest.mark.parametrize("tf_config, expected", [
    ('{"cluster": {"worker": [1, 2]}, "task": {"type": "worker", "index": 0}}',
     'cluster.worker is [1, 2], not a list of "host:port" strings'),
    ('{"cluster": {"worker": "127.0.0.1:1"}, "task": {"type": "worker", "index": 0}}',
     'cluster.worker is "127.0.0.1:1", not a list of "host:port" strings'),
    ('"a string"', "no 'cluster' and 'task' objects in '\"a string\"'"),
    ("not json", "not JSON (Expecting value: line 1 column 1 (char 0))"),
    ('{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": "1"}}',
     'task.index "1", not an integer'),
])
def test_a_malformed_tf_config_is_one_line_naming_it(monkeypatch, capsys, tf_config, expected):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    assert main(["--quiet", "train", "--train_prefix", str(TINY_CORPUS), "--vocab_file", VOCAB, "--save_dir",
                 "/tmp/unused"]) == 2
    assert capsys.readouterr().err == f"bilm: error: TF_CONFIG: {expected}; expected {{\"cluster\": {{\"worker\": " \
                                      f"[\"host:port\", ...]}}, \"task\": {{\"type\": \"worker\", \"index\": K}}}}\n"


def test_fewer_shards_than_workers_is_a_clear_error(capsys):
    workers = ",".join(local_addresses(3))
    assert main(["--quiet", "train", "--train_prefix", str(TINY_CORPUS), "--vocab_file", VOCAB, "--save_dir",
                 "/tmp/unused", "--workers", workers, "--worker_index", "2", "--token_input",
                 "--n_negative_samples", "8"]) == 2
    assert "matches 1 file(s), fewer than the 3 workers of the cluster" in capsys.readouterr().err
