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
from bilm.core.vocabulary import (BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, count_tokens, read_text_lines,  # noqa: E402
                             read_vocabulary_file)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train", nargs="+")
    parser.add_argument("--heldout", required=True)
    parser.add_argument("--vocab", required=True)
    args = parser.parse_args()
    vocab = set(read_vocabulary_file(args.vocab))
    word_counts, n_sentences = count_tokens(args.train)
    counts = Counter()
    for word, count in word_counts.items():
        counts[word if word in vocab else UNK_TOKEN] += count
    counts[EOS_TOKEN] += n_sentences  # the boundary target of each direction
    total = sum(counts.values()) + len(vocab)
    log_prob = {t: math.log((counts[t] + 1) / total) for t in vocab}
    log_prob[BOS_TOKEN] = log_prob[EOS_TOKEN]
    nll, n = 0.0, 0
    for _, line in read_text_lines(args.heldout):
        tokens = [t if t in vocab else UNK_TOKEN for t in line.split()]
        if tokens:
            nll -= sum(log_prob[t] for t in tokens) + log_prob[EOS_TOKEN]
            n += len(tokens) + 1
    print(f"unigram perplexity: {math.exp(nll / n):.3f} over {n} held-out targets per direction")


if __name__ == "__main__":
    main()
