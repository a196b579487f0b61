"""What `bilm embed` promises beyond its numbers: resumes that check what they finish, device processes
that stop when the command stops (and only run on devices that exist), one right line on Ctrl-C."""
import json
import logging
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow as tf

from bilm.cli import main
from bilm.core.files import PartsJob
from conftest import make_options, random_sentences, write_model

ROOT = Path(__file__).resolve().parents[1]
N_LINES = 600
PAUSE_AT = 100  # sentences: the command stops itself (SIGSTOP) once it has told this many
# The bilm command, telling on stdout what it has done: "unit K" once unit K is in the open part (one
# process), "sentences N" once the device processes have added N more sentences to theirs (--devices);
# once it has told PAUSE_AT sentences it stops itself, so that a loaded machine cannot let it finish
# before the test has sent its signal.
TELLING = f"""
import os, signal, sys
import bilm.embedding.devices, bilm.core.files

add = bilm.core.files.PartWriter.add
told = 0


def tell(line, sentences):
    global told
    print(line, flush=True)
    told += sentences
    if told >= {PAUSE_AT} > told - sentences:
        os.kill(os.getpid(), signal.SIGSTOP)


def add_and_tell(self, unit, datasets):
    add(self, unit, datasets)
    tell(f"unit {{unit}}", 4)  # --batch-size 4


class TellingBar(bilm.embedding.devices.tqdm):
    def update(self, n=1):
        super().update(n)
        tell(f"sentences {{n}}", n)


bilm.core.files.PartWriter.add = add_and_tell
bilm.embedding.devices.tqdm = TellingBar
from bilm.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A tiny model, N_LINES lines, and the file one process makes of them."""
    directory = tmp_path_factory.mktemp("embed")
    options_file, weight_file = write_model(directory / "model", make_options(), seed=7)
    data = directory / "data.txt"
    rng = np.random.default_rng(8)
    data.write_text("".join(" ".join(s) + "\n" for s in random_sentences(rng, N_LINES, max_len=20)),
                    encoding="utf-8")
    model = ["--options", options_file, "--weights", weight_file, "--batch-size", "4"]
    one = directory / "one.hdf5"
    assert main(["--quiet", "embed", str(data), str(one), *model]) == 0
    return {"data": str(data), "model": model, "one": one}


def assert_same_bytes(path, expected_path):
    """The same datasets, array by array, and the same sentence_to_index bytes."""
    with h5py.File(path, "r") as got, h5py.File(expected_path, "r") as want:
        assert sorted(got) == sorted(want)
        for key in want:
            np.testing.assert_array_equal(got[key][...], want[key][...], err_msg=key)


def ended_within(pids, seconds):
    """Wait until none of ``pids`` runs, at most ``seconds``."""
    deadline = time.time() + seconds
    while any(running(pid) for pid in pids):
        assert time.time() < deadline, "device processes outlived the command"
        time.sleep(0.05)


def saved_sentences(output):
    """Sentences in the parts of an interrupted job on ``output``, device files included (read here)."""
    parts = list(Path(str(output) + ".parts").glob("part-*.hdf5"))
    devices = Path(str(output) + ".devices")
    parts += list(devices.glob("device-*.hdf5.parts/part-*.hdf5")) + list(devices.glob("device-*.hdf5"))
    count = 0
    for part in parts:
        with h5py.File(part, "r") as fin:
            count += sum(1 for name in fin if name.isdigit())
    return count


