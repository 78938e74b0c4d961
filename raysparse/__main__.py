"""``python -m raysparse`` is the ``raysparse`` command."""

import sys

from raysparse.cli import main

sys.exit(main())
