"""Training across worker processes on 127.0.0.1 (TensorFlow's collective ops), bounded in time."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm.data import BidirectionalLMDataset
from bilm.lm_dataset import load_vocab
from bilm.training import train
from bilm.cli import main
from bilm.cluster import local_addresses
from bilm.evaluation import evaluate_checkpoint
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


def run_workers(specs):
    processes = [subprocess.Popen([sys.executable, WORKER, json.dumps(spec)], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for spec in specs]
    for process in processes:
        _, err = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, err[-3000:]


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
    run_workers([single])
    run_workers(halves)
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


def test_a_worker_with_other_options_is_refused_at_start(tmp_path):
    addresses = local_addresses(2)
    workers = ",".join(addresses)
    for k in range(2):
        (tmp_path / f"shard{k}.txt").write_text(TINY_CORPUS.read_text(encoding="utf-8"), encoding="utf-8")
    common = ["--train_prefix", str(tmp_path / "shard*.txt"), "--vocab_file", VOCAB, "--workers", workers,
              "--token_input",
              "--batch_size", "2", "--unroll_steps", "5", "--n_negative_samples", "8", "--projection_dim", "8",
              "--n_epochs", "1", "--worker_timeout", "30"]
    processes = [subprocess.Popen([sys.executable, "-m", "bilm.cli", "train", *common, "--save_dir",
                                   str(tmp_path / f"s{k}"), "--worker_index", str(k), "--lstm_dim", str(16 * (k + 1))],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 2, stderr[-2000:]
        assert "started with options, a vocabulary or training files other than the chief's" in stderr
    assert not list((tmp_path / "s0").glob("model.ckpt-*"))


def test_fewer_shards_than_workers_is_a_clear_error(capsys):
    workers = ",".join(local_addresses(3))
    assert main(["--quiet", "train", "--train_prefix", str(TINY_CORPUS), "--vocab_file", VOCAB, "--save_dir",
                 "/tmp/unused", "--workers", workers, "--worker_index", "2", "--token_input",
                 "--n_negative_samples", "8"]) == 2
    assert "matches 1 file(s), fewer than the 3 workers of the cluster" in capsys.readouterr().err
