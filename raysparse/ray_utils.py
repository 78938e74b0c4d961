"""Thin helpers around ``ray.init`` shared by every stage.

Network defaults: a Ray instance that a command starts for itself (no RAY_ADDRESS / ray.address and no cluster
running here) listens on 127.0.0.1 only: its GCS, raylet, workers and agents accept remote code by design, so they are
not put on every interface of the machine. To serve other machines, start the cluster with ``ray start --head`` (or
cluster.yaml / KubeRay) and turn Ray's token authentication on there (docs/operations.md, "Ray authentication").

Authentication: RAY_AUTH_MODE is left as the user set it (Ray 2.60's default for a new local ``ray.init`` is token
authentication, with the token in ~/.ray/auth_token). Set it the same way for every process that talks to one cluster
(``ray start``, ``ray job submit``, the job itself); the test suite sets ``disabled`` for its private loopback
instances only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Ray treats the node IP as "localhost only" when this is 0 (its switch for laptops): the node's address is then
# 127.0.0.1 and its gRPC servers bind to loopback (measured: tests/test_network_defaults.py).
_RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """While a new local Ray starts: its node address is 127.0.0.1 (inherited by the GCS, raylet and agents)."""
    import ray._private.ray_constants as ray_constants

    saved_env, saved_flag = os.environ.get(_RAY_LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_RAY_LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_RAY_LOOPBACK_ENV, None)
        else:
            os.environ[_RAY_LOOPBACK_ENV] = saved_env


def _cluster_running_here() -> bool:
    """Whether ``ray.init()`` would attach to a cluster started on this machine (``ray start --head``)."""
    try:
        from ray._private.services import find_bootstrap_address

        # the address the last `ray start` on this machine recorded: what a bare ray.init() would join
        return bool(find_bootstrap_address(None))
    except Exception:  # private API: when it moves, assume a cluster may be there and do not interfere
        return True


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs) -> None:
    """Connect to ``address`` (or RAY_ADDRESS / a new local instance) unless Ray is already initialised.

    Inside ``ray job submit`` RAY_ADDRESS is set by Ray, so jobs join the cluster they were submitted to. A new local
    instance listens on 127.0.0.1 only.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    init_kwargs = {"ignore_reinit_error": True, "log_to_driver": True, **kwargs}
    if address and address != "local":
        ray.init(address=address, **init_kwargs)
    elif address == "local" or num_cpus is not None or not _cluster_running_here():
        # A fresh local instance ("local" never attaches to a running `ray start` cluster).
        if num_cpus is not None:
            init_kwargs.update(num_cpus=num_cpus, include_dashboard=False)
        with _loopback_only():
            ray.init(address="local", **init_kwargs)
    else:
        # Attach to the cluster started on this machine with `ray start --head`.
        ray.init(**init_kwargs)


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


def nodes_cpus(nodes: list[dict[str, Any]]) -> float:
    """CPUs of ``nodes`` (as :func:`check_placement` returns them), or 1.0 when they offer none (a 0-CPU head):
    what a pool sized for those nodes divides among its actors."""
    return sum(float(n.get("Resources", {}).get("CPU", 0.0)) for n in nodes) or 1.0


def placement_args(resources: Mapping[str, float] | None) -> dict[str, Any]:
    """Ray remote arguments that place a task or actor on the nodes offering ``resources`` (``mining.resources``,
    ``{cpu_pool: 1}``); nothing when there are none. Every CPU stage passes them: a task asking for CPUs alone can
    make an autoscaler launch any node type with CPUs (a GPU node, on cluster.yaml)."""
    return {"resources": dict(resources)} if resources else {}


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
