"""The search demo as a job: ``python jobs/demo.py --url http://search:9200 --index ko --model DIR --port 8080``.

A thin entry point over ``raysparse demo`` (same flags, same code): serves the page that shows BM25, sparse and hybrid
results side by side with the query's expanded terms. ``--help`` lists the options.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
