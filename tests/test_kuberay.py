"""deploy/kuberay/*.yaml, checked offline (no Kubernetes here): structure of the ray.io/v1 RayCluster and RayJob,
worker-group resources consistent with cluster.yaml and the placement config, and a RayJob entrypoint that runs
jobs/pipeline.py with options the real CLI parser accepts."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBERAY = ROOT / "deploy" / "kuberay"


def _load(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d is not None]
    assert len(docs) == 1, f"{name}: expected one YAML document, got {len(docs)}"
    return docs[0]


def start_resources(params: dict) -> dict[str, float]:
    """KubeRay's ``rayStartParams.resources`` is a JSON object wrapped in one more pair of quotes."""
    raw = params.get("resources")
    if raw is None:
        return {}
    raw = raw.strip()
    if raw.startswith('"') and raw.endswith('"'):
        raw = raw[1:-1].replace('\\"', '"')
    return {k: float(v) for k, v in json.loads(raw).items()}


def _groups(cluster: dict) -> dict[str, dict]:
    return {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}


def _entrypoint_args(job: dict) -> list[str]:
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:2] == ["python", "jobs/pipeline.py"], args
    return args[2:]


def test_raycluster_structure_and_pools():
    cluster = _load("raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    spec = cluster["spec"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # like cluster.yaml's head: no tasks next to the GCS
    assert head["template"]["spec"]["containers"][0]["image"]
    groups = _groups(cluster)
    assert set(groups) == {"cpu-workers", "gpu-workers"}
    for g in groups.values():
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        for params_value in g["rayStartParams"].values():
            assert isinstance(params_value, str), "rayStartParams values must be strings for KubeRay"
        assert g["template"]["spec"]["containers"]
    cpu, gpu = groups["cpu-workers"], groups["gpu-workers"]
    assert start_resources(cpu["rayStartParams"]) == {"cpu_pool": 16.0}
    assert start_resources(gpu["rayStartParams"]) == {"gpu_pool": 1.0}
    assert gpu["rayStartParams"]["num-gpus"] == "1"
    gpu_limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in cpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    # the pod's CPU limit matches what the raylet advertises (else Ray over-schedules the pod)
    for g in (cpu, gpu):
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert float(limits["cpu"]) == float(g["rayStartParams"]["num-cpus"])


def test_pools_match_cluster_yaml():
    """The same custom resources, per node, as the AWS cluster.yaml (one placement config serves both)."""
    aws = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]
    groups = _groups(_load("raycluster.yaml"))
    assert start_resources(groups["cpu-workers"]["rayStartParams"]) == {
        k: float(v) for k, v in aws["cpu_worker"]["resources"].items()
    }
    assert start_resources(groups["gpu-workers"]["rayStartParams"]) == {
        k: float(v) for k, v in aws["gpu_worker"]["resources"].items()
    }
    assert groups["cpu-workers"]["maxReplicas"] == aws["cpu_worker"]["max_workers"]
    assert groups["gpu-workers"]["maxReplicas"] == aws["gpu_worker"]["max_workers"]


