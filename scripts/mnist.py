"""Thin entry point: `python scripts/mnist.py [options]` is `eqagent mnist [options]`."""

import sys

from eqagent.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["mnist", *sys.argv[1:]]))
