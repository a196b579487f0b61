"""bilm against AllenAI's original bilm-tf (and AllenNLP's PyTorch ELMo), in the same run on the same data.

    python benchmarks/vs_original.py [--original /path/to/bilm-tf] [--allennlp /path/to/allennlp]
                                     [--repeat 3] [--quick] [--heldout 800,3]

The original (https://github.com/allenai/bilm-tf, TensorFlow 1.x code) is imported from
the checkout given with ``--original`` and run on this machine's TensorFlow 2 through
``benchmarks/original_shim.py``; AllenNLP's ELMo (https://github.com/allenai/allennlp,
PyTorch) from the checkout given with ``--allennlp``, through
``benchmarks/allennlp_elmo.py``. Nothing of either is copied here. Without them only the
bilm rows and the matrix-product ceiling are measured.

Prints Markdown tables:

1. training end to end (``bilm.training.train`` of each library, the reference
   configuration, one tower): whole calls of 25 and of 100 batches, each in a fresh
   process, and the steady rate 75 batches' tokens / (t100 - t25), which leaves out
   graph building and set-up; where the CPU computes bfloat16 natively (AVX-512 BF16 or
   AMX), bilm with ``precision="bfloat16"`` too, and the held-out perplexity (float32
   evaluation, 1,000 other sentences) of both bilm runs' checkpoints after the same batches;
2. ``dump_bilm_embeddings`` of the full-size ELMo model (seeded random weights in the
   original's HDF5 layout) on the first 300 sentences of a seeded synthetic corpus, and
   AllenNLP's file embedding of the same model and sentences (batches of 64 in file
   order, PyTorch with one thread per core): whole-call time, tokens/s, peak RSS, the
   steady rate from the 300- and 100-sentence calls, and the mean cosine per layer of
   each peer's output with bilm's;
3. the machine's float32 matrix-product rate (4096 x 4096) in TensorFlow (defaults, and
   with ``TF_ENABLE_ONEDNN_OPTS=1``) and in NumPy;
4. with ``--heldout BATCHES,SEEDS`` (not timed): bilm's float32 and bfloat16 training of the
   reference configuration for BATCHES batches with each seed (a seed's two runs start from
   the same weights and draw the same dropout masks and samples), the held-out perplexity of
   each, and how far float32 runs of different seeds are from each other (what a difference
   between precisions should be read against).

Every measurement runs in its own child process (fresh memory, fresh TensorFlow) and
sends its figures back as one JSON line; peak RSS is the child's ``ru_maxrss``. The
whole list of training and dump jobs runs ``--repeat`` times (default 3), round after
round, the libraries alternating within each round; each figure is the median of its
runs, each ratio the median of the per-round ratios, and every run is listed.
``--quick`` makes everything small and runs one round unless ``--repeat`` is given (a
smoke test, not a measurement). Needs ``tf_keras`` for the original (``pip install
"tf_keras~=2.21"``), and for AllenNLP PyTorch and a few of AllenNLP's own dependencies
(``pip install torch --index-url https://download.pytorch.org/whl/cpu`` and ``pip install
spacy transformers cached-path lmdb dill base58``); all benchmark-only dependencies.
"""
import argparse
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SEED = 0
logger = logging.getLogger("vs_original")

N_WORDS = 8000  # vocabulary: <S>, </S>, <UNK>, then the 8,000 most frequent words
TRAIN_OPTIONS = {
    "bidirectional": True,
    "char_cnn": {"activation": "relu", "embedding": {"dim": 16}, "filters": [[1, 32], [2, 32], [3, 64], [4, 128]],
                 "max_characters_per_token": 50, "n_characters": 261, "n_highway": 1},
    "dropout": 0.1,
    "lstm": {"cell_clip": 3, "dim": 512, "n_layers": 2, "proj_clip": 3, "projection_dim": 128,
             "use_skip_connections": True},
    "all_clip_norm_val": 10.0,
    "n_epochs": 1,
    "batch_size": 32,
    "unroll_steps": 20,
    "n_negative_samples_batch": 1024,
    "n_tokens_vocab": N_WORDS + 3,
}
TOKENS_PER_BATCH = TRAIN_OPTIONS["batch_size"] * TRAIN_OPTIONS["unroll_steps"]
TRAIN_SENTENCES, TRAIN_SHARDS = 20000, 4
ALLENNLP_INSTALL = ("pip install torch --index-url https://download.pytorch.org/whl/cpu && "
                    "pip install spacy transformers cached-path lmdb dill base58")


# --- jobs, each run in a child process ----------------------------------------------------

def _seed_everything(seed=SEED):
    import numpy as np
    random.seed(seed)
    np.random.seed(seed)


def _import_library(original):
    """The ``bilm`` package to measure: the original's from its checkout (through the shim), or this one."""
    if original:
        sys.path.insert(0, HERE)
        import original_shim
        return original_shim.import_original(original)
    sys.path.insert(0, REPO)
    import bilm
    return bilm


