"""Deploy as a job: ``python jobs/deploy.py --url https://search:9200 --bundle OUT/opensearch/NAME-sparse-encoding.zip``.

A thin entry point over ``raysparse deploy`` (same flags, same code): registers and deploys one exported bundle in
OpenSearch ml-commons and prints the model id as the last line. ``--help`` lists the options.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["deploy", *sys.argv[1:]]))
