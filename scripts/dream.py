"""Thin entry point: `python scripts/dream.py [options]` is `eqagent dream [options]`."""

import sys

from eqagent.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["dream", *sys.argv[1:]]))
