"""Bringing results back as a job: ``python jobs/pull.py LOCATION --to DIR``.

A thin entry point over ``raysparse pull`` (same flags, same code): copies a model or run folder from
``ray.storage_path`` (a path, ``file://``, ``s3://`` or ``gs://``) to a local directory. ``--help`` lists the options.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["pull", *sys.argv[1:]]))
