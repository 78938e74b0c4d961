"""``raysparse.evaluate``: the evaluation stage's public API (implemented in :mod:`raysparse.evaluation`)."""

from __future__ import annotations

from raysparse.evaluation import *  # noqa: F403
from raysparse.evaluation import __all__  # noqa: F401
