#!/usr/bin/env python
"""The original bin/restart.py: same flags; see `bilm restart --help`."""
import sys

from bilm.cli import main

if __name__ == "__main__":
    sys.exit(main(["restart"] + sys.argv[1:]))
