"""Nothing is lost: killed dumps resume to the same file, killed training restarts, full disks fail cleanly."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from bilm import dump_bilm_embeddings, dump_token_embeddings
from bilm.cli import main
from bilm.errors import OutputExistsError
from bilm.core.files import PartsJob
from bilm.core.vocabulary import build_vocabulary, count_tokens, write_vocabulary
from conftest import make_options, random_sentences, write_model

ROOT = Path(__file__).resolve().parents[1]
WORKER = "import json, sys, bilm; getattr(bilm, sys.argv[1])(**json.loads(sys.argv[2]))"


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A tiny model, 1,500 sentences and their vocabulary."""
    directory = tmp_path_factory.mktemp("recovery")
    options_file, weight_file = write_model(directory / "model", make_options(), seed=3)
    rng = np.random.default_rng(0)
    sentences = [" ".join(s) + f" w{rng.integers(3000)}" for s in random_sentences(rng, 1500, max_len=12)]
    data = directory / "data.txt"
    data.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    vocab = directory / "vocab.txt"
    write_vocabulary(build_vocabulary(count_tokens([str(data)])[0]), str(vocab))
    return {"options_file": options_file, "weight_file": weight_file, "vocab_file": str(vocab),
            "dataset_file": str(data), "dir": directory}


def assert_same_file(path, expected_path):
    with h5py.File(path, "r") as got, h5py.File(expected_path, "r") as expected:
        assert sorted(got) == sorted(expected)
        for key in expected:
            np.testing.assert_array_equal(got[key][...], expected[key][...], err_msg=key)


