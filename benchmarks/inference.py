"""Inference and precomputation speed of the full-size ELMo architecture, new path vs straightforward path.

    python benchmarks/inference.py [--sentences 2000] [--quick]

Builds the original ELMo architecture (char embedding 16, filters [[1,32],[2,32],[3,64],[4,128],
[5,256],[6,512],[7,1024]], 2 highway layers, LSTM 4096 projected to 512, 2 layers, clips 3,
skip connections) with seeded random weights, and a seeded synthetic corpus whose sentence
lengths are like news text (mean about 27 tokens, 1 to 100). Each measurement runs in its
own process so its peak resident memory is its own. Prints a Markdown table.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from bilm.core.options import ELMO_ORIGINAL, N_CHARACTERS_INFERENCE  # noqa: E402

# The original ELMo model, for inference.
FULL_OPTIONS = {"char_cnn": dict(ELMO_ORIGINAL["char_cnn"], n_characters=N_CHARACTERS_INFERENCE),
                "lstm": ELMO_ORIGINAL["lstm"]}


def flops_per_position(options, lstm=True):
    """Multiply-adds x 2 of one token position through the char CNN, highways, projection (and LSTMs)."""
    cnn, lstm_options = options["char_cnn"], options["lstm"]
    e, c = cnn["embedding"]["dim"], cnn["max_characters_per_token"]
    f = sum(n for _, n in cnn["filters"])
    p, d = lstm_options["projection_dim"], lstm_options["dim"]
    total = sum(2 * w * e * n * (c - w + 1) for w, n in cnn["filters"])
    total += cnn["n_highway"] * 2 * 2 * f * f + 2 * f * p
    if lstm:
        total += 2 * lstm_options["n_layers"] * (2 * (p + p) * 4 * d + 2 * d * p)
    return total


def write_model(directory, seed=0):
    from bilm.core.weights import expected_weight_shapes

    rng = np.random.default_rng(seed)
    options_file, weight_file = os.path.join(directory, "options.json"), os.path.join(directory, "weights.hdf5")
    with open(options_file, "w") as fout:
        json.dump(FULL_OPTIONS, fout)
    with h5py.File(weight_file, "w") as fout:
        for name, shape in expected_weight_shapes(FULL_OPTIONS).items():
            fan_in = shape[0] if len(shape) == 2 else (np.prod(shape[:-1]) if len(shape) == 4 else 16)
            fout.create_dataset(name, data=(rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))
    return options_file, weight_file


def synthetic_words(rng, n):
    """n distinct random lower-case words of 1 to 14 letters."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = {}
    while len(words) < n:
        words.setdefault("".join(rng.choice(letters, size=rng.integers(1, 15))), None)
    return list(words)


def write_corpus(directory, n_sentences, seed=0):
    """Sentences of Zipf-distributed random words; lengths from a gamma, mean ~27, in [1, 100]."""
    rng = np.random.default_rng(seed)
    words = synthetic_words(rng, 30000)
    lengths = np.clip(np.round(rng.gamma(2.5, 27 / 2.5, n_sentences)), 1, 100).astype(int)
    path = os.path.join(directory, "corpus.txt")
    with open(path, "w") as fout:
        for n in lengths:
            ranks = np.minimum(rng.zipf(1.2, n), len(words)) - 1
            fout.write(" ".join(words[r] for r in ranks) + "\n")
    return path


def read_corpus(path, limit=None):
    with open(path) as fin:
        return [line.split() for line in fin][:limit]


# --- measurements, each run in a child process -------------------------------------------

