"""Training throughput (tokens/s) and peak memory on this machine, the issue's reference configuration.

    python benchmarks/train_throughput.py [--steps 60] [--warmup 10]

Bidirectional character model: char CNN filters [[1,32],[2,32],[3,64],[4,128]], embedding 16,
1 highway layer, LSTM dim 512, projection 128, 2 layers, skip connections, batch 32,
unroll 20, 8,001-token vocabulary, 1,024 sampled negatives; synthetic seeded data.
"""
import argparse
import logging
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from bilm.lm_graph import build_training_graph, feed, session_config  # noqa: E402

N_VOCAB = 8001
OPTIONS = {
    "bidirectional": True, "dropout": 0.1, "all_clip_norm_val": 10.0,
    "char_cnn": {"activation": "relu", "embedding": {"dim": 16}, "filters": [[1, 32], [2, 32], [3, 64], [4, 128]],
                 "max_characters_per_token": 50, "n_characters": 261, "n_highway": 1},
    "lstm": {"dim": 512, "projection_dim": 128, "n_layers": 2, "cell_clip": 3, "proj_clip": 3,
             "use_skip_connections": True},
    "batch_size": 32, "unroll_steps": 20, "n_tokens_vocab": N_VOCAB, "n_negative_samples_batch": 1024,
    "n_epochs": 1, "n_train_tokens": 10 ** 9,
}


def synthetic_batch(rng):
    b, t, c = OPTIONS["batch_size"], OPTIONS["unroll_steps"], 50
    batch = {}
    for suffix in ("", "_reverse"):
        chars = np.full((b, t, c), 260, np.int32)
        chars[:, :, 0] = 258
        chars[:, :, 1:8] = rng.integers(97, 123, (b, t, 7))
        chars[:, :, 8] = 259
        batch["tokens_characters" + suffix] = chars
        batch["next_token_id" + suffix] = rng.zipf(1.3, (b, t)).clip(1, N_VOCAB - 1).astype(np.int32)
    return batch


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    batches = [synthetic_batch(rng) for _ in range(8)]
    with tf.Graph().as_default():
        graph = build_training_graph(OPTIONS, 1)
        with tf.Session(config=session_config(1)) as sess:
            sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
            fetch = [graph["train_op"], graph["train_perplexity"]]
            for i in range(args.warmup):
                sess.run(fetch, feed(graph["models"], batches[i % 8]))
            start = time.perf_counter()
            for i in range(args.steps):
                sess.run(fetch, feed(graph["models"], batches[i % 8]))
            elapsed = time.perf_counter() - start
    tokens = args.steps * OPTIONS["batch_size"] * OPTIONS["unroll_steps"]
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(f"| path | tokens/s | peak RSS |\n|---|---|---|\n| bilm train (1 tower, CPU) | {tokens / elapsed:,.0f} | {peak_gb:.2f} GB |")
    print("reference: original bilm-tf ~1,430 tokens/s on this machine type; target >= 1,860")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
