"""Index a corpus into OpenSearch as a Ray job: ``ray job submit --working-dir . -- python jobs/index.py --url
https://search:9200 --index ko --model outputs/default/model --beir data/beir``. All options: ``--help`` (same as
``raysparse index``)."""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["index", *sys.argv[1:]]))
