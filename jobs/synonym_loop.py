"""The synonym closed loop as a Ray job: discover -> add to dictionary -> augment -> retrain -> evaluate both arms.

``ray job submit --working-dir . -- python jobs/synonym_loop.py --config benchmarks/synonyms/loop.yaml --out DIR
--dev DEV_DIR ... --glossary TSV ... --set data.path=... --set augment.parallel_text=[...]``

A thin entry point over ``raysparse synonyms loop`` (same flags, same code); ``--help`` lists the options and
benchmarks/synonyms/run.sh is a complete example.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["synonyms", "loop", *sys.argv[1:]]))
