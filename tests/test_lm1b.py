"""The paper's setup end to end on a miniature 1B Word Benchmark: download, unpack, names, plan, train, test.

The miniature archive has the benchmark's exact layout and file names (a few shards of a few
sentences, made here); it is served on 127.0.0.1 or given with --from-file. Nothing is
downloaded from the internet.
"""
import glob
import http.server
import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from bilm.training import lm1b
from bilm.cli import main
from bilm.download import model_files
from bilm.errors import InputError
from bilm.training.plan import plan_training
from conftest import write_vocab
from test_download import RangeHandler, sha256

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = "1-billion-word-language-modeling-benchmark-r13output.tar.gz"
TOP = "1-billion-word-language-modeling-benchmark-r13output"
TRAIN_DIR, HELDOUT_DIR = "training-monolingual.tokenized.shuffled", "heldout-monolingual.tokenized.shuffled"
VOCAB = "vocab-2016-09-10.txt"
WORDS = "the a of to and in said year market shares rose fell percent new on for it was by at".split()
N_TRAIN_TOKENS = 60  # the miniature's tokens per epoch in its catalogue entry (the real one: 768,648,884)
TINY = ["--lstm_dim", "16", "--projection_dim", "8", "--filters", "[[1, 8], [2, 8]]", "--n_highway", "1",
        "--char_embedding_dim", "4", "--batch_size", "2", "--unroll_steps", "5", "--n_negative_samples", "4",
        "--seed", "0"]


def _sentences(rng, n):
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))) for _ in range(n)]


def _counts(texts):
    """{"files", "sentences", "tokens"} of {name: [sentence, ...]}, counted here."""
    return {"files": len(texts), "sentences": sum(len(lines) for lines in texts.values()),
            "tokens": sum(len(line.split()) for lines in texts.values() for line in lines)}


def _data(lines):
    return "".join(line + "\n" for line in lines).encode()


def _write_archive(path, training, heldout):
    """A .tar.gz with the benchmark's layout: its root folder, README, both folders (the held-out one also holds
    news.en-00000-of-00100, the held-out sentences in one file, as the real archive does)."""
    members = [(f"{TOP}/README", b"The 1 Billion Word Benchmark (miniature).\n")]
    members += [(f"{TOP}/{TRAIN_DIR}/{name}", _data(lines)) for name, lines in training.items()]
    members.append((f"{TOP}/{HELDOUT_DIR}/news.en-00000-of-00100", _data(sum(heldout.values(), []))))
    members += [(f"{TOP}/{HELDOUT_DIR}/{name}", _data(lines)) for name, lines in heldout.items()]
    with tarfile.open(path, "w:gz") as tar:
        for folder in (TOP, f"{TOP}/{TRAIN_DIR}", f"{TOP}/{HELDOUT_DIR}"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def miniature(tmp_path_factory):
    """The miniature archive and vocabulary, and their counts (made here)."""
    root = tmp_path_factory.mktemp("miniature")
    rng = np.random.default_rng(0)
    # The second shard is most of the archive: a cut half way falls inside it.
    training = {f"news.en-{k:05d}-of-00100": _sentences(rng, n) for k, n in ((1, 7), (2, 3000), (3, 5))}
    heldout = {f"news.en.heldout-{k:05d}-of-00050": _sentences(rng, n) for k, n in ((0, 4), (1, 6), (2, 3))}
    _write_archive(root / ARCHIVE, training, heldout)
    (root / "train.txt").write_bytes(b"".join(_data(lines) for lines in training.values()))
    write_vocab(root / VOCAB, root / "train.txt")
    counts = {"training": _counts(training), "heldout": _counts(heldout)}
    return {"root": root, "archive": root / ARCHIVE, "vocab": root / VOCAB, "training": training,
            "heldout": heldout, "counts": counts}


def _catalogue(path, miniature, url, counts=None):
    """A $BILM_CATALOGUE whose lm1b entry is the miniature (served at ``url``)."""
    archive, vocab = miniature["archive"], miniature["vocab"]
    path.write_text(json.dumps({"lm1b": {
        "description": "the miniature benchmark", "kind": "corpus",
        "files": {ARCHIVE: f"{url}/{ARCHIVE}", VOCAB: f"{url}/{VOCAB}"},
        "sha256": {ARCHIVE: sha256(archive), VOCAB: sha256(vocab)}, "sizes": {ARCHIVE: archive.stat().st_size},
        "counts": counts or miniature["counts"], "n_train_tokens": N_TRAIN_TOKENS}}))
    return path


def _serve(directory):
    handler = lambda *args: RangeHandler(*args, directory=str(directory))  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    RangeHandler.ranges, RangeHandler.gets, RangeHandler.unsized, RangeHandler.gate = [], [], set(), None
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def served(miniature, tmp_path, monkeypatch):
    """The miniature served on 127.0.0.1 (a copy: a test may damage it), its catalogue, an empty cache."""
    directory = tmp_path / "served"
    directory.mkdir()
    for name in (ARCHIVE, VOCAB):
        shutil.copy(miniature["root"] / name, directory / name)
    httpd, url = _serve(directory)
    monkeypatch.setenv("BILM_CATALOGUE", str(_catalogue(tmp_path / "catalogue.json", miniature, url)))
    monkeypatch.setenv("BILM_CACHE", str(tmp_path / "cache"))
    yield {"dir": directory, "cache": tmp_path / "cache" / "lm1b", "url": url}
    httpd.shutdown()


def _laid_out_files(directory):
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()
                  and p.parent.name in (TRAIN_DIR, HELDOUT_DIR))


