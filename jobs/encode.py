"""Encoding as a job: ``python jobs/encode.py --model DIR|model.pt|model.onnx "한국어 검색 모델"``.

A thin entry point over ``raysparse encode`` (same flags, same code): prints the top weighted terms of each text with
any exported model format. ``--help`` lists the options.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["encode", *sys.argv[1:]]))
