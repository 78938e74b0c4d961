"""Sweeps on a cluster: ``ray job submit --working-dir . -- python jobs/tune.py --triples ... --dev-beir ... --out ...``.

Same options as ``raysparse tune`` (``--help``).
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
