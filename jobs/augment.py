"""Cross-lingual augmentation as a Ray job: ``ray job submit --working-dir . -- python jobs/augment.py --triples
mined/ --out augmented/ --shared-glossaries``. All options: ``--help`` (same as ``raysparse augment``)."""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["augment", *sys.argv[1:]]))
