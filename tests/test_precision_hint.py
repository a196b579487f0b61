"""The line that tells a float32 `bilm embed` how much faster bfloat16 measured here (bilm.embedding.precision_hint)."""
import logging
import os
import re
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from bilm.cli import main
from bilm.core import precision
from bilm.embedding import precision_hint
from bilm.embedding.dumps import dump_bilm_embeddings
from bilm.embedding.embedder import ElmoEmbedder
from bilm.models import SAMPLE_DIR
from conftest import make_options, random_sentences, write_model

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu vme sse avx2 avx512f {flags} avx512_vnni
bogomips\t: 5200.00

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu vme sse avx2 avx512f avx512_bf16 amx_bf16
"""
HINT = re.compile(r"--precision bfloat16 would embed about (\d+\.\d)x faster on this machine \(measured on this "
                  r"model: top-layer vectors' mean cosine (\d\.\d{5}) to float32\); float32 stays the default \(exact\)")


# -- hardware detection ------------------------------------------------------------------------------

def test_cpuinfo_fields_are_the_first_processors():
    fields = precision.cpuinfo_fields(CPUINFO.format(flags="avx512_vl"))
    assert fields["model name"] == "AMD EPYC 9R14 96-Core Processor"
    assert fields["flags"].split() == ["fpu", "vme", "sse", "avx2", "avx512f", "avx512_vl", "avx512_vnni"]
    assert precision.cpuinfo_fields("") == {}


@pytest.mark.parametrize("flags, expected", [
    ("avx512_bf16", "CPU AMD EPYC 9R14 96-Core Processor (avx512_bf16)"),
    ("amx_bf16 amx_tile avx512_bf16", "CPU AMD EPYC 9R14 96-Core Processor (amx_bf16, avx512_bf16)"),
    ("avx512_fp16 avx512_bf16x amx_tile", None),  # near names are not bfloat16 arithmetic
    ("", None),  # the second processor's flags do not count for the first
])
def test_native_bfloat16_on_a_cpu_reads_its_flags(tmp_path, monkeypatch, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(flags=flags))
    monkeypatch.setattr(precision, "CPUINFO", str(cpuinfo))
    monkeypatch.setattr(precision.tf.config, "list_physical_devices", lambda kind=None: [])
    assert precision.native_bfloat16() == expected


def test_native_bfloat16_without_cpuinfo_is_none(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "CPUINFO", str(tmp_path / "absent"))  # not Linux
    monkeypatch.setattr(precision.tf.config, "list_physical_devices", lambda kind=None: [])
    assert precision.native_bfloat16() is None


def test_native_bfloat16_on_gpus_asks_their_compute_capability(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(flags="avx512_bf16"))  # an able CPU does not count beside GPUs
    monkeypatch.setattr(precision, "CPUINFO", str(cpuinfo))
    gpus = [SimpleNamespace(name=f"/physical_device:GPU:{k}") for k in range(2)]
    details = {gpus[0].name: {"device_name": "NVIDIA A100-SXM4-40GB", "compute_capability": (8, 0)},
               gpus[1].name: {"device_name": "Tesla T4", "compute_capability": (7, 5)}}
    monkeypatch.setattr(precision.tf.config, "list_physical_devices", lambda kind=None: gpus)
    monkeypatch.setattr(precision.tf.config.experimental, "get_device_details", lambda gpu: details[gpu.name])
    assert precision.native_bfloat16() is None  # the T4 would compute too
    details[gpus[1].name] = {"device_name": "NVIDIA H100", "compute_capability": (9, 0)}
    assert precision.native_bfloat16() == "GPU NVIDIA A100-SXM4-40GB (compute capability 8.0)"


# -- the line --------------------------------------------------------------------------------------

@pytest.fixture
def job(tmp_path, monkeypatch):
    """A tiny model, an input file, a fresh cache, the hint not silenced, and hardware said to have bfloat16."""
    options_file, weight_file = write_model(tmp_path / "model", make_options(), seed=3)
    data = tmp_path / "in.txt"
    data.write_text("\n".join(" ".join(s) for s in random_sentences(np.random.default_rng(0), 5)) + "\n",
                    encoding="utf-8")
    monkeypatch.setenv("BILM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(precision_hint.ENV_SILENCE, raising=False)
    monkeypatch.setattr(precision_hint, "native_bfloat16", lambda: "CPU test (avx512_bf16)")
    return {"options": options_file, "weights": weight_file, "input": str(data), "dir": tmp_path,
            "model": ["--options", options_file, "--weights", weight_file]}


def fake_clock(monkeypatch, seconds):
    """``precision_hint.clock`` advances only while a batch is embedded: by ``seconds[precision]`` per batch."""
    now = [0.0]
    original = ElmoEmbedder.embed_ids

    def embed_ids(self, ids, sentences):
        now[0] += seconds[self.precision]
        return original(self, ids, sentences)

    monkeypatch.setattr(ElmoEmbedder, "embed_ids", embed_ids)
    monkeypatch.setattr(precision_hint, "clock", lambda: now[0])


def counted_measure(monkeypatch):
    """Count ``precision_hint.measure``'s calls (each still measures)."""
    calls = []
    real = precision_hint.measure

    def measure(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(precision_hint, "measure", measure)
    return calls


def hint_lines(caplog):
    return [r.getMessage() for r in caplog.records if "would embed" in r.getMessage() and r.levelno == logging.INFO]


def sample_cosine(options_file, weight_file):
    """Mean cosine of the top-layer token vectors, float32 against bfloat16, on the first 64 sample sentences."""
    with open(SAMPLE_DIR / "heldout.txt", encoding="utf-8") as fin:
        sentences = [line.split() for line in fin.read().splitlines()[:64]]
    vectors = {}
    for kind in ("float32", "bfloat16"):
        with ElmoEmbedder(options_file, weight_file, precision=kind) as embedder:
            vectors[kind] = np.concatenate([array[-1] for array in embedder.embed_sentences(sentences)])
    a, b = vectors["float32"].astype(np.float64), vectors["bfloat16"].astype(np.float64)
    return float(np.mean([x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)]))


