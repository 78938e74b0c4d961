"""Synthetic queries as a Ray job: ``ray job submit --working-dir . -- python jobs/generate_queries.py --api ollama
--url http://HOST:11434 --model NAME --data-format parquet --data-path passages.parquet --out DIR``.

A thin entry point over ``raysparse generate-queries`` (same flags, same code); inside ``ray job submit`` RAY_ADDRESS
is set, so the request actors run on the cluster it was submitted to (they must reach the model server's URL).
``--help`` lists the options.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate-queries", *sys.argv[1:]]))