def measure_graph(work, batch_size, n_sentences, token_input=False):
    """BidirectionalLanguageModel in file order (the original's use): stateful, batches of batch_size."""
    import tensorflow.compat.v1 as tf

    from bilm import Batcher, BidirectionalLanguageModel, TokenBatcher
    sentences = read_corpus(work["corpus"], n_sentences)
    if token_input:
        batcher = TokenBatcher(work["vocab"])
        shape = (None, None)
        kwargs = {"use_character_inputs": False, "embedding_weight_file": work["token_embeddings"]}
    else:
        batcher, shape, kwargs = Batcher(work["vocab"], 50), (None, None, 50), {}
    batches = [batcher.batch_sentences(sentences[i:i + batch_size]) for i in range(0, len(sentences), batch_size)]
    with tf.Graph().as_default():
        ids = tf.placeholder(tf.int32, shape)
        ops = BidirectionalLanguageModel(work["options"], work["weights"], max_batch_size=max(batch_size, 1),
                                         **kwargs)(ids)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(ops["lm_embeddings"], {ids: batches[0]})  # warm-up
            start = time.perf_counter()
            for batch in batches:
                sess.run(ops["lm_embeddings"], {ids: batch})
            elapsed = time.perf_counter() - start
    real = sum(len(s) for s in sentences)
    positions = sum(b.shape[0] * b.shape[1] for b in batches)  # with begin/end and padding
    return {"seconds": elapsed, "tokens": real, "positions": positions}


def _first_lines(source, n, directory):
    """A file of the first n lines of ``source``, and a fresh output path beside it."""
    path = os.path.join(directory, f"first_{n}_{os.path.basename(source)}")
    with open(source) as fin, open(path, "w") as fout:
        fout.writelines(line for _, line in zip(range(n), fin))
    return path, os.path.join(directory, f"out_{time.time()}.hdf5")


def _steady(run_job, n_small, n_large):
    """Time run_job(n) for a small and a large n; the difference excludes the set-up both pay
    (graph building, weight loading). Returns the large run's figures with that time."""
    small, large = run_job(n_small), run_job(n_large)
    return {"seconds": large["seconds"] - small["seconds"], "tokens": large["tokens"] - small["tokens"],
            "with_setup_seconds": large["seconds"]}


