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

    import bilm.dumps as dumps
    import bilm.prefetch
    if not prefetch:  # the straightforward way: every step in the main thread
        dumps.Prefetch = lambda iterable: _Inline(iterable)
    inside = [0.0]
    run = tf.Session.run

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return run(self, *args, **kwargs)
        finally:
            inside[0] += time.perf_counter() - start

    tf.Session.run = timed
    out = tempfile.mktemp(suffix=".hdf5", dir=work["dir"])
    start = time.perf_counter()
    dumps.dump_bilm_embeddings(None, work["corpus"], work["options"], work["weights"], out,
                               devices=devices if devices else None)
    seconds = time.perf_counter() - start
    with open(work["corpus"]) as fin:
        tokens = sum(len(line.split()) for line in fin)
    del bilm.prefetch
    return {"seconds": seconds, "tokens": tokens, "inside": inside[0], "outfile": out}


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
    from bilm.embedder import ElmoEmbedder
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
    from bilm.dumps import dump_bilm_embeddings
    with open(work["corpus"]) as fin:
        tokens = sum(len(line.split()) for line in fin)
    rows = []
    forms = [("all", None, "float32"), ("all", None, "float16"), ("top", None, "float32"), ("average", None, "float16"),
             ("all", "mean", "float32"), ("average", "mean", "float16")]
    for layers, pool, dtype in forms:
        out = tempfile.mktemp(suffix=".hdf5", dir=work["dir"])
        dump_bilm_embeddings(None, work["corpus"], work["options"], work["weights"], out, layers=layers, pool=pool,
                             dtype=dtype, state_mode="zero")
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
    return {"tokens": tokens, "rows": rows}


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
    print("\n| character ids made | wall s | inside session runs s | outside share |\n|---|---|---|---|")
    for label, r in (("in the main thread (straightforward)", inline), ("in a background thread (bilm)", one)):
        print(f"| {label} | {r['seconds']:.2f} | {r['inside']:.2f} | {1 - r['inside'] / r['seconds']:.1%} |")

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

    sizes = run("job_sizes", work=work)
    print("\n| output form | bytes/token | gzip bytes/token | lzf bytes/token | read s (plain; gzip; lzf) |")
    print("|---|---|---|---|---|")
    for row in sizes["rows"]:
        t = sizes["tokens"]
        print(f"| {row['form']} | {row['bytes'] / t:,.0f} | {row['gzip']['bytes'] / t:,.0f} | "
              f"{row['lzf']['bytes'] / t:,.0f} | {row['read_seconds']:.2f}; {row['gzip']['read_seconds']:.2f}; "
              f"{row['lzf']['read_seconds']:.2f} |")


if __name__ == "__main__":
    main()
