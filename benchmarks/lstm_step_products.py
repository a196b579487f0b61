"""The products of one inference LSTM step, in three layouts: what bounds the dump's steps.

    python benchmarks/lstm_step_products.py [--rows 64,32] [--steps 20] [--repeat 3]

One step of a layer, for both directions side by side (one thread each, as ``bilm``'s
sessions run them on two cores) and the full-size model's shapes (LSTM 4096 projected
to 512): the recurrent product (B, 512) x (512, 16384) and the projection
(B, 4096) x (4096, 512), in float32 and in bfloat16 (result cast to float32), in

- ``batch-major`` (``bilm``'s layout): ``h @ W``, the weights the right operand;
- ``weights-left``: ``W^T @ h^T``, the weights the left operand and the states
  feature-major (4D, B), which a feature-major step would keep from one step to the next;
- ``packed``: ``h @ W`` by the oneDNN product told that its weights are constant, which
  packs them into its blocked layout once instead of at every product (``bilm``'s
  inference in bfloat16: ``bilm.core.network.packs``).

Each measurement is a ``while_loop`` of ``--steps`` steps in one session run (best of 4
runs); the layouts alternate, ``--repeat`` rounds, and each figure is the median.
Prints ms per step, GFLOP/s, each round's ratio and the process's peak RSS.
"""
import argparse
import resource
import statistics
import time

import tensorflow.compat.v1 as tf

from bilm.core import network

P, D = 512, 4096  # projection_dim, lstm.dim of the full-size model
LAYOUTS = ("batch-major", "weights-left", "packed")


def step_loop(layout, rows, dtype, n_steps, seed):
    """A while loop of ``n_steps`` steps of one direction's two products; returns a scalar to fetch."""
    def variable(shape, scale):
        return tf.Variable(tf.cast(tf.random.normal(shape, stddev=scale, seed=seed), dtype))

    left = layout == "weights-left"
    h = variable((P, rows) if left else (rows, P), 1.0)
    kernel_h = variable((4 * D, P) if left else (P, 4 * D), 0.05)
    projection = variable((P, D) if left else (D, P), 0.02)

    def step(t, total):
        x = h + tf.cast(total * 0, dtype)  # each step depends on the one before
        if left:
            gates = tf.cast(tf.matmul(kernel_h, x), tf.float32)  # (4D, B)
            out = tf.cast(tf.matmul(projection, tf.cast(gates[:D], dtype)), tf.float32)  # (P, B)
        else:
            product = network._packed_product if layout == "packed" else tf.matmul
            gates = tf.cast(product(x, kernel_h), tf.float32)  # (B, 4D)
            out = tf.cast(product(tf.cast(gates[:, :D], dtype), projection), tf.float32)  # (B, P)
        return t + 1, total + out[0, 0]

    return tf.while_loop(lambda t, _: t < n_steps, step, (0, tf.zeros([])))[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="64,32", help="batch rows to measure (comma-separated)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tf.disable_eager_execution()
    cases = [(dtype, rows) for dtype in (tf.float32, tf.bfloat16) for rows in map(int, args.rows.split(","))]
    layouts = LAYOUTS if network.packs(tf.bfloat16) else LAYOUTS[:2]  # (where oneDNN packs)
    loops = {(case, layout): [step_loop(layout, case[1], case[0], args.steps, seed) for seed in (0, 1)]
             for case in cases for layout in layouts}
    config = tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=2)
    seconds = {key: [] for key in loops}
    with tf.Session(config=config) as sess:
        sess.run(tf.global_variables_initializer())
        for fetch in loops.values():
            sess.run(fetch)  # warm-up
        for _ in range(args.repeat):
            for key, fetch in loops.items():  # the layouts alternate within each case
                best = float("inf")
                for _ in range(4):
                    start = time.perf_counter()
                    sess.run(fetch)
                    best = min(best, time.perf_counter() - start)
                seconds[key].append(best / args.steps)
    print("| type | rows | layout | ms per step (both directions) | GFLOP/s | runs (ms) |")
    print("|---|---|---|---|---|---|")
    for dtype, rows in cases:
        flop = 2 * 2 * rows * (P * 4 * D + D * P)
        for layout in layouts:
            runs = seconds[(dtype, rows), layout]
            print(f"| {dtype.name} | {rows} | {layout} | {1e3 * statistics.median(runs):.2f} | "
                  f"{flop / statistics.median(runs) / 1e9:.0f} | {', '.join(f'{1e3 * s:.2f}' for s in runs)} |")
        for layout in layouts[1:]:
            ratios = [a / b for a, b in zip(seconds[(dtype, rows), LAYOUTS[0]], seconds[(dtype, rows), layout])]
            print(f"| {dtype.name} | {rows} | {layout} speed-up | {statistics.median(ratios):.2f}x | | "
                  f"{', '.join(f'{r:.2f}x' for r in ratios)} |")
    print(f"\nPeak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2:.2f} GB")


if __name__ == "__main__":
    main()
