"""Training across worker processes: the cost of the collectives, measured here and projected.

    python benchmarks/cluster.py [--steps 30] [--warmup 5] [--workers 1,2,3]

1. Measured, on this machine: the reference training configuration (``vs_original.py``'s:
   char CNN, LSTM 512/128, batch 32 x 20 per worker, 1,024 sampled negatives, 8,003 words)
   on 1, 2 and 3 local worker processes on 127.0.0.1 (each with its share of the cores):
   seconds per step, the cluster's tokens/s, and the time of the step's collectives alone
   (the same all-reduces and gathers on tensors of the gradients' shapes, no model).
2. Counted from the graph that ``bilm train`` builds: the bytes each worker sends per
   step, dense (all-reduced) and sparse (gathered softmax rows) apart, and what the
   sparse gradients would cost densified; for the reference configuration and for the
   original ELMo model (``ELMO_ORIGINAL``, 793,471-word vocabulary).
3. On paper: one epoch of the 1B Word Benchmark for the original model on 1, 8 and 32
   GPUs, from a GPU step time and a network bandwidth stated in the table.
"""
import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from vs_original import TOKENS_PER_BATCH, TRAIN_OPTIONS

REFERENCE = dict(TRAIN_OPTIONS, n_train_tokens=10 ** 9)

ONE_BILLION_WORD_TOKENS = 768_648_884  # the original's n_train_tokens (bin/train_elmo.py)
ORIGINAL_VOCABULARY = 793_471          # vocab-2016-09-10.txt
# The original's own run: 10 epochs in about two weeks on 3 GTX 1080s (bilm-tf issues #47, #55),
# i.e. about 1.2 s per step of 128 x 20 tokens on each GPU.
GTX_1080_STEP = 128 * 20 / (10 * ONE_BILLION_WORD_TOKENS / (14 * 86400) / 3)


def synthetic_batches(rng, n):
    """``n`` training batches of random 7-letter words and Zipf-distributed targets."""
    import numpy as np
    b, t, c = TRAIN_OPTIONS["batch_size"], TRAIN_OPTIONS["unroll_steps"], 50
    batches = []
    for _ in range(n):
        batch = {}
        for suffix in ("", "_reverse"):
            chars = np.full((b, t, c), 260, np.int32)
            chars[:, :, 0] = 258
            chars[:, :, 1:8] = rng.integers(97, 123, (b, t, 7))
            chars[:, :, 8] = 259
            batch["tokens_characters" + suffix] = chars
            batch["next_token_id" + suffix] = rng.zipf(1.3, (b, t)).clip(1, TRAIN_OPTIONS["n_tokens_vocab"] - 1)
        batches.append(batch)
    return batches


def exchanged(options):
    """The collectives of one training step as [(kind, shape, dtype)], and the softmax's size."""
    import tensorflow.compat.v1 as tf

    from bilm.training.cluster import Cluster, Collectives
    from bilm.training.graph import build_training_graph

    class Recorder(Collectives):
        """Builds no collective: records what each would exchange."""

        def mean(self, tensor):
            self.calls.append(("reduce", tensor.shape.as_list(), tensor.dtype.base_dtype.name))
            return tensor

        def gather(self, tensor):
            self.calls.append(("gather", tensor.shape.as_list(), tensor.dtype.base_dtype.name))
            return tensor

    recorder = Recorder(Cluster(("127.0.0.1:1", "127.0.0.1:2"), 0))
    recorder.calls = []
    with tf.Graph().as_default():
        build_training_graph(options, 1, recorder)
        softmax = sum(v.shape.num_elements() for v in tf.trainable_variables() if "/softmax/" in v.name)
    return recorder.calls, softmax


def nbytes(shape, dtype):
    size = 1
    for d in shape:
        size *= d
    return size * {"float32": 4, "int64": 8, "int32": 4}[dtype]


def sent_per_worker(calls, workers):
    """Bytes one worker sends per step with ring collectives: all-reduce 2 (W - 1) / W of the
    tensor, gather (W - 1) times its own part. -> (dense, sparse)."""
    dense = sum(nbytes(s, d) for k, s, d in calls if k == "reduce") * 2 * (workers - 1) / workers
    sparse = sum(nbytes(s, d) for k, s, d in calls if k == "gather") * (workers - 1)
    return dense, sparse


# --- measured: local worker processes ---------------------------------------------------