def test_rayjob_runs_the_pipeline_with_a_placement_the_cluster_can_satisfy():
    from raysparse.cli import build_parser, config_from_args

    job = _load("rayjob.yaml")
    cluster = _load("raycluster.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert float(runtime_env["env_vars"]["RAYSPARSE_PLACEMENT_WAIT_S"]) > 0  # worker groups start at 0 pods

    # jobs/pipeline.py is `raysparse run`: its options parse with the real CLI into a config with the placement
    args = build_parser().parse_args(["run", *_entrypoint_args(job)])
    cfg = config_from_args(args)
    assert cfg.train.use_gpu and cfg.train.resources == {"gpu_pool": 1.0}
    assert cfg.mining.resources == {"cpu_pool": 1.0}
    # every requested pool exists on some worker group, with at least the amount one worker needs
    offered = [start_resources(g["rayStartParams"]) for g in cluster["spec"]["workerGroupSpecs"]]
    for wanted in (cfg.train.resources, cfg.mining.resources):
        assert any(all(o.get(k, 0.0) >= v for k, v in wanted.items()) for o in offered), wanted
    # training workers want a GPU each: the gpu_pool group has one per pod, and enough pods for the workers
    gpu = _groups(cluster)["gpu-workers"]
    assert cfg.train.num_workers <= gpu["maxReplicas"] * int(gpu["rayStartParams"]["num-gpus"])


def test_pipeline_job_entry_point_runs_from_a_checkout():
    """``python jobs/pipeline.py`` (what the RayJob runs, from its working dir) is the resumable ``raysparse run``."""
    env = {**os.environ, "PYTHONPATH": ""}
    res = subprocess.run(
        [sys.executable, "jobs/pipeline.py", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("usage: raysparse run") and "--force" in res.stdout


# KubeRay group names are DNS labels (no underscores): the one place the two files name a node type differently
GROUP_TO_NODE_TYPE = {"cpu-workers": "cpu_worker", "gpu-workers": "gpu_worker"}
INSTANCE_GPUS = {"g5.2xlarge": 1}  # the EC2 instance types of cluster.yaml that carry GPUs


def test_kuberay_autoscaler_sees_the_node_types_of_cluster_yaml():
    """raycluster.yaml read the way the KubeRay autoscaler reads it (Ray's own RayCluster -> autoscaling-config
    translation) gives the autoscaler the node types of cluster.yaml: same min/max workers, the same custom
    resources, the CPUs and GPUs of the EC2 instance type, a 0-CPU head, and the same idle timeout, upscaling speed
    and cluster-wide max_workers; both heads hand job drivers the same RAYSPARSE_PLACEMENT_WAIT_S."""
    from autoscaling_harness import INSTANCE_VCPUS, placement_wait_from_cluster_yaml
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    aws = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cr = _load("raycluster.yaml")
    cr["metadata"].setdefault("namespace", "default")  # set by the API server on apply
    k8s = _derive_autoscaling_config_from_ray_cr(cr)

    k8s_types = {k: v for k, v in k8s["available_node_types"].items() if k != k8s["head_node_type"]}
    assert set(GROUP_TO_NODE_TYPE) == set(k8s_types)
    assert set(GROUP_TO_NODE_TYPE.values()) == set(aws["available_node_types"]) - {aws["head_node_type"]}
    for group, node_type in GROUP_TO_NODE_TYPE.items():
        got, want = k8s_types[group], aws["available_node_types"][node_type]
        assert (got["min_workers"], got["max_workers"]) == (want["min_workers"], want["max_workers"]), group
        instance = want["node_config"]["InstanceType"]
        expected = {
            "CPU": INSTANCE_VCPUS[instance],
            **({"GPU": INSTANCE_GPUS[instance]} if instance in INSTANCE_GPUS else {}),
            **want["resources"],
        }
        assert {k: v for k, v in got["resources"].items() if k != "memory"} == expected, group
    head = k8s["available_node_types"][k8s["head_node_type"]]["resources"]
    assert head["CPU"] == aws["available_node_types"][aws["head_node_type"]]["resources"]["CPU"] == 0
    assert k8s["idle_timeout_minutes"] == aws["idle_timeout_minutes"]
    assert k8s["upscaling_speed"] == aws["upscaling_speed"]
    assert k8s["max_workers"] == aws["max_workers"]

    wait = placement_wait_from_cluster_yaml(aws)
    head_env = {
        e["name"]: e.get("value")
        for e in cr["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert head_env["RAYSPARSE_PLACEMENT_WAIT_S"] == wait
    job_env = yaml.safe_load(_load("rayjob.yaml")["spec"]["runtimeEnvYAML"])["env_vars"]
    assert job_env["RAYSPARSE_PLACEMENT_WAIT_S"] == wait