def _check_layout(cache, miniature):
    """The training and held-out files laid out as in the archive, byte for byte, and nothing else of it."""
    expected = {f"{TRAIN_DIR}/{name}": lines for name, lines in miniature["training"].items()}
    expected.update({f"{HELDOUT_DIR}/{name}": lines for name, lines in miniature["heldout"].items()})
    assert _laid_out_files(cache) == sorted(expected)  # no README, no held-out news.en-00000-of-00100
    for relative, lines in expected.items():
        assert (cache / relative).read_bytes() == _data(lines)


def test_download_lays_the_benchmark_out_where_commands_find_it_by_name(served, miniature, capsys, tmp_path,
                                                                       monkeypatch):
    assert main(["--quiet", "download", "lm1b"]) == 0
    out = capsys.readouterr().out.splitlines()
    cache, counts = served["cache"], miniature["counts"]
    _check_layout(cache, miniature)
    test_lines = miniature["heldout"]["news.en.heldout-00000-of-00050"]
    test_tokens = sum(len(line.split()) for line in test_lines)
    assert out == [
        f"lm1b: 3 file(s), {counts['training']['sentences']:,} sentences, {counts['training']['tokens']:,} tokens: "
        f"{cache / TRAIN_DIR / 'news.en-*-of-00100'}",
        f"lm1b-heldout: 3 file(s), {counts['heldout']['sentences']:,} sentences, {counts['heldout']['tokens']:,} "
        f"tokens: {cache / HELDOUT_DIR / 'news.en.heldout-*-of-00050'}",
        f"lm1b-test: 1 file(s), {len(test_lines)} sentences, {test_tokens} tokens: "
        f"{cache / HELDOUT_DIR / 'news.en.heldout-00000-of-00050'}",
        f"vocabulary (lm1b): {cache / VOCAB}"]
    record = json.loads((cache / "counts.json").read_text())
    assert record["complete"] and record["training"] == counts["training"]
    assert record["test"] == {"files": 1, "sentences": len(test_lines), "tokens": test_tokens}
    # The names, as every command resolves them.
    assert sorted(glob.glob(lm1b.resolve("lm1b"))) == [str(cache / TRAIN_DIR / n) for n in miniature["training"]]
    assert sorted(glob.glob(lm1b.resolve("lm1b-heldout"))) == [str(cache / HELDOUT_DIR / n)
                                                               for n in miniature["heldout"]]
    assert lm1b.resolve("lm1b", vocab=True) == str(cache / VOCAB)
    assert lm1b.epoch_tokens(lm1b.resolve("lm1b")) == N_TRAIN_TOKENS
    assert lm1b.epoch_tokens(lm1b.resolve("lm1b-heldout")) is None
    monkeypatch.chdir(tmp_path)
    Path("lm1b-test").write_text("a file of one's own\n")
    assert lm1b.resolve("lm1b-test") == "lm1b-test"  # a file of that name here is taken as given
    with pytest.raises(InputError, match=r"'lm1b' is a corpus, not a model"):
        model_files("lm1b")
    # Done once: a second run, even with the archive deleted, downloads nothing and rewrites nothing.
    assert RangeHandler.gets.count(ARCHIVE) == 1
    (cache / ARCHIVE).unlink()
    before = (cache / TRAIN_DIR / "news.en-00001-of-00100").stat().st_mtime_ns
    assert main(["--quiet", "download", "lm1b"]) == 0
    assert RangeHandler.gets.count(ARCHIVE) == 1 and not (cache / ARCHIVE).exists()
    assert (cache / TRAIN_DIR / "news.en-00001-of-00100").stat().st_mtime_ns == before


