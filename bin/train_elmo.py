#!/usr/bin/env python
"""The original bin/train_elmo.py: same flags; see `bilm train --help`."""
import sys

from bilm.cli import main

if __name__ == "__main__":
    sys.exit(main(["train"] + sys.argv[1:]))
