"""Held-out perplexity of a unigram model, the baseline quoted next to a biLM's perplexity.

    python tools/unigram_baseline.py TRAIN_FILES... --heldout HELDOUT --vocab VOCAB

Counts come from the training files over the biLM's vocabulary (other tokens count as
<UNK>), add-one smoothed. Each held-out sentence of n tokens has n + 1 targets per
direction, as in the biLM's evaluation: the tokens and </S> forward, the tokens and <S>
backward; both boundary tokens get the sentence frequency. The reported perplexity is
exp of the mean negative log-likelihood per target.
"""
import argparse
import math
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bilm.vocabulary import read_vocabulary_file  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train", nargs="+")
    parser.add_argument("--heldout", required=True)
    parser.add_argument("--vocab", required=True)
    args = parser.parse_args()
    vocab = set(read_vocabulary_file(args.vocab))

    def sentences(path):
        with open(path, encoding="utf-8") as fin:
            for line in fin:
                tokens = line.split()
                if tokens:
                    yield [t if t in vocab else "<UNK>" for t in tokens]

    counts = Counter()
    for path in args.train:
        for tokens in sentences(path):
            counts.update(tokens)
            counts["</S>"] += 1  # the boundary target of each direction
    total = sum(counts.values()) + len(vocab)
    log_prob = {t: math.log((counts[t] + 1) / total) for t in vocab}
    log_prob["<S>"] = log_prob["</S>"]
    nll, n = 0.0, 0
    for tokens in sentences(args.heldout):
        nll -= sum(log_prob[t] for t in tokens) + log_prob["</S>"]
        n += len(tokens) + 1
    print(f"unigram perplexity: {math.exp(nll / n):.3f} over {n} held-out targets per direction")


if __name__ == "__main__":
    main()
