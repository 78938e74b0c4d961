"""Training as a Ray job: ``ray job submit --working-dir . -- python jobs/train.py --triples mined/ --out runs/train
[--dev-beir DIR] [--config F]``.

A thin entry point over ``raysparse train`` (same flags, same code): DeepSpeed training of the sparse encoder on Ray
Train workers from mined triples, resuming from the latest checkpoint when re-submitted. The whole pipeline (data ->
mining -> augmentation -> training -> evaluation) is ``jobs/pipeline.py``. ``--help`` lists the options.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
