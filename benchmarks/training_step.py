"""What bounds bilm's training step: where one step's time goes, at two configurations' shapes.

    python benchmarks/training_step.py [--configs reference,elmo] [--steps 5] [--repeat 3]

For each configuration and precision (float32; bfloat16 too where the CPU computes it
natively) the script builds bilm's training graph (one tower), runs a few warm-up steps
on synthetic batches, then prints:

- float32: the step time with bilm's session (the two directions side by side, each
  operation on cores // 2 threads) against TensorFlow's default threads (every operation
  on all the cores), ``--repeat`` alternating runs, medians;
- the step time (median of ``--steps``) and tokens/s;
- one traced step's operations by type: time summed over operations (operations that run
  at the same time both count, so the shares, not the sum, say where the time goes);
- the matrix products and convolutions: their arithmetic per step (counted from the
  traced shapes), the rate they reach (over their own time, and over the whole step)
  against the machine's 4096 x 4096 product rate on every core (measured in its own process).

Configurations: ``reference`` is ``benchmarks/vs_original.py``'s (char CNN
[[1,32],[2,32],[3,64],[4,128]], LSTM 512 projected to 128, batch 32 x 20, 1,024 sampled
negatives); ``elmo`` is the original ELMo's (LSTM 4096 projected to 512, 2,048 filters,
batch 128 x 20, 8,192 negatives) with a 100,000-word softmax (the sampled softmax's
arithmetic does not depend on the vocabulary; its memory does). Batches: 5,000 random
character "words" drawn with Zipf frequencies, so the char CNN's de-duplication sees
realistic repetition. Each configuration runs in its own child process.
"""
import argparse
import collections
import copy
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

PRODUCTS = ("MatMul", "BatchMatMul", "Conv2D")  # op types (oneDNN's names contain them)


def options_of(name):
    from vs_original import TOKENS_PER_BATCH, TRAIN_OPTIONS

    from bilm.core.options import ELMO_ORIGINAL
    if name == "reference":
        return dict(TRAIN_OPTIONS, n_train_tokens=100 * TOKENS_PER_BATCH)
    options = copy.deepcopy(ELMO_ORIGINAL)
    options.update(n_tokens_vocab=100_000, n_train_tokens=10 ** 6)
    return options


def synthetic_batches(options, seed=0):
    import numpy as np
    rng = np.random.RandomState(seed)
    batch, steps, chars = options["batch_size"], options["unroll_steps"], 50
    words = rng.randint(1, 260, (5000, chars)).astype(np.int32)
    while True:
        ids = np.minimum(rng.zipf(1.3, (batch, steps)), 5000) - 1
        yield {"tokens_characters": words[ids], "tokens_characters_reverse": words[ids[:, ::-1]],
               "next_token_id": rng.randint(0, options["n_tokens_vocab"], (batch, steps)).astype(np.int32),
               "next_token_id_reverse": rng.randint(0, options["n_tokens_vocab"], (batch, steps)).astype(np.int32)}


def product_flops(graph, node):
    """2 M K N of a traced matrix product or forward convolution (its output shape traced, K from the
    graph); None for the convolutions' gradients."""
    op = graph.get_operation_by_name(node.node_name)
    out = [d.size for d in node.output[0].tensor_description.shape.dim]
    if "Conv2D" in op.type and "Backprop" not in op.type:  # (1, N, L, F) x (1, w, E, F)
        kernel = op.inputs[1].shape.as_list()
        return 2 * out[1] * out[2] * out[3] * kernel[1] * kernel[2]
    if "Backprop" in op.type:  # not counted: their time is reported apart
        return None
    a, b = op.inputs[0].shape.as_list(), op.inputs[1].shape.as_list()
    transpose_a = op.get_attr("transpose_a") if "transpose_a" in op.node_def.attr else op.get_attr("adj_x")
    k = a[-2] if transpose_a else a[-1]
    if k is None:
        k = b[-1] if (op.get_attr("transpose_b") if "transpose_b" in op.node_def.attr else op.get_attr("adj_y")) \
            else b[-2]
    return 2 * _product(out) * k if k else None


def _product(values):
    result = 1
    for value in values:
        result *= value
    return result


