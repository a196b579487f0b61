"""The bilm command and the bin/ scripts."""
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from bilm.cli import main
from bilm.core import startup
from conftest import TINY_CORPUS, make_options, random_sentences, write_model
from test_embed_jobs import N_LINES, Command, saved_sentences, the_one_line

ROOT = Path(__file__).resolve().parents[1]
TINY_VOCAB = TINY_CORPUS.with_name("tiny_vocab.txt")


@pytest.fixture(scope="module")
def model_args(tmp_path_factory):
    options_file, weight_file = write_model(tmp_path_factory.mktemp("model"), make_options(), seed=11)
    return ["--options", options_file, "--weights", weight_file]


def test_vocab_orders_specials_then_by_count(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("b a c a\nc a\n\nd\n", encoding="utf-8")
    assert main(["vocab", str(corpus), "--output", str(tmp_path / "v.txt")]) == 0
    assert (tmp_path / "v.txt").read_text().split("\n") == ["<S>", "</S>", "<UNK>", "a", "c", "b", "d", ""]
    assert main(["vocab", str(corpus), "--output", str(tmp_path / "v2.txt"), "--min-count", "2"]) == 0
    assert (tmp_path / "v2.txt").read_text().split() == ["<S>", "</S>", "<UNK>", "a", "c"]
    assert main(["vocab", str(corpus), "--output", str(tmp_path / "v3.txt"), "--max-size", "4"]) == 0
    assert (tmp_path / "v3.txt").read_text().split() == ["<S>", "</S>", "<UNK>", "a"]


def test_embed_modes_shards_and_merge(tmp_path, model_args):
    data = tmp_path / "data.txt"
    data.write_text("The cat sat .\nA dog .\nHello\nSome more words here .\n", encoding="utf-8")
    out = tmp_path / "out.hdf5"
    assert main(["--quiet", "embed", str(data), str(out)] + model_args) == 0
    with h5py.File(out, "r") as fin:
        assert sorted(fin) == ["0", "1", "2", "3", "sentence_to_index"] and fin["3"].shape == (3, 5, 16)
        warm, index = fin["1"][...], fin["sentence_to_index"][0]
    for k in range(2):
        assert main(["--quiet", "embed", str(data), str(tmp_path / f"s{k}.hdf5"), "--shard", f"{k}/2"] + model_args) == 0
    assert main(["merge", str(tmp_path / "all.hdf5"), str(tmp_path / "s0.hdf5"), str(tmp_path / "s1.hdf5")]) == 0
    with h5py.File(tmp_path / "all.hdf5", "r") as fin:
        assert sorted(fin) == ["0", "1", "2", "3", "sentence_to_index"]
        np.testing.assert_allclose(fin["1"][...], warm, atol=1e-6)
        assert fin["sentence_to_index"][0] == index  # the same bytes: keys in line order
    assert main(["--quiet", "embed", str(data), str(tmp_path / "st.hdf5"), "--state-mode", "stateful"]
                + model_args) == 0
    with h5py.File(tmp_path / "st.hdf5", "r") as fin:
        assert not np.allclose(fin["1"][1:], warm[1:], atol=1e-6)  # carried states differ from warm ones


def test_train_test_restart_dump_weights(tmp_path, capsys, caplog):
    save = str(tmp_path / "ckpt")
    common = ["--train_prefix", str(TINY_CORPUS), "--vocab_file", str(TINY_VOCAB), "--save_dir", save]
    small = ["--lstm_dim", "16", "--projection_dim", "8", "--filters", "[[1, 8], [2, 8]]", "--n_highway", "1",
             "--char_embedding_dim", "4", "--batch_size", "2", "--unroll_steps", "5", "--n_negative_samples", "4",
             "--n_epochs", "2", "--seed", "0"]
    text = TINY_CORPUS.read_text(encoding="utf-8")
    tokens_per_epoch = len(text.split()) + len(text.splitlines())  # each sentence's </S> is a target too
    steps = 2 * tokens_per_epoch // 10
    caplog.set_level(logging.INFO)
    assert main(["train"] + common + small) == 0
    assert sorted(p.name for p in Path(save).glob("model.ckpt-*.index")) == [f"model.ckpt-{steps}.index"]
    progress = [r.message for r in caplog.records if r.message.startswith("batch ")]
    assert len(progress) >= 5  # a short run still reports as it goes
    assert any(f"trained {steps} batches" in r.message for r in caplog.records)  # and how it ended
    hint = next(r.message for r in caplog.records if r.message.startswith("next: "))
    evaluate = re.search(r"`(bilm test --save_dir [^`]*)`", hint).group(1)
    # As printed, with the held-out files put in: its default 256 streams are more than the 5 sentences.
    assert main(shlex.split(evaluate.replace("HELDOUT", str(TINY_CORPUS)))[1:]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"targets scored: {tokens_per_epoch} per direction (every token and sentence end of the text, once)"
    forward, backward, average = (float(re.search(r": ([0-9.]+)", line).group(1)) for line in lines[1:4])
    assert lines[1].startswith("forward perplexity: ") and lines[2].startswith("backward perplexity: ")
    assert average == pytest.approx((forward + backward) / 2, abs=1e-3)
    assert lines[3].endswith(" (average of forward and backward)")
    assert main(["test", "--test_prefix", str(TINY_CORPUS), "--vocab_file", str(TINY_VOCAB), "--save_dir", save,
                 "--batch_size", "2", "--original_figure"]) == 0
    scored = int(re.search(r"targets scored: (\d+) per direction, (\d+) of the text's (\d+) left out",
                           capsys.readouterr().out).group(1))
    assert 0 < scored < tokens_per_epoch and scored % 2 == 0  # whole batches of 2 streams, the last one left out
    assert not (Path(save) / "train.lock").exists()
    assert main(["--quiet", "restart"] + common + ["--n_epochs", "3"]) == 0
    assert (Path(save) / f"model.ckpt-{3 * tokens_per_epoch // 10}.index").exists()
    weights = tmp_path / "w.hdf5"
    assert main(["dump-weights", "--save_dir", save, "--outfile", str(weights), "--options_outfile",
                 str(weights)]) == 2  # refused before anything is written
    assert "w.hdf5: is the weight output (--outfile) of this job" in capsys.readouterr().err
    assert not weights.exists()
    assert main(["dump-weights", "--save_dir", save, "--outfile", str(weights), "--options_outfile",
                 str(tmp_path / "options.json")]) == 0
    with h5py.File(weights, "r") as fin:
        assert fin["char_embed"].shape == (261, 4) and "softmax" not in fin
    # --overwrite starts afresh: no checkpoint nor TensorBoard event of the earlier run is left.
    assert main(["--quiet", "train"] + common + small + ["--n_epochs", "1", "--overwrite"]) == 0
    assert sorted(p.name for p in Path(save).glob("model.ckpt-*.index")) == [f"model.ckpt-{tokens_per_epoch // 10}.index"]
    assert len(list(Path(save).glob("events.out.tfevents.*"))) == 1


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_errors_are_one_line_without_traceback(tmp_path):
    result = _run("-m", "bilm.cli", "embed", "in.txt", str(tmp_path / "o.hdf5"), "--options", "missing.json",
                  "--weights", "w.hdf5", "--vocab", "v.txt")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "bilm: error: missing.json: options file not found"


@pytest.mark.parametrize("script", ["usage_character.py", "usage_token.py", "usage_cached.py"])
def test_usage_scripts_check_the_model_files_first_in_one_line(script, tmp_path, model_args):
    options, weights = model_args[1], model_args[3]
    cases = [(["--options", "missing.json", "--weights", weights], "missing.json: options file not found"),
             (["--options", options, "--weights", str(tmp_path)],
              f"{tmp_path}: is a directory; expected a file (weight file)")]
    if script != "usage_token.py":  # it makes its own vocabulary
        cases.append((["--options", options, "--weights", weights, "--vocab", "missing.txt"],
                      "missing.txt: vocabulary file not found"))
    for args, expected in cases:
        result = _run(script, *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines()[-1] == f"{script}: error: {expected}"


@pytest.mark.parametrize("script", ["train_elmo.py", "run_test.py", "restart.py", "dump_weights.py"])
def test_bin_scripts_are_thin_wrappers(script):
    result = _run(f"bin/{script}", "--help")
    assert result.returncode == 0 and "--save_dir" in result.stdout


TRAINING = ["--train_prefix", "d.txt", "--vocab_file", "v.txt", "--save_dir", "ckpt"]
EMBED = ["embed", "in.txt", "o.hdf5"]
USAGE_ERRORS = [
    ([], "the following arguments are required: COMMAND"),
    (["embed"], "the following arguments are required: input, output"),
    (EMBED + ["--overwrite", "--resume"], "argument --resume: not allowed with argument --overwrite"),
    (["embed", "--ray", "in.txt", "o.hdf5"], "argument --ray: expected local, auto, HOST:PORT or ray://HOST:PORT, "
                                             "got 'in.txt' (give --ray after the input and output files)"),
    (EMBED + ["--batch-size", "0"], "argument --batch_size/--batch-size: expected a positive integer, got 0"),
    (EMBED + ["--shard", "2/2"], "argument --shard: expected 0 <= K < N, got '2/2'"),
    (EMBED + ["--shard", "half"], "argument --shard: expected K/N (e.g. 0/4), got 'half'"),
    (EMBED + ["--state_mode", "fresh"], "argument --state_mode/--state-mode: invalid choice: 'fresh'"),
    (EMBED + ["--empty-lines", "skip"], "argument --empty_lines/--empty-lines: invalid choice: 'skip'"),
    (EMBED + ["--options", "o.json"], "--options needs --weights too: A model is --model NAME"),
    (EMBED + ["--weights", "w.hdf5", "--vocab", "v.txt"], "--weights needs --options too"),
    (EMBED + ["--model", "default", "--options", "o.json", "--weights", "w.hdf5"], "give --model or --options"),
    (["train"] + TRAINING + ["--dropout", "nan"], "argument --dropout: expected a dropout rate in [0, 1), got 'nan'"),
    (["train"] + TRAINING + ["--dropout", "0.9999", "--learning_rate", "inf"], "expected a learning rate"),
    (["merge", "out.hdf5"], "the following arguments are required: shards"),
    (["merge", "out.hdf5", "a.hdf5", "--resume"], "unrecognized arguments: --resume"),
    (["dump-token-embeddings"], "the following arguments are required: output"),
    (["dump-token-embeddings", "t.hdf5", "--resume", "--overwrite"], "not allowed with argument --resume"),
    (["train"] + TRAINING[2:], "the following arguments are required: --train_prefix"),
    (["train"] + TRAINING + ["--filters", "[[1,"], "argument --filters: expected JSON"),
    (["train"] + TRAINING + ["--n_gpus", "0"], "argument --n_gpus/--n-gpus: expected a positive integer, got 0"),
    (["train"] + TRAINING + ["--batch_size", "x"], "argument --batch_size/--batch-size: expected a positive integer"),
    (["train"] + TRAINING + ["--n_highway", "-1"], "argument --n_highway/--n-highway: expected a non-negative"),
    (["restart", "--save_dir", "ckpt"], "required: --train_prefix/--train-prefix, --vocab_file/--vocab-file"),
    (["test", "--save_dir", "ckpt"], "required: --test_prefix/--test-prefix, --vocab_file/--vocab-file"),
    (["dump-weights", "--save_dir", "ckpt"], "the following arguments are required: --outfile"),
    (["vocab", "--output", "v.txt"], "the following arguments are required: inputs"),
    (["vocab", "a.txt", "--output", "v.txt", "--min-count", "-1"], "argument --min_count/--min-count: expected a"),
]


@pytest.mark.parametrize("argv, message", USAGE_ERRORS, ids=[" ".join(a) or "nothing" for a, _ in USAGE_ERRORS])
def test_missing_or_contradictory_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("bilm") and message in error


def test_outputs_are_not_overwritten_and_runs_resume(tmp_path, capsys):
    options_file, weight_file = write_model(tmp_path / "model", make_options())
    data = tmp_path / "data.txt"
    data.write_text("a first line\nand a second one\n", encoding="utf-8")
    out = tmp_path / "out.hdf5"
    model = ["--options", options_file, "--weights", weight_file]
    assert main(["--quiet", "embed", str(data), str(out)] + model) == 0
    first = out.read_bytes()
    assert main(["--quiet", "embed", str(data), str(out)] + model) == 2
    expected = f"bilm: error: {out}: already exists; pass --overwrite to replace it"  # flags, not keywords
    assert capsys.readouterr().err.strip() == expected
    assert out.read_bytes() == first
    refused = subprocess.run(  # at once: before TensorFlow's seconds of start-up
        [sys.executable, "-c", "import sys; from bilm.cli import main; code = main(sys.argv[1:]); "
                               "sys.exit(10 + code if 'tensorflow' in sys.modules else code)",
         "embed", str(data), str(out)] + model, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.strip() == expected
    assert main(["embed", str(data), str(out), "--resume", "--quiet"] + model) == 0  # complete: nothing to do
    assert main(["--quiet", "embed", str(data), str(out), "--overwrite", "--state-mode", "zero"]
                + model) == 0
    with h5py.File(out, "r") as fin:
        assert sorted(fin) == ["0", "1", "sentence_to_index"] and fin["1"].shape == (3, 4, 16)
    data.write_text("a first line\n\nthird\n", encoding="utf-8")
    assert main(["--quiet", "embed", str(data), str(tmp_path / "o2.hdf5")] + model) == 2
    assert f"{data}: 1 empty line (line 2)" in capsys.readouterr().err
    assert main(["--quiet", "embed", str(data), str(tmp_path / "o2.hdf5"), "--empty-lines", "keep"] + model) == 0
    with h5py.File(tmp_path / "o2.hdf5", "r") as fin:
        assert fin["1"].shape == (3, 0, 16) and fin["2"].shape == (3, 1, 16)
    vocab = tmp_path / "vocab.txt"
    assert main(["vocab", str(data), "--output", str(vocab)]) == 0
    assert main(["vocab", str(data), "--output", str(vocab)]) == 2
    assert main(["vocab", str(data), "--output", str(vocab), "--overwrite"]) == 0


def test_dump_token_embeddings_command_gives_layer_zero_of_embed(tmp_path):
    options_file, weight_file = write_model(tmp_path / "model", make_options(), seed=7)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("<S>\n</S>\n<UNK>\nthe\ncat\nnaïve\n", encoding="utf-8")
    model = ["--options", options_file, "--weights", weight_file, "--vocab", str(vocab)]
    assert main(["--quiet", "dump-token-embeddings", str(tmp_path / "tokens.hdf5")] + model) == 0
    data = tmp_path / "data.txt"
    data.write_text("naïve cat the\n", encoding="utf-8")
    assert main(["--quiet", "embed", str(data), str(tmp_path / "out.hdf5"), "--state-mode", "zero"] + model) == 0
    with h5py.File(tmp_path / "tokens.hdf5", "r") as tokens, h5py.File(tmp_path / "out.hdf5", "r") as out:
        assert tokens["embedding"].shape == (6, 8)
        layer0 = out["0"][0, :, :8]  # layer 0 is [token embedding, token embedding]
        np.testing.assert_allclose(tokens["embedding"][...][[5, 4, 3]], layer0, atol=1e-6)


def test_version_and_both_spellings_of_flags(tmp_path, model_args, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["--version"])
    assert raised.value.code == 0 and capsys.readouterr().out.strip().startswith("bilm ")
    data = tmp_path / "data.txt"
    data.write_text("one two\n", encoding="utf-8")
    assert main(["--quiet", "embed", str(data), str(tmp_path / "a.hdf5"), "--batch_size", "3",
                 "--state_mode", "zero"] + model_args) == 0
    assert main(["--quiet", "embed", str(data), str(tmp_path / "b.hdf5"), "--batch-size", "3",
                 "--state-mode", "zero", "--mix-weights", "1,0,0"] + model_args) == 2
    assert "--mix-weights are used only with --layers mix, not --layers all" in capsys.readouterr().err


def test_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path, model_args, capsys, monkeypatch):
    data = tmp_path / "s.txt"
    data.write_text("one two\n", encoding="utf-8")
    before = data.read_bytes()
    assert main(["--quiet", "embed", str(data), str(data), "--overwrite"] + model_args) == 2
    assert "is the input text of this job" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["--quiet", "embed", "s.txt", "./s.txt", "--overwrite"] + model_args) == 2
    assert main(["vocab", "s.txt", "--output", "s.txt", "--overwrite"]) == 2
    assert main(["merge", "s.txt", "s.txt", "--overwrite"]) == 2
    assert main(["--quiet", "embed", "s.txt", model_args[3], "--overwrite"] + model_args) == 2
    assert data.read_bytes() == before


def test_tensorflow_start_up_lines_are_not_shown(tmp_path, model_args):
    data = tmp_path / "data.txt"
    data.write_text("one two\n", encoding="utf-8")
    result = _run("-m", "bilm.cli", "embed", str(data), str(tmp_path / "o.hdf5"), *model_args)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith(("INFO ", "WARNING ")) for line in lines), lines
    help_text = _run("-m", "bilm.cli", "vocab", "--help")
    assert help_text.stderr == "" and "--min_count" in help_text.stdout


def _start(*args):
    return subprocess.Popen([sys.executable, "-m", "bilm.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(condition, process, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def _loads_tensorflow(pid):
    """Whether process ``pid`` has mapped TensorFlow's library (it is importing or has imported it)."""
    try:
        return "libtensorflow" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_interrupted_embed_keeps_its_work_and_resumes(tmp_path, model_args):
    data = tmp_path / "data.txt"
    rng = np.random.default_rng(4)
    data.write_text("".join(" ".join(s) + "\n" for s in random_sentences(rng, N_LINES, max_len=20)), encoding="utf-8")
    out, expected = tmp_path / "out.hdf5", tmp_path / "expected.hdf5"
    job = ["embed", str(data), str(out), "--batch-size", "4"] + model_args
    # Ctrl-C while TensorFlow loads (once the command runs: it handles SIGTERM): one line, no traceback.
    early = _start(*job)
    _wait_for(lambda: _loads_tensorflow(early.pid), early)
    early.send_signal(signal.SIGINT)
    _, stderr = early.communicate(timeout=120)
    assert early.returncode == 130 and "Traceback" not in stderr and stderr.strip().startswith("bilm: interrupted")
    # Ctrl-C once 25 batches are done (stderr not a terminal): they are kept, the one line counts them, and
    # --resume finishes the same file.
    process = Command(job)
    process.wait_until_saved()
    stderr = process.stop(signal.SIGINT)
    assert process.process.returncode == 130
    assert 100 <= the_one_line(stderr) == saved_sentences(out)
    assert not out.exists() and not Path(str(out) + ".lock").exists()
    assert main(["--quiet"] + job + ["--resume"]) == 0
    assert main(["--quiet", "embed", str(data), str(expected), "--batch-size", "4"] + model_args) == 0
    with h5py.File(out, "r") as got, h5py.File(expected, "r") as want:
        assert sorted(got) == sorted(want)
        for key in want:
            np.testing.assert_array_equal(got[key][...], want[key][...])


def test_a_second_job_on_the_same_output_is_refused_at_once(tmp_path, model_args):
    data = tmp_path / "data.txt"
    rng = np.random.default_rng(5)
    data.write_text("".join(" ".join(s) + "\n" for s in random_sentences(rng, N_LINES, max_len=20)), encoding="utf-8")
    out = tmp_path / "out.hdf5"
    first = _start("embed", str(data), str(out), "--batch-size", "4", *model_args)
    _wait_for(Path(str(out) + ".lock").exists, first)
    first.send_signal(signal.SIGSTOP)  # holding its lock until the second has tried (it could finish first)
    try:
        second = _start("embed", str(data), str(out), "--batch-size", "4", "--resume", *model_args)
        _, stderr = second.communicate(timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2
    assert f"is being written by another process (pid {first.pid}, `" in stderr and "Traceback" not in stderr
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    with h5py.File(out, "r") as fin:
        assert len(fin) == N_LINES + 1  # every line, and sentence_to_index
    save = tmp_path / "ckpt"
    train = ["train", "--train_prefix", str(TINY_CORPUS), "--vocab_file", str(TINY_VOCAB), "--save_dir", str(save),
             "--lstm_dim", "16", "--projection_dim", "8", "--filters", "[[1, 8]]", "--n_highway", "0",
             "--batch_size", "2", "--unroll_steps", "5", "--n_negative_samples", "4", "--n_epochs", "10000"]
    trainer = _start(*train)  # a run far longer than this test: it ends by the SIGTERM below
    _wait_for((save / "train.lock").exists, trainer)
    trainer.send_signal(signal.SIGSTOP)  # as above
    other = _start(*train)
    _, stderr = other.communicate(timeout=120)
    trainer.send_signal(signal.SIGCONT)
    assert other.returncode == 2 and "is being written by another process" in stderr
    trainer.send_signal(signal.SIGTERM)
    _, stderr = trainer.communicate(timeout=120)
    assert trainer.returncode == 143, stderr


START_UP_MARKERS = ("oneDNN", "cpu_feature_guard", "TF_ENABLE_ONEDNN_OPTS", "absl::InitializeLog", "cuInit",
                    "cuda drivers")


def _run_as_a_user(*args):
    """A subprocess with TensorFlow's log settings as a user has them (none)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("command", [
    ["usage_character.py"], ["usage_token.py"], ["usage_cached.py"],
    ["-m", "bilm.cli", "merge", "MERGED", "MISSING"], ["-m", "bilm.cli", "download", "--list"],
], ids=["usage_character", "usage_token", "usage_cached", "failed merge", "download --list"])
def test_no_tensorflow_start_up_line_is_shown(command, tmp_path):
    command = [str(tmp_path / "m.hdf5") if a == "MERGED" else str(tmp_path / "no.hdf5") if a == "MISSING" else a
               for a in command]
    result = _run_as_a_user(*command)
    lines = result.stderr.splitlines()
    assert not [line for line in lines if any(marker in line for marker in START_UP_MARKERS)], lines
    if command[-1].endswith("no.hdf5"):
        assert result.returncode == 2 and lines == [f"bilm: error: {tmp_path / 'no.hdf5'}: shard output not found"]
    else:
        assert result.returncode == 0 and result.stdout, result.stderr


# Lines TensorFlow 2.21's GPU build writes as it starts on a machine without a GPU (its CPU build: some of them).
GPU_BUILD_START_UP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796284900.992016   11305 port.cc:153] oneDNN custom operations are on. You may see slightly different \
numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the \
environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796284901.004200   11305 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be \
used.
I0000 00:00:1796284901.426052   11305 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available \
CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild \
TensorFlow with the appropriate compiler flags.
E0000 00:00:1796284905.834489   11305 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call \
to cuInit: UNKNOWN ERROR (303)
"""


def test_start_up_lines_are_told_from_errors(monkeypatch):
    monkeypatch.setattr(startup.glob, "glob", lambda pattern: [])  # no NVIDIA GPU
    assert all(startup.is_start_up_line(line) for line in GPU_BUILD_START_UP.splitlines())
    error = "E0000 00:00:1796284905.834489   11305 some_kernel.cc:52] INTERNAL: out of memory"
    assert not startup.is_start_up_line(error)
    monkeypatch.setattr(startup.glob, "glob", lambda pattern: ["/dev/nvidia0"])  # a GPU that cuInit failed on: shown
    cuinit = GPU_BUILD_START_UP.splitlines()[-1]
    assert not startup.is_start_up_line(cuinit)
    # What is written while TensorFlow starts is held back, then shown less the start-up lines.
    written = "".join(GPU_BUILD_START_UP.splitlines(keepends=True)[:-1]) + error + "\n"  # (cuInit's: GPU or not)
    held = _run_as_a_user("-c", "import os; from bilm.core.startup import _start_up_lines_hidden\n"
                                "with _start_up_lines_hidden(True):\n"
                                f"    os.write(2, {written.encode()!r})")
    assert held.returncode == 0 and held.stderr == error + "\n", held.stderr


def test_a_misspelled_flag_shows_its_command_usage_and_the_nearest_flag(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["embed", "in.txt", "out.hdf5", "--layr", "top"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: bilm embed ") and "--layers {all,top,average,mix}" in err
    assert err.strip().splitlines()[-1] == ("bilm embed: error: unrecognized arguments: --layr top "
                                            "(did you mean --layers?)")
