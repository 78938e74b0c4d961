"""Thin helpers around ``ray.init`` shared by every stage.

Auth trap (measured): a local ``ray.init()`` writes ~/.ray/auth_token, after which ``ray start`` enables token auth
and ``ray job submit`` fails with "Missing authentication token". We default RAY_AUTH_MODE to ``disabled`` for
every process we start unless the user set it, so local runs, ``ray start --head`` and job submission agree.
"""

from __future__ import annotations

import os

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
