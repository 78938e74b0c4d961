"""Time-aware term weights as a job: ``python jobs/time_weights.py --corpus DIR --out DIR [--config F]``.

A thin entry point over ``raysparse time-weights`` (same flags, same code). ``--help`` lists the options.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["time-weights", *sys.argv[1:]]))
