"""Shared fixtures: the real data under ../shared/data and a real local Ray instance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "raysparse" / "torch_extensions"))


def _find_shared_data() -> Path | None:
    env = os.environ.get("RAYSPARSE_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates += [REPO_ROOT.parent / "shared" / "data", REPO_ROOT / "shared" / "data"]
    for c in candidates:
        if (c / "README.md").is_file():
            return c
    return None


SHARED_DATA = _find_shared_data()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $RAYSPARSE_SHARED_DATA). Tests on real data fail loudly, not skip, when it is missing in CI."""
    if SHARED_DATA is None:
        if os.environ.get("CI"):
            pytest.fail("../shared/data is missing: CI must run beside the shared data")
        pytest.skip("../shared/data not found (set RAYSPARSE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def ray_local():
    """A real local Ray instance (2 CPUs, like CI), shared by the tests that need one.

    Tests that need their own cluster (ray.cluster_utils.Cluster, ``ray start --head``) call ``ray.shutdown()``
    first and last; the next test asking for ``ray_local`` then starts a fresh local instance.
    """
    import ray

    if not ray.is_initialized():
        # address="local": always a fresh instance, even when a `ray start --head` cluster runs on this machine.
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            ignore_reinit_error=True,
            log_to_driver=False,
        )
    return ray


@pytest.fixture(scope="session", autouse=True)
def _shutdown_ray_at_end():
    yield
    import sys

    if "ray" in sys.modules:
        sys.modules["ray"].shutdown()