def job_train(work, original, n_batches, precision="float32", seed=SEED):
    """One whole call of the library's ``bilm.training.train`` for ``n_batches`` batches (bilm: in
    ``precision``), then (bilm, outside the timed call) the held-out perplexity of its checkpoint,
    evaluated in float32."""
    lib = _import_library(original)
    import tensorflow  # noqa: F401 (before the clock, as the original's import does: bilm loads it when first used)
    import bilm.data
    import bilm.training
    _seed_everything(seed)
    options = dict(TRAIN_OPTIONS, n_train_tokens=n_batches * TOKENS_PER_BATCH)
    save_dir = tempfile.mkdtemp(prefix="train_", dir=work["dir"])
    kwargs = {} if original else {"seed": seed, "precision": precision}  # checkpoint_every=1250, log_every=100
    if original:  # the original sets no seed: give its default graph the seed bilm's train(seed=) sets
        import tensorflow as tf  # the shim: TF 1.x names
        tf.set_random_seed(seed)
    start = time.perf_counter()
    vocab = bilm.training.load_vocab(work["train_vocab"], 50)
    data = bilm.data.BidirectionalLMDataset(work["train_pattern"], vocab, test=False, shuffle_on_load=True)
    bilm.training.train(options, data, 1, save_dir, save_dir, **kwargs)
    seconds = time.perf_counter() - start
    checkpoints = sorted(f for f in os.listdir(save_dir) if f.endswith(".index"))
    heldout, peak_gb = None, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # the call's alone
    if not original:
        from bilm.training.evaluation import evaluate_checkpoint
        heldout = float(evaluate_checkpoint(save_dir, work["heldout"], work["train_vocab"], batch_size=64))
    return {"seconds": seconds, "tokens": n_batches * TOKENS_PER_BATCH, "checkpoints": checkpoints,
            "library": lib.__file__, "heldout_perplexity": heldout, "peak_gb": peak_gb}


def job_dump(work, original, n_sentences, state_mode=None, precision="float32", pack=True):
    """One whole call of ``dump_bilm_embeddings`` on the first ``n_sentences`` of the corpus (bilm: in
    ``precision``; ``pack=False``: without packing the LSTMs' matrices, ``bilm.core.network.packs``, and so
    with Grappler's passes, ``bilm.embedding.embedder.ElmoEmbedder``)."""
    lib = _import_library(original)
    import tensorflow  # noqa: F401 (before the clock, as the original's import does: bilm loads it when first used)
    if not pack:
        from bilm.core import inference
        inference.PACK_LSTM_WEIGHTS = False
    dataset = os.path.join(work["dir"], f"first_{n_sentences}.txt")
    tag = "original" if original else f"bilm_{state_mode}_{precision}" + ("" if pack else "_unpacked")
    outfile = os.path.join(work["dir"], f"dump_{tag}_{n_sentences}.hdf5")
    args = (work["vocab"], dataset, work["options"], work["weights"], outfile)
    start = time.perf_counter()
    if original:
        lib.model.dump_bilm_embeddings(*args)
    else:
        lib.dump_bilm_embeddings(*args, state_mode=state_mode, overwrite=True, precision=precision)
    seconds = time.perf_counter() - start
    with open(dataset) as fin:
        tokens = sum(len(line.split()) for line in fin)
    return {"seconds": seconds, "tokens": tokens, "outfile": outfile, "library": lib.__file__}


def job_allennlp_dump(work, allennlp, n_sentences):
    """One whole call of AllenNLP's file embedding (``allennlp_elmo.embed_file``) on the first ``n_sentences``."""
    sys.path.insert(0, HERE)
    import allennlp_elmo
    elmo, nn_util = allennlp_elmo.import_elmo(allennlp)
    import torch
    torch.set_num_threads(os.cpu_count())
    dataset = os.path.join(work["dir"], f"first_{n_sentences}.txt")
    outfile = os.path.join(work["dir"], f"dump_allennlp_{n_sentences}.hdf5")
    start = time.perf_counter()
    tokens = allennlp_elmo.embed_file(elmo, nn_util, work["options"], work["weights"], dataset, outfile)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": tokens, "outfile": outfile, "library": elmo.__file__,
            "torch": f"{torch.__version__}, {torch.get_num_threads()} threads"}


def job_setup(work, state_mode, keep_warm_states=True, precision="float32"):
    """bilm's set-up before the first sentence: graph, weights, warm-up (TensorFlow already imported);
    ``keep_warm_states=False``: the warm states computed, not read from the cache (a model's first job)."""
    if not keep_warm_states:
        os.environ["BILM_NO_WARM_CACHE"] = "1"
    _import_library(None)
    import tensorflow  # noqa: F401 (imported before the clock starts, as in any program that runs many jobs)
    from bilm.embedding.embedder import ElmoEmbedder
    with open(work["corpus"]) as fin:
        sentence = fin.readline().split()
    start = time.perf_counter()
    with ElmoEmbedder(work["options"], work["weights"], state_mode=state_mode, precision=precision) as embedder:
        embedder.embed_sentence(sentence)
        seconds = time.perf_counter() - start
    return {"seconds": seconds}


def job_matmul_tf(work, n, repeats, dtype="float32"):
    """Best time of one n x n product in TensorFlow, in ``dtype`` (graph mode, as both libraries run)."""
    import tensorflow.compat.v1 as tf
    tf.disable_eager_execution()
    a = tf.Variable(tf.cast(tf.random.normal((n, n), seed=SEED), dtype))
    b = tf.Variable(tf.cast(tf.random.normal((n, n), seed=SEED + 1), dtype))
    product = tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32))  # a scalar back: no 64 MB copy out per call
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(product)
        best = min(_timed(lambda: sess.run(product)) for _ in range(repeats))
    return {"gflops": 2 * n ** 3 / best / 1e9, "tf_version": tf.__version__}


