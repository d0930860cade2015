"""Thin entry point: `python scripts/compare.py [options]` is `eqagent compare [options]`."""

import sys

from eqagent.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
