"""How far the deterministic state modes are from the original's stateful output.

    python benchmarks/state_modes.py [--dataset FILE] [--sentences 500] [model flags]

For each sentence of the dataset, the reference is the original's behaviour: one
sentence at a time in file order with the LSTM states carried from line to line. The
script reports, per layer, the mean cosine similarity (over tokens) between that
reference and: the `zero` mode, the `warm` mode, and the stateful run over the same
sentences in another (shuffled) order - the variation the original itself shows.
Default model: the shipped one; default data: held-out sentences of its corpus
(benchmarks/data/heldout_sample.txt, public domain).
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bilm.cli import add_model_arguments, resolve_model_arguments  # noqa: E402
from bilm.precompute import ElmoEmbedder  # noqa: E402

SAMPLE = Path(__file__).resolve().parent / "data" / "heldout_sample.txt"


def cosines(a, b):
    """Per layer, mean over tokens of cos(a, b); a, b: lists of (L, n, D)."""
    a, b = np.concatenate(a, axis=1), np.concatenate(b, axis=1)  # (L, N, D)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return (num / np.maximum(den, 1e-12)).mean(axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(SAMPLE))
    parser.add_argument("--sentences", type=int, default=500)
    add_model_arguments(parser)
    args = resolve_model_arguments(parser, parser.parse_args())
    with open(args.dataset, encoding="utf-8") as fin:
        sentences = [line.split() for line in fin if line.split()][: args.sentences]

    def run(mode, order):
        with ElmoEmbedder(args.options, args.weights, args.vocab, state_mode=mode) as embedder:
            out = embedder.embed_sentences([sentences[i] for i in order])
        result = [None] * len(sentences)
        for i, array in zip(order, out):
            result[i] = array
        return result

    in_order = list(range(len(sentences)))
    shuffled = list(np.random.default_rng(0).permutation(len(sentences)))
    reference = run("stateful", in_order)
    rows = [("stateful, shuffled order (the original's own variation)", run("stateful", shuffled)),
            ("zero", run("zero", in_order)), ("warm", run("warm", in_order))]
    n_tokens = sum(map(len, sentences))
    print(f"{len(sentences)} sentences, {n_tokens} tokens of {args.dataset}; reference: stateful, file order\n")
    n_layers = reference[0].shape[0]
    print("| mode | " + " | ".join(f"layer {k}" for k in range(n_layers)) + " |")
    print("|---|" + "---|" * n_layers)
    for name, outputs in rows:
        print(f"| {name} | " + " | ".join(f"{c:.4f}" for c in cosines(reference, outputs)) + " |")


if __name__ == "__main__":
    main()