def children(pid):
    """Process ids whose parent is ``pid`` (with --devices: one per device, and multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if entry.name.isdigit() and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def running(pid):
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Command:
    """``bilm embed`` in its own session, telling what it has done (``TELLING``), stderr a pipe or a terminal."""

    def __init__(self, args, terminal=False):
        self.stderr_fd = None
        stderr = subprocess.PIPE
        if terminal:
            self.stderr_fd, stderr = pty.openpty()
        self.process = subprocess.Popen([sys.executable, "-c", TELLING, *args], cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=stderr, start_new_session=True)
        if terminal:
            os.close(stderr)
        self.told = 0

    def wait_until_saved(self, timeout=180):
        """Read what it tells until ``PAUSE_AT`` sentences are in its open parts, and wait until it has stopped
        itself there."""
        deadline = time.time() + timeout
        while self.told < PAUSE_AT:
            assert time.time() < deadline and self.process.poll() is None, "the job ended or hung"
            line = self.process.stdout.readline().decode()
            self.told += int(line.split()[1]) if line.startswith("sentences") else 4 * line.startswith("unit")
        while (Path("/proc") / str(self.process.pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            assert time.time() < deadline, "the job did not stop itself"
            time.sleep(0.01)

    def stop(self, how, whole_group=False, timeout=180):
        """Send signal ``how`` (to its whole process group, as a terminal's Ctrl-C does), let the command
        continue to receive it; return its stderr."""
        send = os.killpg if whole_group else os.kill
        send(self.process.pid, how)
        send(self.process.pid, signal.SIGCONT)
        if self.stderr_fd is None:
            _, stderr = self.process.communicate(timeout=timeout)
            return stderr.decode()
        chunks, deadline = [], time.time() + timeout
        while time.time() < deadline:
            if select.select([self.stderr_fd], [], [], 1.0)[0]:
                try:
                    chunk = os.read(self.stderr_fd, 65536)
                except OSError:  # the terminal's other side is closed: all is read
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        os.close(self.stderr_fd)
        self.process.communicate(timeout=timeout)
        return b"".join(chunks).decode()


def the_one_line(stderr, what="interrupted", total=N_LINES):
    """The count of the one line that says what is saved (a terminal's progress bar around it aside)."""
    lines = [line for line in re.split(r"[\r\n]+", stderr) if "are saved in" in line]
    assert len(lines) == 1, stderr
    match = re.fullmatch(rf"bilm: {re.escape(what)}; ([\d,]+) of {total:,} sentences are saved in \S+; run the same "
                         rf"command with --resume to finish", lines[0].strip())
    assert match, lines
    assert "Traceback" not in stderr and "resume=True" not in stderr, stderr
    return int(match.group(1).replace(",", ""))


def test_resume_of_a_complete_output_checks_what_it_was_made_from(job, tmp_path, capsys):
    out = tmp_path / "e.hdf5"
    shutil.copy(job["one"], out)
    made = out.read_bytes()
    with h5py.File(out, "r") as fin:  # the original's keys and sentence_to_index: the record is an attribute
        assert sorted(fin) == sorted([str(k) for k in range(N_LINES)] + ["sentence_to_index"])
        record = json.loads(fin.attrs["bilm_job"])
    assert record["dataset_file"][0] == job["data"] and record["layers"] == "all" and record["batch_size"] == 4
    other = tmp_path / "other.txt"
    other.write_text("another input\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["--quiet", "embed", str(other), str(out), *job["model"], "--resume"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"bilm: error: {out}: complete, but made from other inputs or settings: the input text "
                            f"was {job['data']} (") and f"bytes, modified " in error
    assert f", is {other} (14 bytes, modified " in error and error.endswith("pass --overwrite to replace it\n")
    for devices in ([], ["--devices", "cpu:2"]):  # checked before any device process starts
        assert main(["--quiet", "embed", job["data"], str(out), *job["model"], "--layers", "top", "--resume",
                     *devices]) == 2
        assert "made from other inputs or settings: --layers was 'all', is 'top'; use it as it" in \
            capsys.readouterr().err
    assert out.read_bytes() == made
    for devices in ([], ["--devices", "cpu:2"]):  # what made it: complete, however it is split
        assert main(["--quiet", "embed", job["data"], str(out), *job["model"], "--resume", *devices]) == 0
    assert out.read_bytes() == made and not list(tmp_path.glob("e.hdf5.*"))
    with h5py.File(out, "a") as fout:  # as an older bilm made it: nothing to check it against
        del fout.attrs["bilm_job"]
    assert main(["--quiet", "embed", job["data"], str(out), *job["model"], "--resume"]) == 2
    assert (f"bilm: error: {out}: complete, but it records no inputs and settings (an older bilm's output, or not "
            f"bilm's), so --resume cannot check") in capsys.readouterr().err


def test_device_files_are_finished_only_by_the_split_that_made_them(job, tmp_path, capsys, monkeypatch):
    out = tmp_path / "e.hdf5"
    finish = PartsJob.finish

    def stop_before_assembly(self, *args, **kwargs):  # in this process only: the devices' own jobs finish
        if self.directory.endswith(".devices"):
            raise KeyboardInterrupt
        return finish(self, *args, **kwargs)

    monkeypatch.setattr(PartsJob, "finish", stop_before_assembly)
    assert main(["--quiet", "embed", job["data"], str(out), *job["model"], "--devices", "cpu:2"]) == 130
    assert f"bilm: interrupted; {N_LINES} of {N_LINES} sentences are saved in {out}.devices; run" in \
        capsys.readouterr().err
    monkeypatch.undo()
    devices = Path(str(out) + ".devices")
    assert sorted(p.name for p in devices.iterdir()) == ["device-000.hdf5", "device-001.hdf5", "job.json"]
    for other in ("cpu:1", "cpu:3"):  # line i is on device i % n: another n has other shares
        assert main(["--quiet", "embed", job["data"], str(out), *job["model"], "--devices", other, "--resume"]) == 2
        assert (f"{devices}/job.json: the interrupted run had other inputs or settings: the number of --devices "
                f"processes was 2, is {other[-1]}; resume with the same ones") in capsys.readouterr().err
    assert main(["--quiet", "embed", job["data"], str(out), *job["model"], "--resume"]) == 2
    assert (f"{devices}: an interrupted run with --devices left its parts here; resume it with --devices, or pass "
            f"--overwrite") in capsys.readouterr().err
    assert not out.exists()
    assert main(["--quiet", "embed", job["data"], str(out), *job["model"], "--devices", "cpu:2", "--resume"]) == 0
    assert_same_bytes(out, job["one"])  # sentence_to_index too: its keys in the order one process writes them
    assert not devices.exists()


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="this machine has GPUs")
def test_a_gpu_that_is_not_there_is_an_error_naming_the_devices_there(job, tmp_path, capsys):
    out = tmp_path / "e.hdf5"
    for devices, named in (("gpu:3", "gpu:3 is"), ("gpu:0,gpu:1", "gpu:0, gpu:1 are")):
        assert main(["--quiet", "embed", job["data"], str(out), *job["model"], "--devices", devices]) == 2
        assert capsys.readouterr().err == (f"bilm: error: --devices: {named} not on this machine, which has no GPU "
                                           f"(cpu:N runs N processes on the CPU)\n")
    assert list(tmp_path.iterdir()) == []  # refused before anything started


@pytest.mark.parametrize("devices, terminal", [([], True), (["--devices", "cpu:2"], False),
                                               (["--devices", "cpu:2"], True)])
def test_ctrl_c_says_in_one_line_how_many_sentences_the_parts_hold(job, tmp_path, devices, terminal):
    out = tmp_path / "e.hdf5"
    command = Command(["embed", job["data"], str(out), *job["model"], *devices], terminal)
    command.wait_until_saved()
    stderr = command.stop(signal.SIGINT, whole_group=True)
    assert command.process.returncode == 130, stderr
    assert PAUSE_AT <= the_one_line(stderr) == saved_sentences(out)
    assert not out.exists()


def test_sigterm_is_passed_on_to_the_device_processes_which_save_their_parts(job, tmp_path):
    out = tmp_path / "e.hdf5"
    command = Command(["embed", job["data"], str(out), *job["model"], "--devices", "cpu:2"])
    command.wait_until_saved()
    devices = children(command.process.pid)
    assert len(devices) >= 2
    stderr = command.stop(signal.SIGTERM)  # the command only, as a scheduler stops a job
    assert command.process.returncode == 143, stderr
    assert PAUSE_AT <= the_one_line(stderr, "terminated (SIGTERM)") == saved_sentences(out)
    ended_within(devices, 60)  # (multiprocessing's resource tracker ends once the command has)
    assert main(["--quiet", "embed", job["data"], str(out), *job["model"], "--devices", "cpu:2", "--resume"]) == 0
    assert_same_bytes(out, job["one"])


def test_a_killed_command_takes_its_device_processes_with_it(job, tmp_path):
    out = tmp_path / "e.hdf5"
    command = Command(["embed", job["data"], str(out), *job["model"], "--devices", "cpu:2"])
    command.wait_until_saved()
    devices = children(command.process.pid)
    assert len(devices) >= 2
    command.process.send_signal(signal.SIGKILL)  # no chance to tell them
    command.process.communicate(timeout=60)
    ended_within(devices, 60)
    assert saved_sentences(out) >= 100  # they saved what they had done
    assert main(["--quiet", "embed", job["data"], str(out), *job["model"], "--devices", "cpu:2", "--resume"]) == 0
    assert_same_bytes(out, job["one"])


def test_a_directory_an_empty_input_and_counts_of_one(job, tmp_path, capsys, caplog):
    out = tmp_path / "e.hdf5"
    assert main(["--quiet", "embed", str(tmp_path), str(out), *job["model"]]) == 2
    assert capsys.readouterr().err == f"bilm: error: {tmp_path}: is a directory; expected a file (input file)\n"
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    caplog.set_level(logging.INFO)
    assert main(["embed", str(empty), str(out), *job["model"]]) == 0
    assert f"{empty}: empty file; the output holds no sentences" in caplog.text
    with h5py.File(out, "r") as fin:
        assert list(fin) == ["sentence_to_index"]
    one = tmp_path / "one.txt"
    one.write_text("one line\n", encoding="utf-8")
    caplog.clear()
    assert main(["embed", str(one), str(tmp_path / "one.hdf5"), *job["model"]]) == 0
    assert main(["embed", str(one), str(tmp_path / "dev.hdf5"), *job["model"], "--devices", "cpu:1"]) == 0
    messages = [record.getMessage() for record in caplog.records]
    assert f"wrote 1 sentence to {tmp_path / 'one.hdf5'}" in messages
    assert f"wrote 1 sentence to {tmp_path / 'dev.hdf5'} on 1 device" in messages