def job_matmul_numpy(work, n, repeats):
    """Best time of one n x n float32 product ``a @ b`` in NumPy."""
    import numpy as np
    rng = np.random.default_rng(SEED)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return {"gflops": 2 * n ** 3 / best / 1e9}


def _timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def child(spec):
    """Run one job (in this fresh process) and print its result as a JSON line."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)  # the libraries' own progress, into the job's log
    name, kwargs = json.loads(spec)
    result = globals()[name](**kwargs)
    result.setdefault("peak_gb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2)
    sys.stdout.flush()
    print("RESULT " + json.dumps(result), flush=True)


def run(name, log_dir, env=None, tag="", **kwargs):
    """Run job ``name`` in a child process (environment ``env``); its output goes to a log file in ``log_dir``."""
    label = "_".join([str(v) for k, v in sorted(kwargs.items()) if k != "work" and v is not None] + [tag])
    log_path = os.path.join(log_dir, f"{name}_{label}.log".replace("/", "_"))
    logger.info("%s %s ...", name, label)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps([name, kwargs])],
                                 stdout=subprocess.PIPE, stderr=log, text=True, env=env, check=False)
        log.write(process.stdout)
    for line in process.stdout.splitlines():
        if line.startswith("RESULT "):
            logger.info("%s %s: %.1f s", name, label, time.perf_counter() - start)
            return dict(json.loads(line[len("RESULT "):]), log=log_path)
    with open(log_path) as log:
        tail = log.read()[-4000:]
    raise RuntimeError(f"{name} {label} failed (exit {process.returncode}); log {log_path}:\n{tail}")


def in_rounds(jobs, repeat, log_dir):
    """Run every job of ``jobs`` ({key: (name, kwargs)}) ``repeat`` times, each run in a fresh process.

    Round after round, each round running every job once in the order of ``jobs`` (the
    libraries alternate: original, bilm, original, bilm, ...), so that load from elsewhere
    on a shared machine falls on every job alike and the runs one ratio compares are
    neighbours in time. Returns {key: [result of round 1, round 2, ...]}.
    """
    runs = {key: [] for key in jobs}
    for k in range(repeat):
        for key, (name, kwargs) in jobs.items():
            runs[key].append(run(name, log_dir, tag=f"run{k + 1}" if repeat > 1 else "", **kwargs))
    return runs


def median(values):
    """The median of the values that are not None; None when none is."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def per_round_ratios(numerators, denominators):
    """a / b of each round's pair, None where either is missing."""
    return [a / b if a and b else None for a, b in zip(numerators, denominators)]


def figures(small_runs, large_runs):
    """One library's figures, each a list in round order: whole-call seconds of the small and the
    large job, the steady rate (the tokens between them / the seconds between them; None where
    noise made the difference <= 0) and the large job's peak RSS in GB."""
    return {"small": [r["seconds"] for r in small_runs], "large": [r["seconds"] for r in large_runs],
            "steady": [(b["tokens"] - a["tokens"]) / (b["seconds"] - a["seconds"]) if b["seconds"] > a["seconds"]
                       else None for a, b in zip(small_runs, large_runs)],
            "peak": [r["peak_gb"] for r in large_runs]}


def comparison(ours, theirs):
    """Per-round ratios of two libraries' ``figures``: speed (their seconds / ours, our rate / theirs) and memory
    (our peak / theirs)."""
    return {"small": per_round_ratios(theirs["small"], ours["small"]),
            "large": per_round_ratios(theirs["large"], ours["large"]),
            "steady": per_round_ratios(ours["steady"], theirs["steady"]),
            "peak": per_round_ratios(ours["peak"], theirs["peak"])}


def short(label):
    """A row's label without its parenthesis."""
    return label.split(" (")[0]


def cell(value, spec):
    """A table cell: ``value`` formatted by ``spec``, n/a for None (no figure, or noise)."""
    return "n/a" if value is None else format(value, spec)


def ratio_cell(ratios):
    """The median of per-round ratios as a table cell."""
    return cell(median(ratios), ".2f") + ("x" if median(ratios) is not None else "")


def all_runs_line(runs, unit=""):
    """Every run's time of each job ({(label, size): [result, ...]}), in the order run: the machine's noise."""
    return "All runs, in the order run (s): " + "; ".join(
        f"{label} {n}{unit}: " + ", ".join(f"{r['seconds']:.1f}" for r in results) for (label, n), results in runs.items())


def ratios_line(label, ratios, sizes, unit):
    """Every round's ratios of one comparison (``comparison``'s dict)."""
    small, large = sizes
    parts = [(f"{small}{unit}", ratios["small"]), (f"{large}{unit}", ratios["large"]), ("steady", ratios["steady"]),
             ("memory", ratios["peak"])]
    return f"Per-repetition ratios, {label}: " + "; ".join(
        f"{name} " + ", ".join(ratio_cell([r]) for r in values) for name, values in parts)


