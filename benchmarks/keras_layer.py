"""The Keras layer (TF2: eager and tf.function) against the graph API, full-size model, same sentences.

    python benchmarks/keras_layer.py [--sentences 256] [--batch 32]

Seeded random weights of the original ELMo architecture (as benchmarks/inference.py),
a seeded news-like corpus; each path runs the same batches of character ids in its own
process (``state_mode="zero"``) and reports tokens/s after a warm-up batch, and peak RSS.
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


def batches(corpus, n, size):
    from bilm import Batcher
    with open(corpus) as fin:
        sentences = [line.split() for line in fin][:n]
    batcher = Batcher(None, 50)
    return [(batcher.batch_sentences(sentences[k:k + size]), sum(map(len, sentences[k:k + size])))
            for k in range(0, len(sentences), size)]


def job(path, options, weights, corpus, n, size):
    import tensorflow as tf
    work = batches(corpus, n, size)
    if path == "graph":
        from bilm import BidirectionalLanguageModel
        graph = tf.Graph()
        with graph.as_default():
            placeholder = tf.compat.v1.placeholder(tf.int32, (None, None, 50))
            out = BidirectionalLanguageModel(options, weights, state_mode="zero")(placeholder)["lm_embeddings"]
            sess = tf.compat.v1.Session()
            sess.run(tf.compat.v1.global_variables_initializer())
        run = lambda x: sess.run(out, {placeholder: x})  # noqa: E731
    else:
        from bilm.keras import ELMo
        layer = ELMo(None, options, weights, inputs="char_ids", output="all", state_mode="zero")
        run = layer if path == "eager" else tf.function(layer, reduce_retracing=True)
    run(work[0][0])  # warm-up (tracing, graph optimisation)
    start = time.perf_counter()
    for ids, _ in work:
        result = run(ids)
        getattr(result, "numpy", lambda: result)()
    seconds = time.perf_counter() - start
    return {"tokens": sum(t for _, t in work), "seconds": seconds,
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(job(**json.loads(args.child))))
        return
    from inference import write_corpus, write_model
    directory = tempfile.mkdtemp(prefix="bilm_keras_")
    options, weights = write_model(directory)
    corpus = write_corpus(directory, args.sentences)
    print("| path | tokens/s | peak RSS GB |\n|---|---|---|")
    for path, label in (("graph", "graph API (BidirectionalLanguageModel, session)"),
                        ("function", "Keras layer in tf.function"), ("eager", "Keras layer, eager")):
        spec = dict(path=path, options=options, weights=weights, corpus=corpus, n=args.sentences, size=args.batch)
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if not line:
            raise RuntimeError(out.stderr[-3000:])
        r = json.loads(line[-1][7:])
        print(f"| {label} | {r['tokens'] / r['seconds']:,.0f} | {r['peak_gb']:.2f} |")


if __name__ == "__main__":
    main()
