"""Thin helpers around ``ray.init`` shared by every stage.

Auth trap (measured): a local ``ray.init()`` writes ~/.ray/auth_token, after which ``ray start`` enables token auth
and ``ray job submit`` fails with "Missing authentication token". We default RAY_AUTH_MODE to ``disabled`` for
every process we start unless the user set it, so local runs, ``ray start --head`` and job submission agree.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_AUTH_MODE = "disabled"


def ensure_auth_mode() -> str:
    """Make RAY_AUTH_MODE explicit (and inherited by child processes); returns the mode in force."""
    return os.environ.setdefault("RAY_AUTH_MODE", DEFAULT_AUTH_MODE)


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs) -> None:
    """Connect to ``address`` (or RAY_ADDRESS / a new local instance) unless Ray is already initialised.

    Inside ``ray job submit`` RAY_ADDRESS is set by Ray, so jobs join the cluster they were submitted to.
    """
    import ray

    ensure_auth_mode()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    init_kwargs = {"ignore_reinit_error": True, "log_to_driver": True, **kwargs}
    if address:
        ray.init(address=address, **init_kwargs)
    elif num_cpus is not None:
        # A fresh local instance with that many CPUs ("local" never attaches to a running `ray start` cluster).
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **init_kwargs)
    else:
        # Attach to a cluster started on this machine with `ray start --head`, else start a local one.
        ray.init(**init_kwargs)


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


PLACEMENT_WAIT_ENV = "RAYSPARSE_PLACEMENT_WAIT_S"  # seconds to wait for an autoscaler to add a matching node


def _nodes_with(resources: Mapping[str, float]) -> list[dict[str, Any]]:
    """Alive nodes that can host one worker asking for ``resources`` (every key, at least the amount)."""
    import ray

    return [
        n
        for n in ray.nodes()
        if n.get("Alive") and all(n.get("Resources", {}).get(k, 0.0) >= v for k, v in resources.items())
    ]


def check_placement(
    resources: Mapping[str, float], key: str, wait_s: float | None = None
) -> list[dict[str, Any]]:
    """The alive nodes that satisfy ``resources`` (custom Ray resources per worker); raise if there are none.

    Ray queues an actor or Train worker whose resources no node has forever (Ray Data and Ray Train only log
    warnings), so an impossible placement is checked up front. On an autoscaling cluster whose worker groups
    start at zero nodes (cluster.yaml, deploy/kuberay), a matching node appears only once work asks for it: there
    ``wait_s`` (default ``$RAYSPARSE_PLACEMENT_WAIT_S``, else 0) seconds are granted, during which the request is
    passed to the autoscaler (``request_resources``). ``key`` is the config key named in the error.
    """
    import ray

    if not resources:
        return [n for n in ray.nodes() if n.get("Alive")]
    nodes = _nodes_with(resources)
    limit = float(os.environ.get(PLACEMENT_WAIT_ENV, 0) or 0) if wait_s is None else wait_s
    if not nodes and limit > 0:
        from ray.autoscaler.sdk import request_resources

        log.info(
            "%s=%s: no node offers these yet; asking the autoscaler, waiting up to %.0f s",
            key,
            resources,
            limit,
        )
        request_resources(bundles=[dict(resources)])
        deadline = time.monotonic() + limit
        while not nodes and time.monotonic() < deadline:
            time.sleep(5.0)
            nodes = _nodes_with(resources)
        request_resources(bundles=[])  # the actors / workers hold the node from here on
    if not nodes:
        totals = ray.cluster_resources()
        have = {k: totals.get(k, 0.0) for k in resources}
        raise ValueError(
            f"{key}={dict(resources)}: no alive Ray node offers these resources per worker (cluster totals: "
            f"{have}); start nodes with them (`ray start --resources='{json.dumps(dict(resources))}'`, "
            f"cluster.yaml resources, KubeRay rayStartParams), set {PLACEMENT_WAIT_ENV} to wait for an autoscaler "
            f"to add one, or change {key}"
        )
    return nodes
