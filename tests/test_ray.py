"""`bilm embed --ray` on a local Ray instance (127.0.0.1): the file of one process, after a killed actor or driver."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bilm.cli import main
from bilm.dumps import dump_bilm_embeddings
from bilm.errors import InputError
from bilm.ray_embed import dump_on_ray
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
    while not list(parts.glob("part-*")) and time.time() < deadline and process.poll() is None:
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