def test_a_float32_embed_says_how_much_faster_bfloat16_measured(job, caplog, monkeypatch):
    fake_clock(monkeypatch, {"float32": 3.0, "bfloat16": 1.0})  # a bfloat16 batch takes a third of the time
    out = job["dir"] / "out.hdf5"
    assert main(["embed", job["input"], str(out)] + job["model"]) == 0
    line, = hint_lines(caplog)
    speedup, cosine = HINT.fullmatch(line).groups()
    assert speedup == "3.0"
    expected = sample_cosine(job["options"], job["weights"])
    assert 0.99 < expected < 0.99999  # bfloat16 differs, a little
    assert abs(float(cosine) - expected) <= 6e-6
    with h5py.File(out, "r") as fout, ElmoEmbedder(job["options"], job["weights"]) as exact:  # the job: float32
        sentences = [line.split() for line in open(job["input"], encoding="utf-8")]
        for k, want in enumerate(exact.embed_sentences(sentences)):
            np.testing.assert_allclose(fout[str(k)][...], want, atol=1e-6)


def test_the_measurement_is_cached_per_model_file(job, caplog, monkeypatch):
    calls = counted_measure(monkeypatch)
    monkeypatch.setattr(precision_hint, "MIN_SPEEDUP", 0.0)  # whatever this loaded machine measures: a line
    first, second, third = (job["dir"] / name for name in ("a.hdf5", "b.hdf5", "c.hdf5"))
    assert main(["embed", job["input"], str(first)] + job["model"]) == 0
    assert main(["embed", job["input"], str(second)] + job["model"]) == 0
    assert len(calls) == 1  # measured once, for the first run
    measured, cached = hint_lines(caplog)
    assert HINT.fullmatch(measured) and cached == measured
    stat = os.stat(job["weights"])
    os.utime(job["weights"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))  # another weight file
    assert main(["embed", job["input"], str(third)] + job["model"]) == 0
    assert len(calls) == 2


def test_no_line_when_bfloat16_is_not_faster_and_that_is_cached_too(job, caplog, monkeypatch):
    fake_clock(monkeypatch, {"float32": 1.0, "bfloat16": 1.0})
    calls = counted_measure(monkeypatch)
    for name in ("a.hdf5", "b.hdf5"):
        assert main(["embed", job["input"], str(job["dir"] / name)] + job["model"]) == 0
    assert hint_lines(caplog) == [] and len(calls) == 1


@pytest.mark.parametrize("case", ["no bfloat16 here", "--precision bfloat16", "--precision tf32", "--quiet",
                                  "BILM_NO_PRECISION_HINT=1"])
def test_no_line_and_no_measurement(job, caplog, monkeypatch, case):
    calls = counted_measure(monkeypatch)
    flags = []
    if case == "no bfloat16 here":
        monkeypatch.setattr(precision_hint, "native_bfloat16", lambda: None)
    elif case.startswith("--"):
        flags = case.split()
    else:
        monkeypatch.setenv(*case.split("="))
    assert main(["embed", job["input"], str(job["dir"] / "out.hdf5")] + job["model"] + flags) == 0
    assert calls == [] and hint_lines(caplog) == []
    assert (job["dir"] / "out.hdf5").is_file()


def test_the_library_measures_only_when_asked(job, caplog, monkeypatch):
    calls = counted_measure(monkeypatch)
    caplog.set_level(logging.INFO, logger="bilm")
    dump_bilm_embeddings(None, job["input"], job["options"], job["weights"], str(job["dir"] / "out.hdf5"))
    assert calls == []


@pytest.mark.parametrize("failing", ["measure", "detection", "cache"])
def test_a_failing_hint_never_fails_the_job(job, caplog, monkeypatch, failing):
    def fail(*args, **kwargs):
        raise RuntimeError("no bfloat16 kernel")

    if failing == "measure":
        monkeypatch.setattr(precision_hint, "measure", fail)
    elif failing == "detection":
        monkeypatch.setattr(precision_hint, "native_bfloat16", fail)
    else:  # the cache cannot be written: the line is still said, from this run's measurement
        (job["dir"] / "not_a_directory").write_text("")
        monkeypatch.setenv("BILM_CACHE", str(job["dir"] / "not_a_directory"))
        monkeypatch.setattr(precision_hint, "MIN_SPEEDUP", 0.0)
    caplog.set_level(logging.DEBUG, logger="bilm.embedding.precision_hint")
    out = job["dir"] / "out.hdf5"
    assert main(["embed", job["input"], str(out)] + job["model"]) == 0
    with h5py.File(out, "r") as fout:
        assert sorted(k for k in fout if k != "sentence_to_index") == [str(k) for k in range(5)]
    debug = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    if failing == "cache":
        assert len(hint_lines(caplog)) == 1 and "cannot cache the measurement" in debug
    else:
        assert hint_lines(caplog) == [] and "not measured (no bfloat16 kernel)" in debug
