"""Mining as a Ray job: ``ray job submit --working-dir . -- python jobs/mine.py --beir DIR --out DIR [--config F]``.

A thin entry point over ``raysparse mine`` (same flags, same code); inside ``ray job submit`` RAY_ADDRESS is set, so
the job mines on the cluster it was submitted to. ``--help`` lists the options.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["mine", *sys.argv[1:]]))
