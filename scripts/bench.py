"""Thin entry point: `python scripts/bench.py NAME [options]` is `eqagent bench NAME [options]`."""

import sys

from eqagent.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