def kill_when(function, kwargs, parts_dir, n_parts, timeout=120):
    """Run ``bilm.function(**kwargs)`` in a subprocess; SIGKILL it once ``parts_dir`` has n_parts parts
    (n_parts 0: once ``parts_dir`` exists, while the first part is being written)."""
    process = subprocess.Popen([sys.executable, "-c", WORKER, function, json.dumps(kwargs)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if os.path.isdir(parts_dir):
            parts = [n for n in os.listdir(parts_dir) if n.startswith("part-") and n.endswith(".hdf5")]
            if len(parts) >= n_parts:
                break
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the job ended before it could be killed"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """{state_mode: the file of an uninterrupted dump}, made once per mode."""
    made = {}

    def dump(state_mode, **common):
        if state_mode not in made:
            made[state_mode] = tmp_path_factory.mktemp("uninterrupted") / f"{state_mode}.hdf5"
            dump_bilm_embeddings(outfile=str(made[state_mode]), state_mode=state_mode, **common)
        return made[state_mode]
    return dump


@pytest.mark.parametrize("state_mode, kill_after_parts", [("warm", 1), ("warm", 9), ("stateful", 4)])
def test_killed_dump_bilm_embeddings_resumes_to_the_same_file(job, uninterrupted, tmp_path, state_mode,
                                                              kill_after_parts):
    common = {k: job[k] for k in ("vocab_file", "dataset_file", "options_file", "weight_file")}
    common.update(batch_size=4, part_size=100)
    expected = uninterrupted(state_mode, **common)
    common["state_mode"] = state_mode

    out = tmp_path / "out.hdf5"
    kill_when("dump_bilm_embeddings", dict(common, outfile=str(out)), str(out) + ".parts", kill_after_parts)
    assert not out.exists()  # a killed run never leaves a file that looks complete
    with pytest.raises(OutputExistsError, match="pass resume=True"):
        dump_bilm_embeddings(outfile=str(out), **common)
    dump_bilm_embeddings(outfile=str(out), resume=True, **common)
    assert_same_file(out, expected)
    assert not os.path.exists(str(out) + ".parts")
    dump_bilm_embeddings(outfile=str(out), resume=True, **common)  # complete: nothing to do
    assert_same_file(out, expected)


def test_killed_dump_token_embeddings_resumes_to_the_same_file(job, tmp_path):
    vocab = tmp_path / "vocab.txt"
    rng = np.random.default_rng(1)
    write_vocabulary(["<S>", "</S>", "<UNK>"] + [f"t{k}" + "x" * rng.integers(20) for k in range(30000)], str(vocab))
    common = {"vocab_file": str(vocab), "options_file": job["options_file"], "weight_file": job["weight_file"],
              "part_size": 64}
    expected = tmp_path / "expected.hdf5"
    dump_token_embeddings(outfile=str(expected), **common)
    out = tmp_path / "out.hdf5"
    kill_when("dump_token_embeddings", dict(common, outfile=str(out)), str(out) + ".parts", 50)
    assert not out.exists()
    dump_token_embeddings(outfile=str(out), resume=True, **common)
    assert_same_file(out, expected)
    # The defaults: chunks of 512 tokens, up to 32 chunks a part (2 parts here), rows in vocabulary order.
    defaults = tmp_path / "defaults.hdf5"
    dump_token_embeddings(str(vocab), job["options_file"], job["weight_file"], str(defaults))
    with h5py.File(defaults, "r") as got, h5py.File(expected, "r") as want:
        assert got["embedding"].shape == want["embedding"].shape == (30003, 8)
        np.testing.assert_allclose(got["embedding"][...], want["embedding"][...], atol=1e-6)


@pytest.mark.parametrize("interrupted_unit", [0, 2])
def test_a_unit_interrupted_while_it_is_added_leaves_nothing(tmp_path, interrupted_unit):
    # Ctrl-C after a unit's datasets are written but before the part counts it (here: while its
    # states are read): the part keeps the units before it, with the states after the last of them.
    out = str(tmp_path / "out.hdf5")
    calls = []

    def states():
        calls.append(len(calls))
        if len(calls) == interrupted_unit + 1:
            raise KeyboardInterrupt
        return {"h": np.full(2, len(calls), np.float32)}

    with pytest.raises(KeyboardInterrupt), PartsJob(out, {"k": 1}) as job, \
            job.writer(max_units=10, flush_seconds=1e9, states=states) as writer:
        for unit in range(5):
            writer.add(unit, {str(unit): np.full(3, unit, np.float32)})
    with PartsJob(out, {"k": 1}, resume=True) as job:
        assert sorted(job.done) == list(range(interrupted_unit))
        if interrupted_unit:
            np.testing.assert_array_equal(job.states_before(interrupted_unit)["h"], [interrupted_unit] * 2)
        with job.writer(states=lambda: {"h": np.zeros(2, np.float32)}) as writer:
            for unit in range(interrupted_unit, 5):
                writer.add(unit, {str(unit): np.full(3, unit, np.float32)})
        job.finish()
    with h5py.File(out, "r") as fin:
        assert sorted(fin, key=int) == [str(unit) for unit in range(5)]


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB file system (tmpfs) at ``tmp_path / "disk"``; skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield disk
    subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_full_disk_is_one_line_keeps_the_parts_and_resumes_once_there_is_room(job, small_disk, tmp_path):
    # HDF5 crashed (segmentation fault) closing a file it could not write: it must never meet the full disk.
    data = tmp_path / "data.txt"
    rng = np.random.default_rng(6)
    data.write_text("".join(" ".join(s) + "\n" for s in random_sentences(rng, 6000, max_len=20)), encoding="utf-8")
    model = ["--options", job["options_file"], "--weights", job["weight_file"]]
    expected = tmp_path / "expected.hdf5"
    assert main(["--quiet", "embed", str(data), str(expected), *model]) == 0
    assert 11e6 < expected.stat().st_size < 19e6  # the parts fit on the disk, the parts and the output do not
    out = small_disk / "out.hdf5"
    small = tmp_path / "small.txt"
    small.write_text("an earlier output\n", encoding="utf-8")
    assert main(["--quiet", "embed", str(small), str(out), *model]) == 0
    earlier = out.read_bytes()

    def embed(output, *more):
        return subprocess.run([sys.executable, "-m", "bilm.cli", "--quiet", "embed", str(data), str(output), *model,
                               *more], cwd=ROOT, capture_output=True, text=True, timeout=600)

    # Room for the parts (4,096 sentences a part: two here), not for the output assembled from them.
    result = embed(out, "--overwrite")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"bilm: error: {out}: cannot write (No space left on device: it needs ")
    assert f"the disk of {small_disk} has " in result.stderr and "MB free); the parts are kept in" in result.stderr
    parts = Path(str(out) + ".parts")
    assert sorted(p.name for p in parts.iterdir()) == ["job.json", "part-000000000-000000064.hdf5",
                                                        "part-000000064-000000094.hdf5"]
    assert out.read_bytes() == earlier  # the earlier complete output is untouched
    # No room for a part: the part is not written, the job stops at its first part.
    other = small_disk / "other.hdf5"
    result = embed(other)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"bilm: error: {other}.parts/part-000000000-000000064.hdf5: cannot write (No "
                                    f"space left on device: the disk of {small_disk} is full); complete parts")
    assert not list(small_disk.rglob("*.tmp*"))  # no temporary file is left
    assert sorted(p.name for p in Path(str(other) + ".parts").iterdir()) == ["job.json"]
    # merge writes links and a sentence_to_index record: checked for room too.
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "filler").write_bytes(b"\0" * (free - 2 ** 16))
    merged = small_disk / "merged.hdf5"
    result = subprocess.run([sys.executable, "-m", "bilm.cli", "merge", str(merged), str(expected)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"bilm: error: {merged}: cannot write (No space left on device: it needs ")
    assert not merged.exists()
    (small_disk / "filler").unlink()
    # Room made: --resume finishes the file from the parts.
    assert subprocess.run(["mount", "-o", "remount,size=60m", str(small_disk)]).returncode == 0
    assert main(["--quiet", "embed", str(data), str(out), *model, "--resume"]) == 0
    assert_same_file(out, expected)
    assert not parts.exists()


def _latest_step(save_dir):
    """The global step of the latest complete checkpoint (the one TensorFlow's `checkpoint` file names), or 0."""
    state = Path(save_dir) / "checkpoint"
    match = re.search(r'^model_checkpoint_path: ".*model\.ckpt-(\d+)"', state.read_text(), re.M) \
        if state.exists() else None
    return int(match.group(1)) if match else 0


def test_killed_training_restarts_from_its_last_complete_checkpoint(job, tmp_path):
    save = tmp_path / "ckpt"
    common = ["--train_prefix", job["dataset_file"], "--vocab_file", job["vocab_file"], "--save_dir", str(save)]
    train = [sys.executable, "-m", "bilm.cli", "--quiet", "train", *common, "--lstm_dim", "16", "--projection_dim",
             "8", "--filters", "[[1, 8], [2, 8]]", "--n_highway", "1", "--char_embedding_dim", "4", "--batch_size",
             "4", "--unroll_steps", "5", "--n_negative_samples", "8", "--n_train_tokens", "10000", "--n_epochs", "1",
             "--checkpoint_every", "4", "--seed", "0"]
    total = 10000 // (4 * 5)  # (long enough to be killed before its end: a step of this model takes milliseconds)
    restart = [sys.executable, "-m", "bilm.cli", "--quiet", "restart", *common, "--checkpoint_every", "4"]
    delays = random.Random(0)
    for command, more_steps in ((train, 4), (restart, 12)):
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = _latest_step(save) + more_steps
        while process.poll() is None and _latest_step(save) < target:
            time.sleep(0.002)
        time.sleep(delays.uniform(0, 0.2))  # then kill at any moment, perhaps while saving
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, process.stderr.read()
        process.stderr.close()
        assert 4 <= _latest_step(save) < total
    # The run is finished by restart: from the saved global step to the total, no more.
    assert main(["--quiet", "restart", *common, "--checkpoint_every", "4"]) == 0
    assert _latest_step(save) == total
    assert (save / f"model.ckpt-{total}.index").exists()
    with pytest.raises(SystemExit):
        main(["--quiet", "train", *common[:4]])  # --save_dir missing: a usage error
    assert main(["--quiet", "train", *common, "--n_train_tokens", "100"]) == 2  # checkpoints exist: refused