def test_a_download_cut_short_resumes_with_a_range_request_then_unpacks(served, miniature):
    served["cache"].mkdir(parents=True)
    content = miniature["archive"].read_bytes()
    (served["cache"] / f"{ARCHIVE}.partial").write_bytes(content[:5000])
    assert main(["--quiet", "download", "lm1b"]) == 0
    assert RangeHandler.ranges == ["bytes=5000-"]
    assert (served["cache"] / ARCHIVE).read_bytes() == content
    _check_layout(served["cache"], miniature)


def _one_error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bilm: error: "), err
    return lines[0]


def test_a_damaged_or_partial_archive_is_refused_in_one_line(served, miniature, tmp_path, capsys):
    content = miniature["archive"].read_bytes()
    damaged = bytearray(content)
    damaged[len(damaged) // 2] ^= 0xFF
    (served["dir"] / ARCHIVE).write_bytes(bytes(damaged))
    assert main(["--quiet", "download", "lm1b"]) == 2
    assert re.fullmatch(rf"bilm: error: {re.escape(served['url'])}/{re.escape(ARCHIVE)}: received {len(content)} "
                        rf"bytes whose SHA-256 is [0-9a-f]{{64}}, not the catalogue's {sha256(miniature['archive'])} "
                        rf"\(damaged or cut short; removed\); rerun to download it again", _one_error_line(capsys))
    # A copy of one's own: cut short, or damaged.
    partial = tmp_path / "partial.tar.gz"
    partial.write_bytes(content[:1000])
    assert main(["--quiet", "download", "lm1b", "--from-file", str(partial)]) == 2
    assert _one_error_line(capsys) == (
        f"bilm: error: {partial}: 1,000 bytes; {ARCHIVE} has {len(content):,}: a partial or another file (download "
        f"it again, or run `bilm download lm1b` without --from-file)")
    other = tmp_path / "other.tar.gz"
    other.write_bytes(bytes(damaged))
    assert main(["--quiet", "download", "lm1b", "--from-file", str(other)]) == 2
    assert re.fullmatch(rf"bilm: error: {re.escape(str(other))}: SHA-256 [0-9a-f]{{64}}, not "
                        rf"{sha256(miniature['archive'])} of {re.escape(ARCHIVE)}: a damaged or another file .*",
                        _one_error_line(capsys))
    assert _laid_out_files(served["cache"]) == []
    with pytest.raises(InputError, match=r"the 1 Billion Word Benchmark is not unpacked in .*; run `bilm download "
                                         r"lm1b` \(or `bilm download lm1b --from-file ARCHIVE`\)"):
        lm1b.resolve("lm1b-test")


def test_a_copy_of_ones_own_is_unpacked_without_downloading_it(served, miniature):
    assert main(["--quiet", "download", "lm1b", "--from-file", str(miniature["archive"])]) == 0
    _check_layout(served["cache"], miniature)
    assert RangeHandler.gets == [VOCAB] and not (served["cache"] / ARCHIVE).exists()  # no second copy


def test_unpacking_checks_the_counts_and_an_interrupted_unpack_finishes(miniature, tmp_path, caplog):
    directory, counts = tmp_path / "lm1b", miniature["counts"]
    wrong = {**counts, "training": {**counts["training"], "sentences": counts["training"]["sentences"] + 1}}
    with pytest.raises(InputError, match=rf"{re.escape(str(miniature['archive']))}: "
                                         rf"{counts['training']['sentences']:,} sentences in {TRAIN_DIR}/ where the "
                                         rf"benchmark has {counts['training']['sentences'] + 1:,}: a partial, "
                                         rf"damaged or other archive"):
        lm1b.unpack(miniature["archive"], directory, wrong, progress=False)
    with pytest.raises(InputError, match="only partly unpacked"):
        lm1b.unpacked(directory)
    shutil.rmtree(directory)

    # Cut half way through (inside the second shard): the first shard is complete, no half file looks complete.
    cut = tmp_path / "cut.tar.gz"
    content = miniature["archive"].read_bytes()
    cut.write_bytes(content[:len(content) // 2])
    with pytest.raises(InputError, match=rf"{re.escape(str(cut))}: not a complete \.tar\.gz archive \(.*\): a "
                                         rf"partial or damaged copy"):
        lm1b.unpack(cut, directory, counts, progress=False)
    first = directory / TRAIN_DIR / "news.en-00001-of-00100"
    assert first.read_bytes() == _data(miniature["training"]["news.en-00001-of-00100"])
    assert _laid_out_files(directory) == [f"{TRAIN_DIR}/news.en-00001-of-00100"]  # no .partial, no half shard
    with pytest.raises(InputError, match="only partly unpacked"):
        lm1b.unpacked(directory)

    # Rerun on the whole archive: the finished shard is kept as it is, the rest written; the tokens' count is
    # only a warning (what counts as whitespace may differ from the published count's).
    kept = first.stat()
    off = {**counts, "training": {**counts["training"], "tokens": counts["training"]["tokens"] + 2}}
    caplog.set_level(logging.WARNING)
    record = lm1b.unpack(miniature["archive"], directory, off, progress=False)
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    _check_layout(directory, miniature)
    assert record["training"] == counts["training"] and lm1b.unpacked(directory)["complete"]
    assert any(f"{counts['training']['tokens']:,} tokens in {TRAIN_DIR}/ where the benchmark has "
               f"{counts['training']['tokens'] + 2:,}" in r.message for r in caplog.records)


def test_a_corpus_entry_of_a_catalogue_file_is_checked(miniature, tmp_path, monkeypatch):
    path = _catalogue(tmp_path / "catalogue.json", miniature, "http://127.0.0.1:9")
    entry = json.loads(path.read_text())
    del entry["lm1b"]["counts"]["heldout"]
    path.write_text(json.dumps(entry))
    monkeypatch.setenv("BILM_CATALOGUE", str(path))
    with pytest.raises(InputError, match=r"entry 'lm1b': a corpus needs \"counts\""):
        lm1b.prepare(progress=False)


@pytest.fixture(scope="module")
def laid_out(miniature, tmp_path_factory):
    """The miniature unpacked in a cache (--from-file), and the environment that finds it."""
    root = tmp_path_factory.mktemp("laid_out")
    httpd, url = _serve(miniature["root"])
    env = {"BILM_CATALOGUE": str(_catalogue(root / "catalogue.json", miniature, url)),
           "BILM_CACHE": str(root / "cache")}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert main(["--quiet", "download", "lm1b", "--from-file", str(miniature["archive"])]) == 0
    httpd.shutdown()
    return {"env": env, "root": root, "cache": root / "cache" / "lm1b"}


def _parameters(n_vocab):
    """Trained parameters of the TINY model, from its shapes (E 4, filters [1, 8], [2, 8], F 16, one highway,
    P 8, D 16, 2 layers, both directions, softmax V x P + V)."""
    e, f, p, d = 4, 16, 8, 16
    char_cnn = 261 * e + (1 * e * 8 + 8) + (2 * e * 8 + 8) + 2 * (f * f + f) + (f * p + p)
    lstm = 2 * 2 * (2 * p * 4 * d + 4 * d + d * p)
    return char_cnn + lstm + n_vocab * p + n_vocab


def test_plan_prints_what_the_run_would_do_and_writes_nothing(laid_out, miniature, tmp_path, monkeypatch, capsys):
    for key, value in laid_out["env"].items():
        monkeypatch.setenv(key, value)
    save = tmp_path / "ckpt"
    assert main(["--quiet", "train", "--train_prefix", "lm1b", "--vocab_file", "lm1b", "--save_dir", str(save),
                 "--plan", "--plan_steps", "2", "--n_gpus", "2", "--n_epochs", "3"] + TINY) == 0
    lines = capsys.readouterr().out.splitlines()
    n_vocab = len(miniature["vocab"].read_text().split())
    batches = 3 * N_TRAIN_TOKENS // (2 * 5 * 2)  # epochs x tokens / (streams x steps x towers)
    assert lines[0] == (f"model: character input (char CNN of 2 filters, 16 channels, 1 highway layers), 2 x LSTM 16 "
                        f"projected to 8, bidirectional, vocabulary {n_vocab:,}")
    assert lines[1] == f"parameters: {_parameters(n_vocab):,} trained ({n_vocab * 9:,} of them the softmax)"
    assert lines[2] == (f"data: 3 training file(s); tokens per epoch: {N_TRAIN_TOKENS:,} (the original's "
                        f"n_train_tokens for the benchmark)")
    assert lines[3] == (f"batches: {batches} = 3 epochs x {N_TRAIN_TOKENS} tokens / 20 tokens a batch (2 streams x 5 "
                        f"steps x 2 tower(s))")
    assert re.fullmatch(r"memory, estimated \(float32\): shared by the towers, weights [0-9.]+ GB \+ Adagrad "
                        r"accumulators [0-9.]+ GB; per tower, gradients [0-9.]+ GB \+ activations [0-9.]+ GB \(the "
                        r"tensors kept for back-propagation\)", lines[4])
    plan = plan_training(lm1b.resolve("lm1b"), lm1b.resolve("lm1b", vocab=True), steps=0, **{
        "lstm.dim": 16, "lstm.projection_dim": 8, "char_cnn.filters": [[1, 8], [2, 8]], "char_cnn.n_highway": 1,
        "char_cnn.embedding.dim": 4, "batch_size": 2, "unroll_steps": 5, "n_negative_samples_batch": 4})
    assert plan.memory["weights"] == plan.memory["accumulators"] == 4 * _parameters(n_vocab)  # float32
    assert plan.memory["gradients"] == 4 * (_parameters(n_vocab) - 9 * n_vocab + 9 * min(2 * (10 + 4), n_vocab))
    measured = re.fullmatch(r"memory, measured over 3 steps on 2 CPU device\(s\): peak resident memory of the "
                            r"process \(all towers, weights included\) ([0-9.]+) GB", lines[5])
    assert measured and float(measured.group(1)) > 0.1  # TensorFlow alone is more
    step = re.fullmatch(r"step time, measured on 2 CPU device\(s\): ([0-9.]+) s \(median of 2 steps after a first "
                        r"one; set-up excluded\), ([0-9,]+) tokens/s -> 9 batches in (\d+) min", lines[6])
    assert step and float(step.group(1)) > 0
    assert int(step.group(2).replace(",", "")) == pytest.approx(20 / float(step.group(1)), rel=0.01, abs=1)
    gtx = 14 * 86400 / (10 * 768648884 // (128 * 20 * 3))  # the original's two weeks for 10 epochs on 3 GPUs
    assert lines[7] == (f"step time, assumed: {gtx:.2f} s (a GTX 1080 per tower, from the original's two weeks for "
                        f"10 epochs on 3 GPUs) -> {batches * gtx / 60:.0f} min (for the paper's model at 128 x 20 "
                        f"tokens a tower, not this one)")
    assert lines[8].startswith("step time, assumed: 0.30 s (a current GPU per tower")
    assert lines[-1] == "nothing was trained or written (--plan)"
    assert not save.exists()


def test_bin_train_elmo_without_data_flags_trains_on_the_benchmark(laid_out, miniature, tmp_path):
    env = dict(os.environ, **laid_out["env"])
    command = [sys.executable, "bin/train_elmo.py", "--save_dir", str(tmp_path / "ckpt"), "--plan", "--plan_steps",
               "0"] + TINY
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    n_vocab = len(miniature["vocab"].read_text().split())
    assert f"vocabulary {n_vocab:,}" in result.stdout  # the benchmark's vocabulary
    assert (f"data: 3 training file(s); tokens per epoch: {N_TRAIN_TOKENS:,} (the original's n_train_tokens for the "
            f"benchmark)") in result.stdout
    # Not laid out yet: one line saying how to get it.
    result = subprocess.run(command, cwd=ROOT, env=dict(env, BILM_CACHE=str(tmp_path / "empty")),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"bilm: error: the 1 Billion Word Benchmark is not unpacked in {tmp_path / 'empty' / 'lm1b'}; run `bilm "
        f"download lm1b` (or `bilm download lm1b --from-file ARCHIVE`)")


@pytest.fixture(scope="module")
def trained(laid_out, tmp_path_factory):
    """A tiny model trained by `bilm train --train_prefix lm1b --vocab_file lm1b` (the paper's setup's command)."""
    save = tmp_path_factory.mktemp("trained") / "ckpt"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in laid_out["env"].items():
            patch.setenv(key, value)
        assert main(["--quiet", "train", "--train_prefix", "lm1b", "--vocab_file", "lm1b", "--save_dir", str(save),
                     "--n_epochs", "2"] + TINY) == 0
    return save


def test_training_starts_from_the_layout_with_the_catalogues_tokens_per_epoch(trained, miniature):
    options = json.loads((trained / "options.json").read_text())
    assert options["n_train_tokens"] == N_TRAIN_TOKENS  # not counted from the files
    assert options["n_tokens_vocab"] == len(miniature["vocab"].read_text().split())
    batches = 2 * N_TRAIN_TOKENS // (2 * 5)
    assert sorted(p.name for p in trained.glob("model.ckpt-*.index")) == [f"model.ckpt-{batches}.index"]


def _perplexities(out):
    lines = out.splitlines()
    targets = int(re.fullmatch(r"targets scored: ([0-9,]+) per direction \(every token and sentence end of the text, "
                               r"once\)", lines[0]).group(1).replace(",", ""))
    forward = float(re.fullmatch(r"forward perplexity: ([0-9.]+)", lines[1]).group(1))
    backward = float(re.fullmatch(r"backward perplexity: ([0-9.]+)", lines[2]).group(1))
    average = float(re.fullmatch(r"perplexity: ([0-9.]+) \(average of forward and backward\)", lines[3]).group(1))
    return targets, forward, backward, average


def test_test_on_the_benchmarks_test_set_reports_the_three_perplexities(trained, laid_out, miniature, monkeypatch,
                                                                         capsys):
    for key, value in laid_out["env"].items():
        monkeypatch.setenv(key, value)
    for name, files in (("lm1b-test", ["news.en.heldout-00000-of-00050"]), ("lm1b-heldout", miniature["heldout"])):
        assert main(["--quiet", "test", "--save_dir", str(trained), "--vocab_file", "lm1b", "--test_prefix", name]) == 0
        targets, forward, backward, average = _perplexities(capsys.readouterr().out)
        lines = [line for file in files for line in miniature["heldout"][file]]
        assert targets == sum(len(line.split()) for line in lines) + len(lines)  # tokens and </S>: that text's
        assert average == pytest.approx((forward + backward) / 2, abs=1e-3)
        assert 1 < forward < 10 * len(WORDS) and 1 < backward < 10 * len(WORDS)


def test_finetune_reports_the_benchmarks_perplexity_beside_the_domains(trained, laid_out, tmp_path, monkeypatch,
                                                                       capsys):
    for key, value in laid_out["env"].items():
        monkeypatch.setenv(key, value)
    rng = np.random.default_rng(1)
    domain = [" ".join(rng.choice(WORDS[:6], size=5)) for _ in range(40)]  # a narrower "domain"
    (tmp_path / "domain.txt").write_text("\n".join(domain[:30]) + "\n")
    (tmp_path / "domain_heldout.txt").write_text("\n".join(domain[30:]) + "\n")
    tuned = tmp_path / "tuned"
    assert main(["--quiet", "finetune", "--from", str(trained), "--save_dir", str(tuned), "--train_prefix",
                 str(tmp_path / "domain.txt"), "--vocab_file", "lm1b", "--heldout_prefix",
                 str(tmp_path / "domain_heldout.txt"), "--general_heldout", "lm1b-test", "--eval_every", "4",
                 "--n_epochs", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    record = json.loads((tuned / "finetune.json").read_text())
    evaluations = record["evaluations"]
    assert len(evaluations) >= 2 and all(math.isfinite(e["general_heldout_perplexity"]) for e in evaluations)
    best = min(evaluations, key=lambda e: e["heldout_perplexity"])  # the domain's decides
    assert record["best"] == best
    assert out[0] == f"best held-out perplexity: {best['heldout_perplexity']:.3f}"
    assert out[1] == (f"general held-out perplexity at that checkpoint: {best['general_heldout_perplexity']:.3f} "
                      f"({lm1b.resolve('lm1b-test')})")
    # The figure recorded is the one `bilm test` gives for the kept checkpoint.
    assert main(["--quiet", "test", "--save_dir", str(tuned), "--vocab_file", "lm1b", "--test_prefix", "lm1b-test"]) == 0
    assert _perplexities(capsys.readouterr().out)[3] == pytest.approx(best["general_heldout_perplexity"], abs=2e-3)


def test_the_published_checkpoint_is_evaluated_as_the_readme_says(trained, laid_out, miniature, tmp_path,
                                                                  monkeypatch, capsys):
    """The README's commands verbatim, with the tiny model served as `original-checkpoint`."""
    step = next(trained.glob("model.ckpt-*.index")).name[:-len(".index")]
    files = ["options.json", f"{step}.index", f"{step}.data-00000-of-00001"]
    httpd, url = _serve(trained)
    shutil.copy(miniature["vocab"], trained / "vocab.txt")
    catalogue = json.loads(Path(laid_out["env"]["BILM_CATALOGUE"]).read_text())
    catalogue["original-checkpoint"] = {
        "kind": "checkpoint", "files": {"options": f"{url}/options.json", "vocab": f"{url}/vocab.txt",
                                        **{name: f"{url}/{name}" for name in files[1:]}},
        "sha256": {"options": sha256(trained / "options.json"), "vocab": sha256(trained / "vocab.txt"),
                   **{name: sha256(trained / name) for name in files[1:]}}}
    (tmp_path / "catalogue.json").write_text(json.dumps(catalogue))
    monkeypatch.setenv("BILM_CATALOGUE", str(tmp_path / "catalogue.json"))
    monkeypatch.setenv("BILM_CACHE", laid_out["env"]["BILM_CACHE"])
    try:
        assert main(["--quiet", "download", "original-checkpoint"]) == 0
    finally:
        httpd.shutdown()
    capsys.readouterr()
    results = []
    for save_dir in ("original-checkpoint", str(trained)):
        assert main(["--quiet", "test", "--save_dir", save_dir, "--vocab_file", "lm1b", "--test_prefix",
                     "lm1b-heldout"]) == 0
        results.append(_perplexities(capsys.readouterr().out))
    heldout = miniature["counts"]["heldout"]
    assert results[0] == results[1] and results[0][0] == heldout["tokens"] + heldout["sentences"]
