#!/usr/bin/env python
"""The original bin/run_test.py: same flags; see `bilm test --help`."""
import sys

from bilm.cli import main

if __name__ == "__main__":
    sys.exit(main(["test"] + sys.argv[1:]))
