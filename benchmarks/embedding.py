"""Embedding at scale with the full-size model: devices, time outside the model, precisions, output sizes.

    python benchmarks/embedding.py [--sentences 600] [--quick]

Builds the original ELMo architecture with seeded random weights (as
benchmarks/inference.py) and a seeded news-like corpus, then measures, each job in its
own process:

1. ``dump_bilm_embeddings`` on one process against two worker processes sharing the
   cores (``devices=["cpu", "cpu"]``): tokens/s (whole call) and peak RSS;
2. the share of the dump's wall time spent outside TensorFlow's session runs (reading,
   character ids, writing HDF5), with the character ids made in a background thread
   (as ``bilm`` does) and in the main thread (the straightforward way);
3. agreement of the reduced precisions with float32 per layer (mean and worst cosine,
   largest absolute difference), on this model and on the shipped default model;
4. bytes per token of each output form (layers, pool, dtype), and what HDF5's gzip
   and lzf filters make of them (size and read time).
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
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import h5py  # noqa: E402
import numpy as np  # noqa: E402


def job_dump(work, devices, prefetch=True, n=None):
    import tensorflow.compat.v1 as tf

    import bilm.embedding.dumps as dumps
    import bilm.embedding.job
    if not prefetch:  # the straightforward way: every step in the main thread
        bilm.embedding.job.Prefetch = lambda iterable: _Inline(iterable)
    runs, first_batch = [], []  # (start, end) of every session run; when the first batch was written
    run = tf.Session.run

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return run(self, *args, **kwargs)
        finally:
            runs.append((start, time.perf_counter()))

    def note_first_batch(n_sentences):
        if not first_batch:
            first_batch.append(time.perf_counter())

    tf.Session.run = timed
    out = tempfile.mktemp(suffix=".hdf5", dir=work["dir"])
    start = time.perf_counter()
    dumps.dump_bilm_embeddings(None, work["corpus"], work["options"], work["weights"], out,
                               devices=devices if devices else None, progress=None if devices else note_first_batch)
    end = time.perf_counter()
    with open(work["corpus"]) as fin:
        tokens = sum(len(line.split()) for line in fin)
    steady = {}
    if first_batch:  # after set-up (graph, weights, warm-up) and the first batch: the job's steady state
        t0 = first_batch[0]
        steady = {"steady_seconds": end - t0, "steady_inside": sum(b - max(a, t0) for a, b in runs if b > t0)}
    del bilm.core.prefetch
    return {"seconds": end - start, "tokens": tokens, "inside": sum(b - a for a, b in runs), "outfile": out,
            **steady}


class _Inline:
    def __init__(self, iterable):
        self.iterator = iter(iterable)

    def __iter__(self):
        return self.iterator

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def job_precision(work, options, weights, n_sentences):
    from bilm.embedding.embedder import ElmoEmbedder
    with open(work["corpus"]) as fin:
        sentences = [line.split() for line in fin][:n_sentences]
    with ElmoEmbedder(options, weights, state_mode="zero") as embedder:
        exact = np.concatenate(embedder.embed_sentences(sentences), axis=1)
    rows = {}
    for precision in ("tf32", "bfloat16", "float16"):
        with ElmoEmbedder(options, weights, state_mode="zero", precision=precision) as embedder:
            got = np.concatenate(embedder.embed_sentences(sentences), axis=1)
        cosines = (exact * got).sum(-1) / (np.linalg.norm(exact, axis=-1) * np.linalg.norm(got, axis=-1))
        rows[precision] = {"mean": cosines.mean(axis=1).tolist(), "worst": cosines.min(axis=1).tolist(),
                           "max_abs": np.abs(exact - got).max(axis=(1, 2)).tolist()}
    return rows


def job_sizes(work):
    from bilm.embedding.dumps import dump_bilm_embeddings
    with open(work["corpus"]) as fin:
        tokens = sum(len(line.split()) for line in fin)
    rows, files = [], {}
    forms = [("all", None, "float32"), ("all", None, "float16"), ("top", None, "float32"), ("average", None, "float16"),
             ("all", "mean", "float32"), ("average", "mean", "float16")]
    for layers, pool, dtype in forms:
        out = tempfile.mktemp(suffix=".hdf5", dir=work["dir"])
        dump_bilm_embeddings(None, work["corpus"], work["options"], work["weights"], out, layers=layers, pool=pool,
                             dtype=dtype, state_mode="zero")
        files[layers, pool, dtype] = out
        row = {"form": f"layers={layers}, pool={pool or '-'}, dtype={dtype}", "bytes": os.path.getsize(out)}
        for compression in ("gzip", "lzf"):
            packed = out + f".{compression}.hdf5"
            with h5py.File(out, "r") as fin, h5py.File(packed, "w") as fout:
                for key in fin:
                    fout.create_dataset(key, data=fin[key][...], compression=compression,
                                        chunks=True if fin[key].ndim else None)
            start = time.perf_counter()
            with h5py.File(packed, "r") as fin:
                for key in fin:
                    fin[key][...]
            row[compression] = {"bytes": os.path.getsize(packed), "read_seconds": time.perf_counter() - start}
        start = time.perf_counter()
        with h5py.File(out, "r") as fin:
            for key in fin:
                fin[key][...]
        row["read_seconds"] = time.perf_counter() - start
        rows.append(row)
    return {"tokens": tokens, "rows": rows, "float16_error": _float16_error(*(files["all", None, dtype]
                                                                              for dtype in ("float32", "float16")))}


def _float16_error(float32_file, float16_file):
    """Largest absolute and relative difference of the float16 all-layer output from the float32 one."""
    worst_abs = worst_rel = 0.0
    with h5py.File(float32_file, "r") as exact, h5py.File(float16_file, "r") as half:
        for key in exact:
            if key == "sentence_to_index":
                continue
            want, got = exact[key][...], half[key][...].astype(np.float32)
            worst_abs = max(worst_abs, float(np.abs(got - want).max()))
            worst_rel = max(worst_rel, float((np.abs(got - want) / np.maximum(np.abs(want), 1e-3)).max()))
    return {"max_abs": worst_abs, "max_rel": worst_rel}


def job_shapes(work, steps=200):
    """GFLOP/s of the full-size model's products at their shapes in a dump (batch 64), each
    product feeding the next in a loop of ``steps`` (as the LSTM's recurrence does), and of
    the 4096 x 4096 reference product."""
    import tensorflow.compat.v1 as tf
    shapes = {"4096 x 4096 @ 4096 x 4096 (the ceiling's product)": (4096, 4096, 4096),
              "64 x 512 @ 512 x 16384 (recurrent gates, one step)": (64, 512, 16384),
              "512 x 512 @ 512 x 16384 (input gates, a block of 8 steps)": (512, 512, 16384),
              "64 x 4096 @ 4096 x 512 (projection, one step)": (64, 4096, 512)}
    rates = {}
    for label, (m, k, n) in shapes.items():
        repeats = 10 if m == 4096 else steps
        with tf.Graph().as_default():
            weights = tf.Variable(tf.random.normal((k, n), stddev=k ** -0.5))
            first = tf.Variable(tf.random.normal((m, k)))

            def step(i, x):
                y = tf.matmul(x, weights)
                return i + 1, tf.tanh(y[:, :k] if n >= k else tf.tile(y, [1, k // n]))

            _, last = tf.while_loop(lambda i, x: i < repeats, step, [tf.constant(0), first])
            total = tf.reduce_sum(last)
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                sess.run(total)
                start = time.perf_counter()
                sess.run(total)
                rates[label] = 2 * m * k * n * repeats / (time.perf_counter() - start) / 1e9
    return {"rates": rates}


def child(spec):
    name, kwargs = json.loads(spec)
    result = globals()[name](**kwargs)
    result = result if isinstance(result, dict) else {"result": result}
    result["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    result["peak_children_gb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
    print("RESULT " + json.dumps(result))


def run(name, **kwargs):
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps([name, kwargs])], capture_output=True,
                         text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=600)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    from inference import write_corpus, write_model
    from bilm.models import default_model_files
    n = 40 if args.quick else args.sentences
    directory = tempfile.mkdtemp(prefix="bilm_embedding_")
    options, weights = write_model(directory)
    corpus = write_corpus(directory, n)
    work = {"dir": directory, "options": options, "weights": weights, "corpus": corpus}
    print(f"## Embedding at scale (full-size model, seeded random weights; {n} sentences)\n")

    one = run("job_dump", work=work, devices=None)
    two = run("job_dump", work=work, devices=["cpu", "cpu"])
    print("| processes | tokens/s (whole call) | peak RSS GB (parent; largest child) |\n|---|---|---|")
    print(f"| 1 | {one['tokens'] / one['seconds']:,.0f} | {one['peak_gb']:.2f} |")
    print(f"| 2 (devices cpu:2) | {two['tokens'] / two['seconds']:,.0f} | {two['peak_gb']:.2f}; "
          f"{two['peak_children_gb']:.2f} |")

    inline = run("job_dump", work=work, devices=None, prefetch=False)
    print("\n| character ids made | wall s | inside session runs s | outside share (whole call) "
          "| outside share (after set-up and the first batch) |\n|---|---|---|---|---|")
    for label, r in (("in the main thread (straightforward)", inline), ("in a background thread (bilm)", one)):
        print(f"| {label} | {r['seconds']:.2f} | {r['inside']:.2f} | {1 - r['inside'] / r['seconds']:.1%} | "
              f"{1 - r['steady_inside'] / r['steady_seconds']:.1%} |")

    print("\n| model | precision | mean cosine per layer | worst cosine per layer | max abs difference per layer |")
    print("|---|---|---|---|---|")
    shipped = default_model_files()
    for label, (o, w) in (("full-size (random)", (options, weights)), ("shipped default", shipped[:2])):
        rows = run("job_precision", work=work, options=o, weights=w, n_sentences=min(n, 200))
        for precision, row in rows.items():
            if precision == "peak_gb" or precision == "peak_children_gb":
                continue
            fmt = lambda values, k=4: ", ".join(f"{v:.{k}f}" for v in values)  # noqa: E731
            print(f"| {label} | {precision} | {fmt(row['mean'], 5)} | {fmt(row['worst'])} | {fmt(row['max_abs'])} |")

    shapes = run("job_shapes", work=work)["rates"]
    print("\n| float32 product, in a loop as the recurrence | GFLOP/s | share of the first row |\n|---|---|---|")
    reference = next(iter(shapes.values()))
    for label, rate in shapes.items():
        print(f"| {label} | {rate:.0f} | {rate / reference:.0%} |")

    sizes = run("job_sizes", work=work)
    print("\n| output form | bytes/token | gzip bytes/token | lzf bytes/token | read s (plain; gzip; lzf) |")
    print("|---|---|---|---|---|")
    for row in sizes["rows"]:
        t = sizes["tokens"]
        print(f"| {row['form']} | {row['bytes'] / t:,.0f} | {row['gzip']['bytes'] / t:,.0f} | "
              f"{row['lzf']['bytes'] / t:,.0f} | {row['read_seconds']:.2f}; {row['gzip']['read_seconds']:.2f}; "
              f"{row['lzf']['read_seconds']:.2f} |")
    error = sizes["float16_error"]
    print(f"\ndtype float16 against float32 (all layers): largest absolute difference {error['max_abs']:.2e}, "
          f"largest relative difference {error['max_rel']:.2e} (relative to |value|, counted as at least 1e-3)")


if __name__ == "__main__":
    main()
