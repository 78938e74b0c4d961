"""Evaluation as a Ray job: ``ray job submit --working-dir . -- python jobs/evaluate.py --model DIR --beir DIR
--out DIR``. All options: ``--help`` (same as ``raysparse evaluate``)."""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
