"""Thin entry point: `python scripts/gradcheck.py [options]` is `eqagent gradcheck [options]`."""

import sys

from eqagent.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["gradcheck", *sys.argv[1:]]))
