#!/usr/bin/env python
"""The original bin/train_elmo.py: same flags; see `bilm train --help`.

Without --train_prefix and --vocab_file it trains, as the original did, on the 1 Billion Word
Benchmark with the published vocabulary: `bilm download lm1b` lays them out (--train_prefix lm1b
--vocab_file lm1b).
"""
import sys

from bilm.cli import main


def with_paper_data(argv):
    """``argv`` with ``--train_prefix lm1b`` and ``--vocab_file lm1b`` added where not given."""
    given = {arg.split("=")[0].replace("-", "_") for arg in argv if arg.startswith("--")}
    return argv + [item for flag in ("train_prefix", "vocab_file") if f"__{flag}" not in given
                   for item in (f"--{flag}", "lm1b")]


if __name__ == "__main__":
    sys.exit(main(["train"] + with_paper_data(sys.argv[1:])))
