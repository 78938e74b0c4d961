"""Synonym discovery as a job (plain PyTorch, no cluster needed).

``python jobs/synonyms.py discover --model DIR --out DIR --parallel FILE ... [--glossary TSV]``

A thin entry point over ``raysparse synonyms`` (actions ``discover`` and ``evaluate``; same flags, same code).
``--help`` lists the options.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["synonyms", *sys.argv[1:]]))