# --- data, written once by the parent ----------------------------------------------------

def write_training_data(directory):
    """The training corpus in shard files and its 8,003-token vocabulary (most frequent first)."""
    from inference import write_corpus

    from bilm.core.vocabulary import build_vocabulary, count_tokens, write_vocabulary
    corpus = write_corpus(tempfile.mkdtemp(dir=directory), TRAIN_SENTENCES, seed=SEED + 1)
    with open(corpus) as fin:
        lines = fin.readlines()
    per_shard = -(-len(lines) // TRAIN_SHARDS)
    shards = []
    for k in range(TRAIN_SHARDS):
        shards.append(os.path.join(directory, f"train_shard_{k}.txt"))
        with open(shards[-1], "w") as fout:
            fout.writelines(lines[k * per_shard:(k + 1) * per_shard])
    heldout = os.path.join(directory, "heldout.txt")
    with open(write_corpus(tempfile.mkdtemp(dir=directory), 1000, seed=SEED + 2)) as fin, open(heldout, "w") as fout:
        fout.writelines(fin)
    counts, _ = count_tokens(shards)
    if len(counts) < N_WORDS:
        raise RuntimeError(f"the synthetic corpus has only {len(counts)} distinct words")
    vocab = os.path.join(directory, "train_vocab.txt")
    write_vocabulary(build_vocabulary(counts, max_size=N_WORDS + 3), vocab)
    n_tokens = sum(counts.values())
    return {"train_pattern": os.path.join(directory, "train_shard_*.txt"), "train_vocab": vocab,
            "train_tokens": n_tokens, "heldout": heldout}


def write_dump_data(directory, sizes):
    """The full-size model (seeded random weights), a corpus, its vocabulary, and its first-n-lines files."""
    from inference import write_corpus, write_model

    from bilm.core.vocabulary import build_vocabulary, count_tokens, write_vocabulary
    options, weights = write_model(directory, seed=SEED)
    corpus = write_corpus(directory, 2000, seed=SEED)  # as benchmarks/inference.py
    vocab = os.path.join(directory, "vocab.txt")
    write_vocabulary(build_vocabulary(count_tokens([corpus])[0]), vocab)
    with open(corpus) as fin:
        lines = fin.readlines()
    for n in sizes:
        with open(os.path.join(directory, f"first_{n}.txt"), "w") as fout:
            fout.writelines(lines[:n])
    return {"options": options, "weights": weights, "vocab": vocab, "corpus": corpus}


# --- report ------------------------------------------------------------------------------

def cpu_model_and_flags():
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as fin:
            for line in fin:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def native_bfloat16():
    """Whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX): bilm's own test for it."""
    return bool(cpu_model_and_flags()[1] & {"avx512_bf16", "amx_bf16"})


def machine_line():
    """CPU model, cores, memory, AVX-512 (bfloat16 and AMX), TensorFlow version, load."""
    model, flags = cpu_model_and_flags()
    avx512 = sorted(f for f in flags if f.startswith(("avx512", "amx")))
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3
    tf_version = "not installed"
    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            tf_version = f"{importlib.metadata.version(dist)} ({dist})"
            break
        except importlib.metadata.PackageNotFoundError:
            pass
    return (f"Machine: {model}, {os.cpu_count()} cores, {memory_gb:.0f} GiB; AVX-512: "
            f"{'yes (' + ', '.join(avx512) + ')' if avx512 else 'no'}; Python {platform.python_version()}, "
            f"TensorFlow {tf_version}; load average at start {os.getloadavg()[0]:.2f}")


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def identical_sentences(file_a, file_b):
    """(sentences whose layers are the same bits in both dump outputs, sentences)."""
    import h5py
    import numpy as np
    with h5py.File(file_a, "r") as a, h5py.File(file_b, "r") as b:
        keys = [key for key in a if key.isdigit()]
        return sum(key in b and np.array_equal(a[key][...], b[key][...]) for key in keys), len(keys)


def mean_cosines(file_a, file_b):
    """Mean cosine similarity per layer between two dump outputs (same sentences)."""
    import h5py
    import numpy as np
    sums, count = None, 0
    with h5py.File(file_a, "r") as a, h5py.File(file_b, "r") as b:
        for key in a:
            if key not in b or not key.isdigit():
                continue
            x, y = a[key][...], b[key][...]
            cos = (x * y).sum(-1) / (np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1) + 1e-12)
            sums = cos.sum(-1) if sums is None else sums + cos.sum(-1)
            count += x.shape[1]
    return [float(s / count) for s in sums]


def own_rate(log_path):
    """The training rate a library logs itself at batch 100 of a run: (tokens/s, what it counts), or None.

    The original prints ``Total time: S`` (seconds since its loop started, first batch
    included) every 100 batches; bilm logs ``N tokens/s`` (first batch excluded).
    """
    with open(log_path) as fin:
        text = fin.read()
    original = re.findall(r"Total time: ([0-9.]+)", text)
    if original:
        return 100 * TOKENS_PER_BATCH / float(original[-1]), "100 batches / loop time"
    own = re.findall(r"batch 100/\d+: .*?([0-9,]+) tokens/s", text)
    return (int(own[-1].replace(",", "")), "batches 2-100") if own else None


