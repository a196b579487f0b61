"""`bilm embed --ray` on a local Ray instance (127.0.0.1): the file of one process, after a killed actor or driver."""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bilm.cli import main
from bilm.embedding.dumps import dump_bilm_embeddings
from bilm.errors import InputError
from bilm.embedding.ray import dump_on_ray
from conftest import make_options, random_sentences, same_hdf5, write_model

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install '.[ray]'")


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def session():
    """One local Ray instance for the module (bilm uses a session the caller started as it is)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    options_file, weight_file = write_model(directory, make_options(skip=True), seed=5)
    data = directory / "data.txt"
    sentences = random_sentences(np.random.default_rng(3), 400, max_len=12)
    data.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
    one = directory / "one.hdf5"
    dump_bilm_embeddings(None, str(data), options_file, weight_file, str(one), batch_size=4, sentence_to_index=True)
    return {"options": options_file, "weights": weight_file, "data": str(data), "one": one}


def _actor_pids():
    """Process ids of the Ray actors computing embeddings (their process title names the class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and "_Embedder" in title:
            pids.append(int(entry.name))
    return pids


def test_a_killed_actor_is_retried_and_the_file_is_that_of_one_process(session, model, tmp_path):
    out = tmp_path / "ray.hdf5"
    killed, written = [], []

    def kill_an_actor_once(n):  # called by the driver after each batch it writes
        written.append(n)
        if not killed:
            actors = _actor_pids()
            assert len(actors) == 2
            os.kill(actors[0], signal.SIGKILL)
            killed.append((actors[0], sum(written)))

    dump_on_ray(None, None, model["data"], model["options"], model["weights"], str(out), batch_size=4,
                sentence_to_index=True, workers=2, progress=kill_an_actor_once)
    (pid, written_then), = killed
    assert written_then < 100 and sum(written) == 400  # killed early; every sentence written once
    assert pid not in _actor_pids()
    same_hdf5(out, model["one"])


def test_a_killed_driver_is_resumed_to_the_same_file(session, model, tmp_path):
    out = tmp_path / "resumed.hdf5"
    args = [model["data"], str(out), "--options", model["options"], "--weights", model["weights"],
            "--batch-size", "4", "--ray"]
    process = subprocess.Popen([sys.executable, "-m", "bilm.cli", "--quiet", "embed", *args], cwd=ROOT,
                               start_new_session=True)
    parts = Path(str(out) + ".parts")
    deadline = time.time() + 180
    while not (parts / "job.json").exists() and time.time() < deadline and process.poll() is None:  # writing
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the command and the local Ray it started
    process.wait()
    assert not out.exists() and parts.is_dir()
    assert main(["--quiet", "embed", *args]) == 2  # an interrupted job's parts are there: not overwritten
    assert main(["--quiet", "embed", *args, "--resume"]) == 0
    same_hdf5(out, model["one"])
    assert not parts.exists()


def test_what_ray_cannot_do_is_refused_in_one_line(model, tmp_path, capsys, monkeypatch):
    args = ["--quiet", "embed", model["data"], str(tmp_path / "out.hdf5"), "--options", model["options"],
            "--weights", model["weights"], "--ray"]
    assert main([*args, "--state-mode", "stateful"]) == 2
    assert "'stateful' carries states from line to line" in capsys.readouterr().err
    assert main([*args, "--devices", "cpu:2"]) == 2
    assert "give it without --devices" in capsys.readouterr().err
    assert main([*args[:-1], "--ray-workers", "2"]) == 2
    assert "--ray-workers goes with --ray" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(InputError, match=r"needs Ray, which is not installed: pip install 'ray\[data\]' \(in "
                                         r"bilm's clone: pip install '\.\[ray\]'\)"):
        dump_on_ray(None, None, model["data"], model["options"], model["weights"], str(tmp_path / "x.hdf5"))
    assert not list(tmp_path.iterdir())


def _listening_sockets():
    """{socket inode: (address, port)} of the TCP sockets listening on this machine (IPv4 and IPv6)."""
    found = {}
    for family, table in ((socket.AF_INET, "/proc/net/tcp"), (socket.AF_INET6, "/proc/net/tcp6")):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found[fields[9]] = (socket.inet_ntop(family, raw), int(port, 16))
    return found


def _process_tree(root):
    """{pid: command line} of ``root`` and every process below it."""
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        try:
            tree[pid] = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        todo += [child for child, parent in parents.items() if parent == pid]
    return tree


def _sockets_of(pid):
    inodes = set()
    try:
        for fd in (Path("/proc") / str(pid) / "fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:["):-1])
    except OSError:
        pass
    return inodes


def test_a_local_ray_instance_listens_on_loopback_only(model, tmp_path):
    out = tmp_path / "ray.hdf5"
    process = subprocess.Popen([sys.executable, "-m", "bilm.cli", "--quiet", "embed", model["data"], str(out),
                                "--options", model["options"], "--weights", model["weights"], "--batch-size", "4",
                                "--ray"], cwd=ROOT, start_new_session=True)
    listening = {}  # {(process, address, port)}, all seen while the job runs
    deadline = time.time() + 300
    try:
        while process.poll() is None and time.time() < deadline:
            sockets = _listening_sockets()
            for pid, command in _process_tree(process.pid).items():
                name = next((n for n in ("gcs_server", "raylet/raylet", "_Embedder") if n in command), command[:40])
                for inode in _sockets_of(pid) & set(sockets):
                    listening[(name,) + sockets[inode]] = pid
            time.sleep(0.1)  # sampled while it runs: the servers listen from start to end
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0
    names = {name for name, _, _ in listening}
    assert {"gcs_server", "raylet/raylet", "_Embedder"} <= names, listening  # Ray's servers and the job's workers
    everywhere = [key for key in listening if key[1] not in ("127.0.0.1", "::ffff:127.0.0.1")]
    assert not everywhere, everywhere
    same_hdf5(out, model["one"])
