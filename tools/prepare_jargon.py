#!/usr/bin/env python3
"""A different-domain corpus for fine-tuning: the Jargon File (hackers' slang, 1975-2003), public domain.

Debian ships it as ``dict-jargon`` (4.4.7-3.1; ``/usr/share/doc/dict-jargon/copyright``:
"The Jargon File is in the public domain", ``License: public-domain``)::

    apt-get install dict-jargon          # or: apt-get download dict-jargon && dpkg-deb -x ...

The script reads ``jargon.dict.dz`` (gzip), keeps the prose of every entry (headwords,
pronunciations and the dictionary header dropped; ``{cross references}`` kept as their
words), splits and tokenizes it exactly as ``tools/prepare_corpus.py`` does the default
model's corpus, and writes::

    OUTDIR/train.txt      one tokenized sentence per line
    OUTDIR/heldout.txt    every 10th paragraph's sentences

Usage: ``python tools/prepare_jargon.py OUTDIR [--dict /usr/share/dictd/jargon.dict.dz]``
"""
import argparse
import gzip
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare_corpus import keep_sentence, normalize_text, split_sentences, tokenize  # noqa: E402

DEFAULT_DICT = "/usr/share/dictd/jargon.dict.dz"
HELDOUT_EVERY = 10


def paragraphs(text):
    """The prose paragraphs of the dictionary: indented blocks, in order."""
    body = text.split("\n(TM)\n", 1)[-1]  # after the database header
    block = []
    for line in body.splitlines() + [""]:
        if line.startswith("    ") and line.strip():
            block.append(line.strip())
        elif block:
            yield normalize_text(re.sub(r"[{}]", "", " ".join(block)))
            block = []


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir")
    parser.add_argument("--dict", default=DEFAULT_DICT, help=f"jargon.dict.dz (default {DEFAULT_DICT})")
    args = parser.parse_args()
    with gzip.open(args.dict, "rt", encoding="utf-8") as fin:
        text = fin.read()
    os.makedirs(args.outdir, exist_ok=True)
    counts = {"train": [0, 0], "heldout": [0, 0]}
    with open(os.path.join(args.outdir, "train.txt"), "w", encoding="utf-8") as train, \
            open(os.path.join(args.outdir, "heldout.txt"), "w", encoding="utf-8") as heldout:
        for k, paragraph in enumerate(paragraphs(text)):
            split, out = ("heldout", heldout) if k % HELDOUT_EVERY == 0 else ("train", train)
            for sentence in split_sentences(paragraph):
                tokens = tokenize(sentence)
                if keep_sentence(tokens):
                    out.write(" ".join(tokens) + "\n")
                    counts[split][0] += 1
                    counts[split][1] += len(tokens)
    for split, (n_sentences, n_tokens) in counts.items():
        print(f"{split}: {n_sentences} sentences, {n_tokens} tokens")


if __name__ == "__main__":
    main()