def training_section(work, original, sizes, log_dir, repeat):
    small, large = sizes
    libraries = ([("original bilm-tf", original, "float32")] if original else []) + [("bilm", None, "float32")]
    if native_bfloat16():
        libraries.append(("bilm, --precision bfloat16", None, "bfloat16"))
    jobs = {(label, n): ("job_train", {"work": work, "original": path, "n_batches": n, "precision": precision})
            for n in sizes for label, path, precision in libraries}  # the libraries alternate
    runs = in_rounds(jobs, repeat, log_dir)
    rows, results = [], {}
    for label, _, _ in libraries:
        result = results[label] = figures(runs[label, small], runs[label, large])
        own = [own_rate(r["log"]) for r in runs[label, large]]
        own_median = median([r[0] for r in own if r])
        rows.append([label, cell(median(result["small"]), ".1f"), cell(median(result["large"]), ".1f"),
                     cell(median(result["steady"]), ",.0f"),
                     f"{own_median:,.0f} ({next(r[1] for r in own if r)})" if own_median else "",
                     cell(median(result["peak"]), ".2f"), ", ".join(runs[label, large][-1]["checkpoints"])])
    comparisons = []
    for label, _, _ in libraries[1 if original else 2:]:
        peer = "original bilm-tf" if original else "bilm"
        if label == peer:
            continue
        name = f"{label} / {peer if peer == 'bilm' else 'original'}"
        ratios = comparison(results[label], results[peer])
        comparisons.append((name, ratios))
        rows.append([f"{name} (speed; memory)", ratio_cell(ratios["small"]), ratio_cell(ratios["large"]),
                     ratio_cell(ratios["steady"]), "", ratio_cell(ratios["peak"]), ""])
    print(f"\n### Training end to end ({work['train_tokens']:,}-token corpus in {TRAIN_SHARDS} shards, "
          f"{N_WORDS + 3:,}-token vocabulary, batch 32 x 20, 1 tower)\n")
    print(table(["library", f"whole call, {small} batches (s)", f"whole call, {large} batches (s)",
                 f"steady tokens/s ({large - small} batches)", f"the library's own tokens/s log ({large} batches)",
                 f"peak RSS GB ({large} batches)", "checkpoints saved"], rows))
    print("\n" + all_runs_line(runs, " batches"))
    for name, ratios in comparisons:
        print("\n" + ratios_line(name, ratios, sizes, " batches"))
    heldout = {label: [r["heldout_perplexity"] for r in runs[label, large]] for label, _, _ in libraries
               if label != "original bilm-tf"}
    if len(heldout) > 1:
        line = "; ".join(f"{label}: {', '.join(f'{p:.2f}' for p in values)}" for label, values in heldout.items())
        reduced = heldout["bilm, --precision bfloat16"]
        differences = [100 * (b / a - 1) for a, b in zip(heldout["bilm"], reduced)]
        print(f"\nHeld-out perplexity after {large} batches (1,000 other sentences of the same generator, evaluated "
              f"in float32, seeded alike), each repetition: {line}; bfloat16 against float32: "
              f"{', '.join(f'{d:+.2f}%' for d in differences)}")
    sys.stdout.flush()


def heldout_section(work, n_batches, seeds, log_dir):
    """bilm's float32 and bfloat16 training, each seed's pair from the same initial weights, dropout
    masks and samples: held-out perplexity (evaluated in float32) after ``n_batches``."""
    if not native_bfloat16():  # bilm would train float32: nothing to compare
        print("\nHeld-out perplexity by precision skipped: this CPU computes no bfloat16 natively (no AVX-512 BF16 "
              "or AMX), so bilm trains such runs in float32.")
        return
    precisions = ["float32", "bfloat16"]
    jobs = {(precision, seed): ("job_train", {"work": work, "original": None, "n_batches": n_batches,
                                              "precision": precision, "seed": seed})
            for seed in range(seeds) for precision in precisions}
    runs = in_rounds(jobs, 1, log_dir)
    perplexity = {key: result[0]["heldout_perplexity"] for key, result in runs.items()}
    rows = []
    for seed in range(seeds):
        f32, b16 = (perplexity[p, seed] for p in precisions)
        rows.append([str(seed), f"{f32:.2f}", f"{b16:.2f}", f"{100 * (b16 / f32 - 1):+.2f}%"])
    means = [statistics.mean(perplexity[p, seed] for seed in range(seeds)) for p in precisions]
    spread = max(perplexity["float32", s] for s in range(seeds)) / min(perplexity["float32", s]
                                                                        for s in range(seeds)) - 1
    rows.append(["mean", f"{means[0]:.2f}", f"{means[1]:.2f}", f"{100 * (means[1] / means[0] - 1):+.2f}%"])
    print(f"\n### Held-out perplexity after {n_batches} batches: float32 against bfloat16 training "
          f"(reference configuration, evaluated in float32 on 1,000 other sentences)\n")
    print(table(["seed", "float32", "bfloat16", "bfloat16 / float32"], rows))
    print(f"\nBetween seeds, float32 alone: the highest perplexity is {100 * spread:.1f}% above the lowest.")
    sys.stdout.flush()


