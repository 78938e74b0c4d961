"""The users' main entry point: ``ray job submit --working-dir . -- python jobs/train.py --config configs/X.yaml``.

With no arguments it runs the main job on the embedded Korean/English sample (configs/default.yaml): mining,
augmentation, DeepSpeed training on Ray Train and evaluation next to BM25. All options: ``--help``.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
