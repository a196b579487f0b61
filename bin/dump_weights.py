#!/usr/bin/env python
"""The original bin/dump_weights.py: same flags; see `bilm dump-weights --help`."""
import sys

from bilm.cli import main

if __name__ == "__main__":
    sys.exit(main(["dump-weights"] + sys.argv[1:]))
