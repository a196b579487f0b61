"""`bilm download`: catalogue, cache, integrity record, resumed downloads — against a local HTTP server."""
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import pytest

from bilm.cli import main
from bilm.core.download import CATALOGUE, DownloadError, download, model_files
from bilm.errors import InputError
from conftest import make_options, write_model

ROOT = Path(__file__).resolve().parents[1]


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HEAD and single ``Range: bytes=N-`` support; logs the ranges and GETs asked for.

    ``unsized``: files served without Content-Length and cut to half their bytes (HEAD too);
    ``gate``: while it is set to an Event, a GET of the weights waits for it (``waiting`` is set then).
    """
    ranges, gets, unsized = [], [], set()
    gate, waiting = None, threading.Event()

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        if Path(self.path).name in RangeHandler.unsized:
            self.send_response(200)
            self.end_headers()
        else:
            super().do_HEAD()

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return self.send_error(404)
        RangeHandler.gets.append(path.name)
        if path.name == "weights.hdf5" and RangeHandler.gate is not None:
            RangeHandler.waiting.set()
            assert RangeHandler.gate.wait(timeout=120)
        data = path.read_bytes()
        if path.name in RangeHandler.unsized:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])  # and the connection closes: the file looks complete
            return
        requested = self.headers.get("Range")
        if requested:
            RangeHandler.ranges.append(requested)
            start = int(requested.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A tiny model served on 127.0.0.1, listed in a catalogue file, and an empty cache."""
    served = tmp_path / "served"
    options_file, weight_file = write_model(served, make_options(), seed=5)
    handler = lambda *args: RangeHandler(*args, directory=str(served))  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    files = {"options": f"{url}/options.json", "weights": f"{url}/weights.hdf5"}
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"tiny": {"description": "test model", "files": files, "sha256": {
        "options": sha256(options_file), "weights": sha256(weight_file)}}}))
    monkeypatch.setenv("BILM_CATALOGUE", str(catalogue))
    monkeypatch.setenv("BILM_CACHE", str(tmp_path / "cache"))
    RangeHandler.ranges, RangeHandler.gets, RangeHandler.unsized = [], [], set()
    RangeHandler.gate, RangeHandler.waiting = None, threading.Event()
    yield {"options": Path(options_file), "weights": Path(weight_file), "cache": tmp_path / "cache",
           "files": files, "catalogue": catalogue}
    if RangeHandler.gate is not None:
        RangeHandler.gate.set()
    httpd.shutdown()


