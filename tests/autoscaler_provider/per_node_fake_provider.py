"""Ray's fake multi-node provider, with one runtime-env directory per node, as separate machines have.

The fake provider's nodes are raylets on this machine sharing the head's session directory, so they also share its
``runtime_resources/``. A node that joins unpacks a job's ``working_dir`` package with ``overwrite=True`` (its own
URI cache has never seen it): it deletes and re-creates the directory the running workers and the driver use as
their cwd. Their next ``os.getcwd()`` fails (seen as ``FileNotFoundError`` in numba's compiler on a replacement
mining node, in Tune's ``relpath`` and in transformers' import). Real nodes unpack onto their own disks; here every
node gets ``runtime_resources_<node id>`` (``RayParams.runtime_env_dir_name``) so that a join touches nothing else.

The autoscaler loads this class from the harness's config: ``provider: {type: external, module:
per_node_fake_provider.PerNodeRuntimeEnvFakeProvider}`` (this directory on the monitor's ``PYTHONPATH``).
"""

from __future__ import annotations

from typing import Any

import ray._private.parameter as ray_parameter
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

NODE_ID_ENV = "RAY_OVERRIDE_NODE_ID_FOR_TESTING"  # set by the fake provider for every node it starts


class PerNodeRuntimeEnvFakeProvider(FakeMultiNodeProvider):
    def _create_node_with_resources_and_labels(
        self, node_config: dict, tags: dict, count: int, resources: dict, labels: dict
    ) -> None:
        # The parent builds the node's RayParams inline; give them a per-node runtime_env_dir_name for the duration
        # of the call (under the parent's lock, in the autoscaler's own process, where nothing else builds them).
        make_params = ray_parameter.RayParams

        def per_node_params(**kwargs: Any) -> Any:
            node_id = kwargs.get("env_vars", {}).get(NODE_ID_ENV)
            if node_id and "runtime_env_dir_name" not in kwargs:
                kwargs["runtime_env_dir_name"] = f"runtime_resources_{node_id}"
            return make_params(**kwargs)

        ray_parameter.RayParams = per_node_params
        try:
            super()._create_node_with_resources_and_labels(node_config, tags, count, resources, labels)
        finally:
            ray_parameter.RayParams = make_params