ORIGINAL_LABEL = "original bilm-tf (sentence at a time, stateful)"
BFLOAT16_LABEL = "bilm, state_mode='warm', precision='bfloat16'"
UNPACKED_LABEL = ("bilm, state_mode='warm', precision='bfloat16', LSTM matrices not packed (the straightforward "
                  "path: packed at every product, the session's Grappler passes on)")
SETUP_BFLOAT16 = "warm, states kept, precision='bfloat16'"
SETUP_VARIANTS = {"stateful": {"state_mode": "stateful"}, "zero": {"state_mode": "zero"},
                  "warm (states kept by an earlier job)": {"state_mode": "warm"},
                  "warm (states computed: the model's first job here)": {"state_mode": "warm",
                                                                         "keep_warm_states": False},
                  SETUP_BFLOAT16: {"state_mode": "warm", "precision": "bfloat16"}}


def dump_section(work, original, allennlp, sizes, log_dir, repeat):
    small, large = sizes
    run("job_setup", log_dir, tag="keeping_warm_states", work=work, state_mode="warm")  # as any earlier job would
    ours = [("bilm, state_mode='warm' (default, batched)", "job_dump", {"original": None, "state_mode": "warm"}),
            ("bilm, state_mode='zero' (batched)", "job_dump", {"original": None, "state_mode": "zero"})]
    if native_bfloat16():
        ours.append((BFLOAT16_LABEL, "job_dump", {"original": None, "state_mode": "warm", "precision": "bfloat16"}))
        ours.append((UNPACKED_LABEL, "job_dump",
                     {"original": None, "state_mode": "warm", "precision": "bfloat16", "pack": False}))
    peers = []
    if original:
        peers.append((ORIGINAL_LABEL, "job_dump",
                      {"original": original, "state_mode": None}))
    if allennlp:
        peers.append(("AllenNLP (PyTorch, batches of 64 in file order, stateful)", "job_allennlp_dump",
                      {"allennlp": allennlp}))
    variants = peers[:1] + ours + peers[1:]  # each round: original, bilm warm, bilm zero, AllenNLP
    jobs = {(label, n): (name, dict(kwargs, work=work, n_sentences=n)) for n in sizes for label, name, kwargs in variants}
    runs = in_rounds(jobs, repeat, log_dir)
    tokens = runs[variants[0][0], large][0]["tokens"]
    rows, results = [], {}
    for label, _, _ in variants:
        result = results[label] = figures(runs[label, small], runs[label, large])
        rows.append([label, cell(median(result["small"]), ".1f"), cell(median(result["large"]), ".1f"),
                     f"{tokens / median(result['large']):,.0f}", cell(median(result["steady"]), ",.0f"),
                     cell(median(result["peak"]), ".2f")])
    comparisons = []
    if UNPACKED_LABEL in results:  # the packed LSTM matrices against the same job without them
        name = f"{short(BFLOAT16_LABEL)} / {short(UNPACKED_LABEL)}"
        comparisons.append((name, comparison(results[BFLOAT16_LABEL], results[UNPACKED_LABEL])))
    for peer, _, _ in peers:
        for label, _, _ in ours:
            name = f"{short(label)} / {short(peer)}"
            ratios = comparison(results[label], results[peer])
            comparisons.append((name, ratios))
            rows.append([f"{name} (speed; memory)", ratio_cell(ratios["small"]), ratio_cell(ratios["large"]), "",
                         ratio_cell(ratios["steady"]), ratio_cell(ratios["peak"])])
    print(f"\n### dump_bilm_embeddings, full-size model (first {large} sentences, {tokens:,} tokens; "
          f"seeded random weights; bilm's warm states kept by a job run before the rounds, as by any "
          f"earlier job with this model here: the set-up table below gives both)\n")
    print(table(["library", f"whole call, {small} sentences (s)", f"whole call, {large} sentences (s)",
                 "tokens/s (whole call)", f"steady tokens/s ({large} - {small} sentences)", "peak RSS GB"], rows))
    print("\n" + all_runs_line(runs, " sentences"))
    for name, ratios in comparisons:
        print("\n" + ratios_line(name, ratios, sizes, " sentences"))
    if UNPACKED_LABEL in results:
        same, count = identical_sentences(runs[BFLOAT16_LABEL, large][-1]["outfile"],
                                          runs[UNPACKED_LABEL, large][-1]["outfile"])
        print(f"\nSame output check ({large} sentences): {short(BFLOAT16_LABEL)} and {short(UNPACKED_LABEL)}: "
              f"{same} of {count} sentences the same bits")
    if allennlp:
        print(f"\nAllenNLP: torch {runs[peers[-1][0], large][0]['torch']}")
    for peer, _, _ in peers:
        for label, _, _ in ours:
            cosines = ", ".join(f"{c:.4f}" for c in mean_cosines(runs[peer, small][-1]["outfile"],
                                                                  runs[label, small][-1]["outfile"]))
            print(f"\nSame output check ({small} sentences): mean cosine per layer (0, 1, 2 = top), "
                  f"{short(label)} vs {short(peer)}: {cosines}")
    setup = in_rounds({label: ("job_setup", dict(kwargs, work=work)) for label, kwargs in SETUP_VARIANTS.items()},
                      repeat, log_dir)
    print("\n### bilm's set-up before the first sentence (full-size model; graph, weight loading, warm-up "
          "states; TensorFlow already imported; float32 unless said)\n")
    print(table(["state_mode", "seconds", "all runs (s)"],
                [[label, f"{median([r['seconds'] for r in runs_of]):.2f}",
                  ", ".join(f"{r['seconds']:.2f}" for r in runs_of)] for label, runs_of in setup.items()]))
    sys.stdout.flush()
    return {"steady": {label: median(result["steady"]) for label, result in results.items()},
            "whole": {label: median(result["large"]) for label, result in results.items()},
            "setup": {label: median([r["seconds"] for r in runs_of]) for label, runs_of in setup.items()}}