def test_download_verify_and_use_by_name(server, tmp_path, capsys):
    paths = download("tiny", progress=False)
    for role in ("options", "weights"):
        assert Path(paths[role]).read_bytes() == server[role].read_bytes()
    manifest = json.loads((server["cache"] / "tiny" / "manifest.json").read_text())
    assert manifest["weights"]["size"] == server["weights"].stat().st_size
    assert manifest["weights"]["sha256"] == hashlib.sha256(server["weights"].read_bytes()).hexdigest()
    assert model_files("tiny") == (paths["options"], paths["weights"], None)

    data = tmp_path / "data.txt"
    data.write_text("the cat sat\nhello\n")
    assert main(["--quiet", "embed", str(data), str(tmp_path / "out.hdf5"), "--model", "tiny"]) == 0
    with h5py.File(tmp_path / "out.hdf5", "r") as fin:
        assert fin["0"].shape == (3, 3, 16)

    # A cached file that no longer matches its record is downloaded again.
    cached = Path(paths["weights"])
    damaged = bytearray(cached.read_bytes())
    damaged[-1] ^= 0xFF
    cached.write_bytes(bytes(damaged))
    download("tiny", progress=False)
    assert cached.read_bytes() == server["weights"].read_bytes()
    assert main(["download", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in list(CATALOGUE) + ["tiny"])


def test_a_partial_download_resumes_with_a_range_request(server):
    directory = server["cache"] / "tiny"
    directory.mkdir(parents=True)
    content = server["weights"].read_bytes()
    (directory / "weights.hdf5.partial").write_bytes(content[:1000])
    paths = download("tiny", progress=False)
    assert Path(paths["weights"]).read_bytes() == content
    assert RangeHandler.ranges == ["bytes=1000-"]
    assert not (directory / "weights.hdf5.partial").exists()


def test_download_errors_are_clear(server, monkeypatch, tmp_path):
    with pytest.raises(InputError, match=r"unknown model 'large'; expected one of: lm1b, medium, original, "
                                         r"original-5\.5b, original-checkpoint, small, tiny"):
        download("large")
    with pytest.raises(InputError, match=r"unknown model 'nosuch'; expected one of: default, medium, original, "
                                         r"original-5\.5b, small, tiny$"):  # models to use: no checkpoint
        model_files("nosuch")
    with pytest.raises(InputError, match=r"model 'tiny' is not downloaded to .*; run `bilm download tiny`"):
        model_files("tiny")
    with pytest.raises(SystemExit):  # a usage error naming the fix
        main(["embed", "in.txt", str(tmp_path / "o.hdf5"), "--model", "tiny"])
    catalogue = tmp_path / "down.json"
    catalogue.write_text(json.dumps({"gone": {"files": {"options": "http://127.0.0.1:9/options.json",
                                                        "weights": "http://127.0.0.1:9/weights.hdf5"},
                                              "sha256": {"options": "0" * 64, "weights": "1" * 64}}}))
    monkeypatch.setenv("BILM_CATALOGUE", str(catalogue))
    with pytest.raises(DownloadError, match=r"http://127\.0\.0\.1:9/options\.json: download failed .*rerun to resume"):
        download("gone", progress=False)
    gone = Path(os.environ["BILM_CACHE"]) / "gone"
    assert not (gone / "options.json").exists() and not (gone / "manifest.json").exists()  # nothing looks done


def test_a_cut_file_that_the_server_gives_no_size_for_is_caught_by_its_checksum(server, monkeypatch):
    RangeHandler.unsized = {"weights.hdf5"}
    with pytest.raises(DownloadError, match=r"weights\.hdf5: received \d+ bytes whose SHA-256 is [0-9a-f]{64}, not "
                                            r"the catalogue's [0-9a-f]{64} \(damaged or cut short; removed\)"):
        download("tiny", progress=False)
    directory = server["cache"] / "tiny"
    assert not (directory / "weights.hdf5").exists() and not (directory / "weights.hdf5.partial").exists()
    assert "weights" not in json.loads((directory / "manifest.json").read_text())  # nothing recorded as verified
    # A built-in entry (no SHA-256) is checked against the server's size: with none, it is refused.
    monkeypatch.setitem(CATALOGUE, "unchecked", {"files": server["files"]})
    with pytest.raises(DownloadError, match=r"weights\.hdf5: the server announces no size and the catalogue "
                                            r"gives no SHA-256"):
        download("unchecked", progress=False)
    assert not (server["cache"] / "unchecked" / "weights.hdf5").exists()


def _catalogue_error(server, entry):
    server["catalogue"].write_text(json.dumps({"bad": entry}))
    with pytest.raises(InputError) as raised:
        download("bad", progress=False)
    return str(raised.value)


def test_a_catalogue_entry_needs_a_checksum_for_every_file_and_plain_names(server, tmp_path):
    catalogue, files = str(server["catalogue"]), server["files"]
    digests = {"options": "a" * 64, "weights": "b" * 64}
    assert _catalogue_error(server, {"files": files}) == (
        f"{catalogue}: entry 'bad': key \"sha256\" has no SHA-256 for 'options'; expected \"sha256\": "
        f"{{\"options\": \"<the 64 hex digits sha256sum prints>\"}}")
    assert "no SHA-256 for 'weights'" in _catalogue_error(server, {"files": files, "sha256": {"options": "a" * 64}})
    assert "no SHA-256 for 'weights'" in _catalogue_error(
        server, {"files": files, "sha256": {**digests, "weights": "not a digest"}})
    escaping = {**files, "../../x": files["options"]}
    assert _catalogue_error(server, {"files": escaping, "sha256": {**digests, "../../x": "c" * 64}}) == (
        f"{catalogue}: entry 'bad': file '../../x' is not a plain file name (no '/' or '..')")
    server["catalogue"].write_text(json.dumps({"../escape": {"files": files, "sha256": digests}}))
    with pytest.raises(InputError, match=r"entry '\.\./escape': expected a plain name"):
        download("../escape", progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "escape").exists()
    assert RangeHandler.gets == []  # refused before any download


def _bilm(*args, stderr):
    return subprocess.Popen([sys.executable, "-m", "bilm.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=stderr, text=True)


def _wait_for(condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_second_download_of_a_model_waits_for_the_first_then_finds_it_done(server, tmp_path):
    RangeHandler.gate = threading.Event()
    first = _bilm("download", "tiny", stderr=subprocess.PIPE)
    try:
        assert RangeHandler.waiting.wait(timeout=120)  # the first is downloading the weights
        log = tmp_path / "second.log"
        with open(log, "w") as stderr:
            second = _bilm("download", "tiny", stderr=stderr)
            try:
                _wait_for(lambda: "waiting for it to finish" in log.read_text())
                assert second.poll() is None
                RangeHandler.gate.set()
                out, _ = second.communicate(timeout=120)
            finally:
                second.kill()
        assert second.returncode == 0, log.read_text()
        _, first_err = first.communicate(timeout=120)
        assert first.returncode == 0, first_err
    finally:
        first.kill()
    assert "tiny: weights is downloaded and verified" in log.read_text()
    assert sorted(RangeHandler.gets) == ["options.json", "weights.hdf5"]  # each file once, by the first
    assert f"weights: {server['cache'] / 'tiny' / 'weights.hdf5'}" in out
    assert (server["cache"] / "tiny" / "weights.hdf5").read_bytes() == server["weights"].read_bytes()


def test_the_list_is_in_aligned_columns(server, capsys):
    assert main(["download", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    from bilm.core.download import catalogue
    entries = sorted(catalogue().items())
    assert len(lines) == len(entries)
    starts = {line.index(entry.get("description", "")) for line, (_, entry) in zip(lines, entries)}
    ends = {line.index(entry["parameters"]) + len(entry["parameters"])
            for line, (_, entry) in zip(lines, entries) if entry.get("parameters")}
    assert len(starts) == 1 and len(ends) == 1, lines  # the descriptions start, the sizes end, in one column
    assert all(line.startswith(name + " ") for line, (name, _) in zip(lines, entries))