def worker(spec):
    """One worker: ``steps`` training steps (after ``warmup``), then ``steps`` of the collectives alone."""
    import numpy as np
    import tensorflow.compat.v1 as tf

    from bilm.core import sessions
    from bilm.training.cluster import Cluster, Collectives
    from bilm.training.graph import build_training_graph, feed
    workers, index = spec["workers"], spec["index"]
    config = sessions.config(n_cpu_devices=1, threads=max(1, (os.cpu_count() or 1) // len(workers)))
    cluster = Cluster.of(workers, index) if len(workers) > 1 else None
    server = cluster.start_server(config) if cluster else None
    with tf.Graph().as_default(), tf.device(cluster.device if cluster else "/cpu:0"):
        collectives = Collectives(cluster) if cluster else None
        graph = build_training_graph(REFERENCE, 1, collectives)
        probe = None
        if collectives is not None:
            calls, _ = exchanged(REFERENCE)
            probe = tf.group(*[(collectives.mean if kind == "reduce" else collectives.gather)(tf.zeros(shape, dtype))
                               for kind, shape, dtype in calls])
            broadcast = collectives.broadcast_from_chief(tf.global_variables())
        with tf.Session(server.target if server else "", config=config) as sess:
            sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
            if collectives is not None:
                sess.run(broadcast)
            batches = synthetic_batches(np.random.default_rng(index), 8)
            step = [graph["train_op"], graph["train_perplexity"]]
            for i in range(spec["warmup"]):
                sess.run(step, feed(graph["models"], batches[i % 8]))
            start = time.perf_counter()
            for i in range(spec["steps"]):
                sess.run(step, feed(graph["models"], batches[i % 8]))
            seconds = (time.perf_counter() - start) / spec["steps"]
            probe_seconds = None
            if probe is not None:
                sess.run(probe)
                start = time.perf_counter()
                for _ in range(spec["steps"]):
                    sess.run(probe)
                probe_seconds = (time.perf_counter() - start) / spec["steps"]
    return {"step": seconds, "collectives": probe_seconds}


def measure(n_workers, steps, warmup):
    from bilm.training.cluster import local_addresses
    addresses = local_addresses(n_workers)
    processes = [subprocess.Popen(
        [sys.executable, __file__, "--child", json.dumps({"workers": addresses, "index": k, "steps": steps,
                                                              "warmup": warmup})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(n_workers)]
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=1800)
            line = [x for x in out.splitlines() if x.startswith("RESULT ")]
            if not line:
                raise RuntimeError(err[-3000:])
            results.append(json.loads(line[-1][7:]))
    finally:
        for process in processes:
            process.kill()
    return results


def megabytes(n):
    return f"{n / 1e6:,.1f} MB"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(worker(json.loads(args.child))))
        return
    import tensorflow as tf

    from bilm.core.options import ELMO_ORIGINAL
    print(f"Machine: {os.cpu_count()} cores; TensorFlow {tf.__version__}; workers are processes on 127.0.0.1, "
          f"each with (cores / workers) threads; {TOKENS_PER_BATCH} tokens per worker per step.\n")

    reference, _ = exchanged(REFERENCE)
    print("| workers | s/step (slowest worker) | cluster tokens/s | collectives alone, s/step | "
          "sent per worker per step (dense + sparse) |\n|---|---|---|---|---|")
    for n in map(int, args.workers.split(",")):
        results = measure(n, args.steps, args.warmup)
        step = max(r["step"] for r in results)
        alone = "" if n == 1 else f"{max(r['collectives'] for r in results):.3f}"
        dense, sparse = sent_per_worker(reference, n)
        print(f"| {n} | {step:.3f} | {n * TOKENS_PER_BATCH / step:,.0f} | {alone} | "
              f"{megabytes(dense)} + {megabytes(sparse)} |")

    original = dict(ELMO_ORIGINAL, n_tokens_vocab=ORIGINAL_VOCABULARY, n_train_tokens=ONE_BILLION_WORD_TOKENS)
    print("\nBytes per step, counted from the training graph (ring collectives; W workers):\n")
    print("| model | dense gradients (all-reduced) | sparse softmax rows (gathered, per worker) | "
          "the softmax densified |\n|---|---|---|---|")
    for name, options in (("reference configuration", REFERENCE), ("original ELMo, 1 GPU per worker", original)):
        calls, softmax = exchanged(options)
        dense = sum(nbytes(s, d) for k, s, d in calls if k == "reduce")
        sparse = sum(nbytes(s, d) for k, s, d in calls if k == "gather")
        print(f"| {name} | {megabytes(dense)} (x 2 (W-1)/W sent) | {megabytes(sparse)} (x (W-1) sent) | "
              f"{megabytes(softmax * 4)} (x 2 (W-1)/W sent) |")

    # On paper: the original model, one epoch of the 1B Word Benchmark.
    calls, _ = exchanged(original)
    dense = sum(nbytes(s, d) for k, s, d in calls if k == "reduce")
    sparse_per_gpu = sum(nbytes(s, d) for k, s, d in calls if k == "gather")
    tokens_per_gpu_step = ELMO_ORIGINAL["batch_size"] * ELMO_ORIGINAL["unroll_steps"]
    print(f"\nOne epoch of the 1B Word Benchmark ({ONE_BILLION_WORD_TOKENS:,} tokens), original model, "
          f"{tokens_per_gpu_step} tokens per GPU per step; GPU step {GTX_1080_STEP:.2f} s (GTX 1080, from the "
          f"original's two weeks for 10 epochs on 3 GPUs) or 0.30 s (assumed for a current GPU); the GPUs of "
          f"a machine are towers (gradients averaged in the machine), machines exchange over the network; "
          f"no overlap of communication and computation assumed:\n")
    print("| GPUs | machines x GPUs | network | exchange s/step | epoch, GTX 1080 step | epoch, 0.30 s step |\n"
          "|---|---|---|---|---|---|")
    for gpus, machines, network, bandwidth in ((1, 1, "-", None), (8, 1, "-", None),
                                               (32, 4, "10 Gb/s Ethernet", 1.25e9),
                                               (32, 4, "100 Gb/s InfiniBand", 12.5e9)):
        per_machine = gpus // machines
        steps = ONE_BILLION_WORD_TOKENS / (tokens_per_gpu_step * gpus)
        exchange = 0.0
        if machines > 1:
            sent_dense = dense * 2 * (machines - 1) / machines
            sent_sparse = sparse_per_gpu * per_machine * (machines - 1)
            exchange = (sent_dense + sent_sparse) / bandwidth
        hours = [steps * (step + exchange) / 3600 for step in (GTX_1080_STEP, 0.30)]
        print(f"| {gpus} | {machines} x {per_machine} | {network} | {exchange:.2f} | {hours[0]:,.1f} h | "
              f"{hours[1]:,.1f} h |")


if __name__ == "__main__":
    main()