def measure_dump(work, mode, n_sentences):
    """dump_bilm_embeddings of the first n_sentences of the corpus (set-up excluded)."""
    from bilm.precompute import dump_bilm_embeddings

    def job(n):
        dataset, out = _first_lines(work["corpus"], n, work["dir"])
        start = time.perf_counter()
        dump_bilm_embeddings(work["vocab"], dataset, work["options"], work["weights"], out, state_mode=mode)
        return {"seconds": time.perf_counter() - start, "tokens": sum(len(s) for s in read_corpus(dataset))}

    return _steady(job, max(n_sentences // 20, 2), n_sentences)


def measure_token_dump(work, one_at_a_time, n_tokens):
    """dump_token_embeddings of the first n_tokens of the token vocabulary (set-up excluded)."""
    import bilm.embedding.dumps as precompute
    if one_at_a_time:  # the straightforward path: one token per session call
        precompute.TOKEN_CHUNK = 1

    def job(n):
        vocab, out = _first_lines(work["token_vocab"], n, work["dir"])
        start = time.perf_counter()
        precompute.dump_token_embeddings(vocab, work["options"], work["weights"], out)
        return {"seconds": time.perf_counter() - start, "tokens": n}

    return _steady(job, max(n_tokens // 20, 10), n_tokens)


def measure_matmul(n=4096, repeats=10):
    import tensorflow.compat.v1 as tf
    with tf.Graph().as_default():
        a = tf.Variable(tf.random.normal((n, n)))
        b = tf.Variable(tf.random.normal((n, n)))
        product = tf.reduce_sum(tf.matmul(a, b))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(product)
            start = time.perf_counter()
            for _ in range(repeats):
                sess.run(product)
            elapsed = time.perf_counter() - start
    return {"gflops": 2 * n ** 3 * repeats / elapsed / 1e9}


def child(name, work, kwargs):
    result = globals()[name](work, **kwargs) if name != "measure_matmul" else measure_matmul(**kwargs)
    result["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print("RESULT " + json.dumps(result))


def run(name, work, **kwargs):
    output = subprocess.run([sys.executable, __file__, "--child", json.dumps([name, work, kwargs])],
                            capture_output=True, text=True, check=False)
    for line in output.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{name} failed:\n{output.stderr[-3000:]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="fewer sentences everywhere (a smoke test)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*json.loads(args.child))

    scale = 0.1 if args.quick else 1.0
    tmp = tempfile.mkdtemp(prefix="bilm_bench_")
    options_file, weight_file = write_model(tmp)
    corpus = write_corpus(tmp, args.sentences)
    from bilm.core.vocabulary import build_vocabulary, count_tokens, write_vocabulary
    vocab = os.path.join(tmp, "vocab.txt")
    write_vocabulary(build_vocabulary(count_tokens([corpus])[0]), vocab)
    work = {"dir": tmp, "options": options_file, "weights": weight_file, "corpus": corpus, "vocab": vocab}
    flops = flops_per_position(FULL_OPTIONS)
    cnn_flops = flops_per_position(FULL_OPTIONS, lstm=False)
    peak = run("measure_matmul", work)["gflops"]
    n_vocab = sum(1 for _ in open(vocab))
    print(f"full-size model: {flops / 1e9:.3f} GFLOP per position ({cnn_flops / 1e9:.3f} in the char CNN); "
          f"plain float32 matmul: {peak:.0f} GFLOP/s "
          f"(ceiling {peak * 1e9 / flops:.0f} positions/s); corpus {args.sentences} sentences, vocabulary {n_vocab}\n")

    rows = []

    def row(what, result, baseline=None):
        rate = result["tokens"] / result["seconds"]
        cells = [what, f"{rate:,.0f}"]
        real = result["tokens"] * flops / result["seconds"] / 1e9
        if "positions" in result:
            achieved = result["positions"] * flops / result["seconds"] / 1e9
            cells += [f"{result['positions'] / result['tokens']:.2f}", f"{100 * achieved / peak:.0f}%"]
        else:
            cells += ["", ""]
        if "dump_token" in what:  # only the char CNN runs
            real = result["tokens"] * cnn_flops / result["seconds"] / 1e9
        cells.append(f"{100 * real / peak:.0f}%")
        cells += [f"{result['peak_gb']:.2f}", f"{rate / baseline:.1f}x" if baseline else ""]
        rows.append("| " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
        return rate

    print("| what | tokens/s | positions/token | matmul rate (computed) | matmul rate (real tokens) "
          "| peak RSS GB | speed-up |\n|---|---|---|---|---|---|---|", flush=True)
    n = args.sentences
    for batch_size in (1, 32, 64, 128):
        count = max(int((16 if batch_size == 1 else 4 * batch_size) * scale), batch_size)
        row(f"char input, batch {batch_size}, file order, stateful", run("measure_graph", work, batch_size=batch_size,
                                                                       n_sentences=count))
    grouped = run("measure_dump", work, mode="warm", n_sentences=max(int(n * scale), 64))
    base_rate = row("dump_bilm_embeddings, sentence at a time (stateful)",
                    run("measure_dump", work, mode="stateful", n_sentences=max(int(300 * scale), 10)))
    row(f"dump_bilm_embeddings, batched by length (warm), {max(int(n * scale), 64)} sentences", grouped, base_rate)

    token_embeddings_file = os.path.join(tmp, "token_embeddings.hdf5")
    from bilm import dump_token_embeddings
    dump_token_embeddings(vocab, options_file, weight_file, token_embeddings_file)
    work["token_embeddings"] = token_embeddings_file
    row("cached token input, batch 64, file order, stateful",
        run("measure_graph", work, batch_size=64, n_sentences=int(256 * scale) or 64, token_input=True))

    n_tokens = 20000
    work["token_vocab"] = os.path.join(tmp, "token_vocab.txt")
    write_vocabulary(["<S>", "</S>", "<UNK>"] + synthetic_words(np.random.default_rng(1), n_tokens - 3),
                     work["token_vocab"])
    slow = run("measure_token_dump", work, one_at_a_time=True, n_tokens=max(int(4000 * scale), 300))
    slow_rate = row("dump_token_embeddings, token at a time", slow)
    row(f"dump_token_embeddings, chunks of 512, {n_tokens} tokens", run("measure_token_dump", work,
                                                                        one_at_a_time=False, n_tokens=n_tokens),
        slow_rate)


if __name__ == "__main__":
    main()
