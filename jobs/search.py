"""Search as a job: ``python jobs/search.py --url https://search:9200 --index ko --model DIR "한국어 검색 모델"``.

A thin entry point over ``raysparse search`` (same flags, same code): queries an OpenSearch index (sparse, BM25 or
hybrid) and shows each hit's matched terms. ``--help`` lists the options.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["search", *sys.argv[1:]]))