def job(config, precision, steps, threads="bilm"):
    import numpy as np
    import tensorflow.compat.v1 as tf
    tf.disable_eager_execution()
    from bilm.training.graph import build_training_graph, feed, session_config

    options = options_of(config)
    with tf.Graph().as_default() as graph:
        ops = build_training_graph(options, 1, precision=precision)
        fetch = [ops["train_op"], ops["train_loss"]]
        session = session_config(1)
        if threads == "default":  # the straightforward session: every operation on all the cores
            session.intra_op_parallelism_threads = 0
        with tf.Session(config=session) as sess:
            sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
            batches = synthetic_batches(options)
            for _ in range(2):
                sess.run(fetch, feed(ops["models"], next(batches)))
            times = []
            for _ in range(steps):
                batch = feed(ops["models"], next(batches))
                start = time.perf_counter()
                sess.run(fetch, batch)
                times.append(time.perf_counter() - start)
            metadata = tf.RunMetadata()
            sess.run(fetch, feed(ops["models"], next(batches)),
                     options=tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE), run_metadata=metadata)
    by_type, flops, product_time, unknown = collections.Counter(), 0, 0, 0
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            seconds = (node.op_end_rel_micros - node.op_start_rel_micros) / 1e6
            kind = node.timeline_label.split(" = ")[-1].split("(")[0].strip() if " = " in node.timeline_label \
                else node.node_name
            by_type[kind] += seconds
            if any(p in kind for p in PRODUCTS):
                product_time += seconds
                try:
                    count = product_flops(graph, node)
                except (KeyError, ValueError, IndexError):
                    count = None
                if count:
                    flops += count
                else:  # the convolutions' gradients (and any shape not known)
                    unknown += seconds
    step = statistics.median(times)
    tokens = options["batch_size"] * options["unroll_steps"]
    return {"config": config, "precision": precision, "step_s": step, "tokens_per_s": tokens / step,
            "op_time_s": sum(by_type.values()), "by_type": by_type.most_common(10), "product_time_s": product_time,
            "product_gflop": flops / 1e9, "uncounted_product_s": unknown}


def ceiling(n=4096, repeats=10):
    """The machine's float32 rate (GFLOP/s) on an n x n product, TensorFlow's default threads (every core):
    the best of ``repeats`` after a warm-up."""
    import tensorflow.compat.v1 as tf
    tf.disable_eager_execution()
    with tf.Graph().as_default():
        a = tf.Variable(tf.random.normal([n, n]))
        product = tf.reduce_sum(tf.matmul(a, a))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(product)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                sess.run(product)
                best = min(best, time.perf_counter() - start)
            return {"gflops": 2 * n ** 3 / best / 1e9}


def run_child(spec, env):
    """The job's result dict, or None (the failure printed)."""
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, capture_output=True,
                         text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        print(f"{spec}: failed\n{out.stderr[-2000:]}")
        return None
    return json.loads(lines[-1][7:])


def threads_section(config, steps, repeat, env):
    """bilm's training session (the directions side by side, each operation on cores // 2 threads)
    against TensorFlow's default threads (every operation on all the cores), float32, alternating."""
    times = {"default": [], "bilm": []}
    for _ in range(repeat):
        for mode in times:
            result = run_child([config, "float32", steps, mode], env)
            if result:
                times[mode].append(result["step_s"])
    if not all(times.values()):
        return
    ratios = [d / b for d, b in zip(times["default"], times["bilm"])]
    print(f"### {config}, float32: threads per operation ({repeat} alternating runs, median step)\n")
    print("| session | step ms | all runs (ms) |\n|---|---|---|")
    for mode, label in (("default", "TensorFlow's defaults (every operation on all the cores)"),
                        ("bilm", "bilm's (the directions side by side: cores // 2 threads per operation)")):
        print(f"| {label} | {1000 * statistics.median(times[mode]):,.0f} | "
              f"{', '.join(f'{1000 * t:,.0f}' for t in times[mode])} |")
    print(f"\nbilm's / defaults' speed: {statistics.median(ratios):.2f}x (per run: "
          f"{', '.join(f'{r:.2f}x' for r in ratios)})\n", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="reference,elmo")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of the threads comparison")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print("RESULT " + json.dumps(ceiling() if spec == ["ceiling"] else job(*spec)), flush=True)
        return
    from vs_original import native_bfloat16
    precisions = ["float32"] + (["bfloat16"] if native_bfloat16() else [])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    print(f"load average at start: {os.getloadavg()[0]:.2f}; precisions: {', '.join(precisions)}\n")
    machine_rate = run_child(["ceiling"], env)["gflops"]
    for config in args.configs.split(","):
        threads_section(config, args.steps, args.repeat, env)
        for precision in precisions:
            r = run_child([config, precision, args.steps], env)
            if r is None:
                continue
            rate = r["product_gflop"] / max(r["product_time_s"] - r["uncounted_product_s"], 1e-9)
            print(f"### {config}, {precision}: step {r['step_s'] * 1000:,.0f} ms, {r['tokens_per_s']:,.0f} tokens/s\n")
            print(f"Products and convolutions: {100 * r['product_time_s'] / r['op_time_s']:.0f}% of the operations' "
                  f"time; the products and forward convolutions do {r['product_gflop']:.1f} GFLOP per step at "
                  f"{rate:.0f} GFLOP/s (their arithmetic over their summed time; the convolutions' gradients, "
                  f"{100 * r['uncounted_product_s'] / r['op_time_s']:.0f}% of the time, not counted), against a "
                  f"4096 x 4096 float32 product's {machine_rate:.0f} GFLOP/s here (every core). Over the whole step: "
                  f"{r['product_gflop'] / r['step_s']:.0f} GFLOP/s, "
                  f"{100 * r['product_gflop'] / r['step_s'] / machine_rate:.0f}% of that rate.\n")
            print("| operation type | share of operation time |\n|---|---|")
            for kind, seconds in r["by_type"]:
                print(f"| {kind} | {100 * seconds / r['op_time_s']:.1f}% |")
            print(flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
