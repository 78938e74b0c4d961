"""Make ``import raysparse`` work for ``python jobs/X.py`` from a source checkout (e.g. ``ray job submit --working-dir .``)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import raysparse  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT))
