"""Corpus building as a Ray job: ``ray job submit --working-dir . -- python jobs/corpus.py wikipedia DUMP... --out DIR``.

A thin entry point over ``raysparse corpus`` (same sub-commands ``wikipedia`` and ``dated``, same flags, same code);
inside ``ray job submit`` RAY_ADDRESS is set, so the dump shards are parsed on the cluster the job was submitted to.
``--help`` lists the options.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["corpus", *sys.argv[1:]]))
