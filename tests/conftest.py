"""Shared fixtures: the real data under ../shared/data and a real local Ray instance."""

from __future__ import annotations

import os
import uuid
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


def parallel_pairs(shared: Path) -> list[tuple[str, str]]:
    """(Korean, English) sentence pairs: the korean-english-park news dev set, then Tatoeba."""
    news = shared / "bilingual" / "news-parallel-dev"
    ko = (news / "korean-english-park.dev.ko").read_text(encoding="utf-8").splitlines()
    en = (news / "korean-english-park.dev.en").read_text(encoding="utf-8").splitlines()
    pairs = list(zip(ko, en, strict=True))
    for line in (shared / "bilingual" / "tatoeba" / "kor.txt").read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        pairs.append((cols[1], cols[0]))
    return pairs


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


# ------------------------------------------------------------------------------------------ OpenSearch
# The server comes from $RAYSPARSE_OPENSEARCH_URL (.ci/run exports it); when unset, the session fixture starts one
# with scripts/opensearch.sh on a dedicated port and stops it at the end (only if this session started it). Under
# CI=true a server that cannot start fails the tests instead of skipping them.
OPENSEARCH_TEST_PORT = 9251


@pytest.fixture(scope="session")
def os_url():
    """URL of a real OpenSearch server (see the comment above)."""
    from opensearch_node import opensearch_node

    with opensearch_node(
        OPENSEARCH_TEST_PORT, url=os.environ.get("RAYSPARSE_OPENSEARCH_URL"), timeout=900
    ) as url:
        yield url


@pytest.fixture(scope="session")
def client(os_url):
    from raysparse.opensearch import make_client

    return make_client(url=os_url)


@pytest.fixture
def index_name(client):
    name = f"raysparse-test-{uuid.uuid4().hex[:8]}"
    yield name
    client.indices.delete(index=name, ignore_unavailable=True)
