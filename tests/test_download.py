"""`bilm download`: catalogue, cache, integrity record, resumed downloads — against a local HTTP server."""
import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import h5py
import pytest

from bilm.cli import main
from bilm.download import CATALOGUE, DownloadError, download, model_files
from bilm.errors import InputError
from conftest import make_options, write_model


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HEAD and single ``Range: bytes=N-`` support; logs the ranges asked for."""
    ranges = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return self.send_error(404)
        data = path.read_bytes()
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


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A tiny model served on 127.0.0.1, listed in a catalogue file, and an empty cache."""
    served = tmp_path / "served"
    options_file, weight_file = write_model(served, make_options(), seed=5)
    handler = lambda *args: RangeHandler(*args, directory=str(served))  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"tiny": {"description": "test model", "files": {
        "options": f"{url}/options.json", "weights": f"{url}/weights.hdf5"}}}))
    monkeypatch.setenv("BILM_CATALOGUE", str(catalogue))
    monkeypatch.setenv("BILM_CACHE", str(tmp_path / "cache"))
    RangeHandler.ranges = []
    yield {"options": Path(options_file), "weights": Path(weight_file), "cache": tmp_path / "cache"}
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
    with pytest.raises(InputError, match=r"unknown model 'large'; expected one of: medium, original, "
                                         r"original-5\.5b, original-checkpoint, small, tiny"):
        download("large")
    with pytest.raises(InputError, match=r"model 'tiny' is not downloaded to .*; run `bilm download tiny`"):
        model_files("tiny")
    with pytest.raises(SystemExit):  # a usage error naming the fix
        main(["embed", "in.txt", str(tmp_path / "o.hdf5"), "--model", "tiny"])
    catalogue = tmp_path / "down.json"
    catalogue.write_text(json.dumps({"gone": {"files": {"options": "http://127.0.0.1:9/options.json",
                                                        "weights": "http://127.0.0.1:9/weights.hdf5"}}}))
    monkeypatch.setenv("BILM_CATALOGUE", str(catalogue))
    with pytest.raises(DownloadError, match=r"http://127\.0\.0\.1:9/options\.json: download failed .*rerun to resume"):
        download("gone", progress=False)
    gone = Path(os.environ["BILM_CACHE"]) / "gone"
    assert not (gone / "options.json").exists() and not (gone / "manifest.json").exists()  # nothing looks done
