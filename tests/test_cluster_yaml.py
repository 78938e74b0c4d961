"""cluster.yaml is validated offline against Ray's own ray-schema.json (prepare_config then validate_config)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _prepared(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(cfg)
    validate_config(prepared)
    return prepared


def test_cluster_yaml_validates_against_ray_schema():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    prepared = _prepared(cfg)
    types = prepared["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"}
    # autoscaling bounds and placement resources the jobs rely on
    assert types["gpu_worker"]["min_workers"] == 0 and types["gpu_worker"]["max_workers"] >= 1
    # placement pools (mining.resources / train.resources): each on its own node type only
    assert (
        types["cpu_worker"]["resources"]["cpu_pool"] >= 1
        and "gpu_pool" not in types["cpu_worker"]["resources"]
    )
    assert (
        types["gpu_worker"]["resources"]["gpu_pool"] >= 1
        and "cpu_pool" not in types["gpu_worker"]["resources"]
    )
    assert not {"cpu_pool", "gpu_pool"} & set(types["head"]["resources"])
    # pools start at 0 nodes, so job drivers on the head must be allowed to wait for the autoscaler
    assert any("RAYSPARSE_PLACEMENT_WAIT_S=" in c for c in prepared["head_start_ray_commands"])
    assert prepared["idle_timeout_minutes"] > 0
    assert any("scripts/install.sh" in c for c in prepared["setup_commands"])


def test_schema_rejects_a_broken_cluster_yaml():
    """The validation is real: a misspelled key fails against the schema."""
    import jsonschema

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["available_node_types"]["gpu_worker"]["max_wrokers"] = 4
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        _prepared(cfg)


def test_configs_cluster_yaml_loads_and_uses_the_pools_cluster_yaml_offers():
    """configs/cluster.yaml (the job config the header of cluster.yaml submits) is valid and asks for real pools."""
    from raysparse.config import load_config

    cfg = load_config(ROOT / "configs" / "cluster.yaml")
    types = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]
    assert set(cfg.train.resources) <= set(types["gpu_worker"]["resources"])
    assert set(cfg.mining.resources) <= set(types["cpu_worker"]["resources"])
    assert cfg.train.use_gpu and "configs/cluster.yaml" in (ROOT / "cluster.yaml").read_text()
