"""Thin entry point: `python scripts/run.py [options]` is `eqagent run [options]`."""

import sys

from eqagent.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