def ceiling_section(work, n, repeats, log_dir):
    """The float32 product ceiling (the best of TensorFlow's and NumPy's rates) and, where the CPU computes
    bfloat16 natively, TensorFlow's bfloat16 rate (None elsewhere), in GFLOP/s."""
    env_default = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    results = [
        ("TensorFlow, defaults", run("job_matmul_tf", log_dir, env=env_default, work=work, n=n, repeats=repeats)),
        ("TensorFlow, TF_ENABLE_ONEDNN_OPTS=1",
         run("job_matmul_tf", log_dir, env=dict(env_default, TF_ENABLE_ONEDNN_OPTS="1"), work=work, n=n,
             repeats=repeats, tag="onednn")),
        ("NumPy `a @ b`", run("job_matmul_numpy", log_dir, work=work, n=n, repeats=repeats)),
    ]
    best = max(r["gflops"] for _, r in results)
    rows = [[label, f"{r['gflops']:.0f}"] for label, r in results] + [["ceiling (best)", f"{best:.0f}"]]
    bfloat16 = None
    if native_bfloat16():
        bfloat16 = run("job_matmul_tf", log_dir, env=env_default, work=work, n=n, repeats=repeats,
                       dtype="bfloat16", tag="bfloat16")["gflops"]
        rows.append(["TensorFlow, bfloat16 (same shapes)", f"{bfloat16:.0f}"])
    print(f"\n### matrix product {n} x {n}, float32 unless said (best of {repeats} after a warm-up)\n")
    print(table(["what", "GFLOP/s"], rows), flush=True)
    return best, bfloat16


def dump_work_gflop(work, n_sentences, batch_size=64):
    """The arithmetic of bilm's dump of the first ``n_sentences`` (state_mode 'warm', batches of
    ``batch_size`` sorted by length within each window, as the dump makes them), in GFLOP: the
    LSTMs over every real position (begin/end included; ``bilm`` computes no padding) and the
    char CNN, highways and projection once per distinct token of each batch."""
    from inference import flops_per_position

    from bilm.core.batching import window_batches
    from bilm.embedding.embedder import WINDOW
    with open(work["options"]) as fin:
        options = json.load(fin)
    cnn = flops_per_position(options, lstm=False)
    lstm = flops_per_position(options) - cnn
    with open(os.path.join(work["dir"], f"first_{n_sentences}.txt")) as fin:
        lines = list(enumerate(line.split() for line in fin))
    total = 0
    for start in range(0, len(lines), WINDOW):
        for _, sentences in window_batches(lines[start:start + WINDOW], batch_size):
            total += lstm * sum(len(s) + 2 for s in sentences) + cnn * (len({w for s in sentences for w in s}) + 2)
    return total / 1e9


