"""Export entry point: ``python jobs/export.py --model DIR --out DIR --format onnx,torchscript,opensearch``.

Same options as ``raysparse export`` (see ``--help``); works from a source checkout without installing raysparse.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