def work_bound_line(work, n_sentences, dump, bfloat16_gflops):
    """What bounds bilm's bfloat16 dump: its arithmetic at the CPU's bfloat16 product rate plus its set-up."""
    gflop = dump_work_gflop(work, n_sentences)
    label = BFLOAT16_LABEL
    whole, original = dump["whole"][label], dump["whole"].get(ORIGINAL_LABEL)
    setup = dump["setup"][SETUP_BFLOAT16]
    floor = setup + gflop / bfloat16_gflops
    line = (f"\nWhat bounds {short(label)} ({n_sentences} sentences): {gflop:,.0f} GFLOP (LSTMs over the real "
            f"positions, char CNN over each batch's distinct tokens), {gflop / (whole - setup):.0f} GFLOP/s between "
            f"its set-up ({setup:.2f} s, warm states kept) and its end ({whole:.2f} s); at the bfloat16 product rate "
            f"of {bfloat16_gflops:.0f} GFLOP/s the call could not take less than {floor:.2f} s")
    if original:
        line += f", {original / floor:.1f}x the original's {original:.1f} s"
    print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", help="checkout of https://github.com/allenai/bilm-tf (its bilm/ is run)")
    parser.add_argument("--quick", action="store_true", help="everything small: a smoke test, not a measurement")
    parser.add_argument("--sections", default="train,dump,ceiling",
                        help="comma-separated subset of train,dump,ceiling (default: all)")
    parser.add_argument("--train-batches", help="two batch counts, e.g. 25,100 (default; --quick: 5,10)")
    parser.add_argument("--heldout", metavar="BATCHES,SEEDS",
                        help="also the heldout section: bilm's float32 and bfloat16 training for BATCHES batches "
                             "with each of SEEDS seeds, held-out perplexity (e.g. 800,3; not timed)")
    parser.add_argument("--dump-sentences", help="two sentence counts, e.g. 100,300 (default; --quick: 30,60)")
    parser.add_argument("--allennlp", help="checkout of https://github.com/allenai/allennlp: adds its PyTorch ELMo "
                                           "to the dump comparison (needs PyTorch; see benchmarks/README.md)")
    parser.add_argument("--repeat", type=int,
                        help="repetitions of every training/dump job, the libraries alternating; each figure is the "
                             "median (default 3; --quick: 1)")
    parser.add_argument("--workdir", help="where to write data and logs (default: a new temporary directory)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    sys.path[:0] = [REPO, HERE]
    if args.original and not os.path.isfile(os.path.join(args.original, "bilm", "training.py")):
        parser.error(f"--original {args.original}: no bilm/training.py there; expected a checkout of bilm-tf")
    original = os.path.abspath(args.original) if args.original else None
    if args.allennlp and not os.path.isfile(os.path.join(args.allennlp, "allennlp", "modules", "elmo.py")):
        parser.error(f"--allennlp {args.allennlp}: no allennlp/modules/elmo.py there; expected a checkout of allennlp")
    if args.allennlp and importlib.util.find_spec("torch") is None:
        parser.error(f"--allennlp needs PyTorch in this environment: {ALLENNLP_INSTALL}")
    allennlp = os.path.abspath(args.allennlp) if args.allennlp else None
    repeat = (1 if args.quick else 3) if args.repeat is None else args.repeat
    if repeat < 1:
        parser.error(f"--repeat {repeat}: expected at least 1")

    train_sizes, dump_sizes = ((5, 10), (30, 60)) if args.quick else ((25, 100), (100, 300))
    if args.train_batches:
        train_sizes = tuple(int(n) for n in args.train_batches.split(","))
    if args.dump_sentences:
        dump_sizes = tuple(int(n) for n in args.dump_sentences.split(","))
    sections = set(args.sections.split(","))
    if args.heldout:
        sections.add("heldout")
    matmul_repeats = 3 if args.quick else 10
    workdir = args.workdir or tempfile.mkdtemp(prefix="bilm_vs_original_")
    os.makedirs(workdir, exist_ok=True)
    log_dir = os.path.join(workdir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    logger.info("writing data to %s", workdir)
    work = {"dir": workdir}
    os.environ["BILM_CACHE"] = os.path.join(workdir, "cache")  # the jobs' warm states: this run's own
    if sections & {"train", "heldout"}:
        work.update(write_training_data(workdir))
    if "dump" in sections:
        work.update(write_dump_data(workdir, dump_sizes))

    print("## bilm vs the original bilm-tf" + (" (--quick: a smoke test, not a measurement)" if args.quick else ""))
    print("\n" + machine_line())
    if original:
        print(f"Original: {original} (run through benchmarks/original_shim.py); bilm: {REPO}")
    else:
        print("Comparison with the original skipped: no --original given. To include it:\n"
              "    git clone https://github.com/allenai/bilm-tf /tmp/bilm-tf\n"
              "    python benchmarks/vs_original.py --original /tmp/bilm-tf")
    if "dump" in sections and not allennlp:
        print("AllenNLP's PyTorch ELMo skipped: no --allennlp given. To include it:\n"
              f"    {ALLENNLP_INSTALL}\n"
              "    git clone https://github.com/allenai/allennlp /tmp/allennlp\n"
              "    python benchmarks/vs_original.py --allennlp /tmp/allennlp")
    print(f"Each training or dump figure: one whole call in a fresh process, the median of {repeat} "
          f"repetition{'s' if repeat > 1 else ''} (rounds over all jobs, the libraries alternating within each "
          f"round). Each ratio: the median of the per-repetition ratios (a repetition's runs are neighbours in "
          f"time). Every run is listed.")
    sys.stdout.flush()
    dump = ceiling = bfloat16 = None
    if "train" in sections:
        training_section(work, original, train_sizes, log_dir, repeat)
    if "heldout" in sections:
        n_batches, seeds = (int(n) for n in args.heldout.split(","))
        heldout_section(work, n_batches, seeds, log_dir)
    if "dump" in sections:
        dump = dump_section(work, original, allennlp, dump_sizes, log_dir, repeat)
    if "ceiling" in sections:
        ceiling, bfloat16 = ceiling_section(work, 4096, matmul_repeats, log_dir)
    if dump and ceiling:
        from inference import FULL_OPTIONS, flops_per_position
        gflop = flops_per_position(FULL_OPTIONS) / 1e9

        def ceiling_of(label):
            return bfloat16 if "bfloat16" in label and bfloat16 else ceiling

        shares = "; ".join(f"{short(label)} {100 * tokens_per_s * gflop / ceiling_of(label):.0f}%"
                           for label, tokens_per_s in dump["steady"].items() if tokens_per_s)
        print(f"\nSteady dump rates as a share of the product ceiling of their type ({gflop:.3f} GFLOP per token "
              f"of the full-size model, at most {ceiling / gflop:,.0f} tokens/s in float32): {shares}")
    if dump and bfloat16:
        work_bound_line(work, dump_sizes[1], dump, bfloat16)
    print(f"\nLoad average at the end: {os.getloadavg()[0]:.2f}; data and child logs in {workdir}")


if __name__ == "__main__":
    main()
